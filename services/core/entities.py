"""Coherent records for the predefined entities.

Carts, orders and payments come from one shopping occasion; money adds up in integer
cents (subtotal = sum(qty x price), total = subtotal + tax [+ shipping - discount]);
timestamps are chronological; review ratings agree with their text. Request constraints
on quantities, prices, item counts and totals are met by construction: `plan_basket`
solves for a basket inside the allowed subtotal window instead of retrying.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

from services.core.errors import ConstraintUnsatisfiable
from services.core.models import (
    DEFAULT_ANCHOR,
    EntitySchema,
    FieldConstraint,
    FieldError,
    FieldSpec,
)
from services.core.pools import Occasion, Product, get_pools
from services.core.values import Ctx, Weighted, array_bounds, int_in, iso, num_range

TAX_RATES = (0.0, 0.0625, 0.07, 0.0725, 0.08, 0.08875)
SHIPPING_CENTS = (0, 795, 1995)
DISCOUNTS = (0.0, 0.10, 0.15)
CARD_METHODS = frozenset({"credit_card", "debit_card", "macys_card"})
INF = float("inf")


def lookup(fields: list[FieldSpec], path: str) -> FieldSpec | None:
    head, _, rest = path.partition(".")
    f = next((x for x in fields if x.name == head), None)
    if f is None or not rest:
        return f
    return lookup(f.nested_fields, rest)


def _c(schema: EntitySchema, path: str) -> FieldConstraint:
    f = lookup(schema.fields, path)
    return f.constraint if f else FieldConstraint()


def weighted(options: Mapping[str, float], allowed: list[str]) -> Weighted[str]:
    """Realistic weights restricted to the values a constraint allows."""
    names = [v for v in allowed if v in options] or list(allowed)
    return Weighted(names, [options.get(v, 1.0) for v in names])


N_LINES = Weighted((1, 2, 3, 4, 5), (15, 30, 30, 15, 10))
N_UNITS = Weighted((1, 2, 3), (75, 20, 5))


# ---- baskets ---------------------------------------------------------------------------
@dataclass(frozen=True)
class BasketRules:
    """Bounds for one entity's line items, in cents, read once per plan."""

    qty: tuple[int, int]
    price: tuple[int, float]
    lines: tuple[int, int]
    subtotal: tuple[float, float]  # from the subtotal field itself
    total: tuple[float, float]  # constraint on the field that holds the grand total

    @classmethod
    def of(cls, schema: EntitySchema, total_path: str) -> BasketRules:
        items = lookup(schema.fields, "items")
        q = num_range(_c(schema, "items.quantity"), 1, 3)
        pc = _c(schema, "items.price")
        pmin = cents_up(max(pc.min if pc.min is not None else 0.01, 0.01))
        pmax = cents_down(pc.max) if pc.max is not None else INF
        lines = array_bounds(items) if items else (1, 5)
        s = _c(schema, "subtotal")
        t = _c(schema, total_path)
        return cls(
            qty=(max(1, math.ceil(q[0])), math.floor(q[1])),
            price=(pmin, pmax),
            lines=(max(1, lines[0]), lines[1]),
            subtotal=(
                0 if s.min is None else cents_up(s.min),
                INF if s.max is None else cents_down(s.max),
            ),
            total=(
                0 if t.min is None else cents_up(t.min),
                INF if t.max is None else cents_down(t.max),
            ),
        )

    def window(self, k: float, add: int) -> tuple[int, int]:
        """Subtotal cents allowed when total = subtotal * k + add (one-cent margin)."""
        lo = max(self.subtotal[0], (self.total[0] - add) / k)
        hi = min(self.subtotal[1], (self.total[1] - add) / k)
        if self.total != (0, INF):
            lo, hi = lo + 1, hi - 1
        return math.ceil(lo), (math.floor(hi) if hi != INF else 10**12)

    def feasible(self, k: float, add: int) -> bool:
        lo, hi = self.window(k, add)
        min_s = self.lines[0] * self.qty[0] * self.price[0]
        max_s = self.lines[1] * self.qty[1] * self.price[1]
        return (
            lo <= hi
            and min_s <= hi
            and max_s >= lo
            and self.qty[0] <= self.qty[1]
            and self.price[0] <= self.price[1]  # a whole cent within the price bounds
            and self.lines[0] <= self.lines[1]
        )


def cents_up(v: float) -> int:
    """The fewest whole cents worth at least v (v = 1.625 gives 163, not round's 162)."""
    c = math.ceil(v * 100 - 1e-6)
    while c / 100 < v:
        c += 1
    return c


def cents_down(v: float) -> int:
    """The most whole cents worth at most v."""
    c = math.floor(v * 100 + 1e-6)
    while c / 100 > v:
        c -= 1
    return c


def check_basket(
    schema: EntitySchema, total_path: str, ks: list[tuple[float, int]]
) -> list[FieldError]:
    rules = BasketRules.of(schema, total_path)
    if all(rules.feasible(k, add) for k, add in ks):
        return []
    return [
        FieldError(
            path="constraints.field_constraints",
            message=(
                "no basket satisfies these constraints together: items count "
                f"{rules.lines}, quantity {rules.qty}, price cents {rules.price}, "
                f"subtotal cents {rules.subtotal}, {total_path} cents {rules.total}"
            ),
        )
    ]


def plan_basket(ctx: Ctx, occ: Occasion, rules: BasketRules, k: float, add: int) -> list[list[Any]]:
    """Lines [product, qty, price_cents] from one occasion with subtotal in the window."""
    rng = ctx.rng
    lo, hi = rules.window(k, add)
    qlo, qhi = rules.qty
    plo, phi = rules.price
    nlo, nhi = rules.lines
    natural_n = N_LINES(rng)
    n = min(max(natural_n, nlo), nhi)
    prods = distinct(ctx, occ.products, n)
    lines: list[list[Any]] = []
    for p in prods:
        q = min(max(N_UNITS(rng), qlo), qhi)
        price = int(min(max(p.cents(rng.random()), plo), phi))
        lines.append([p, q, price])

    def s() -> int:
        return sum(q * pr for _, q, pr in lines)

    if lo <= s() <= hi:  # the usual case: the natural basket already fits
        return lines
    if s() > hi:  # too dear: fewest units, fewest lines, then cheaper prices
        for ln in lines:
            ln[1] = qlo
        lines.sort(key=lambda ln: ln[2])
        while s() > hi and len(lines) > nlo:
            lines.pop()
        if s() > hi:
            f = hi / s()
            for ln in lines:
                ln[2] = max(plo, math.floor(ln[2] * f))
    if s() < lo:  # too cheap: more units (cheapest lines first), more lines, dearer prices
        for ln in sorted(lines, key=lambda ln: ln[2]):
            gap = lo - s()
            if gap <= 0:
                break
            ln[1] += min(qhi - ln[1], math.ceil(gap / ln[2]))
        while s() < lo and len(lines) < nhi:
            p = ctx.pick(occ.products)
            price = int(min(max(p.cents(rng.random()), plo), phi))
            lines.append([p, min(qhi, max(qlo, math.ceil((lo - s()) / price))), price])
        if s() < lo:
            f = lo / s()
            for ln in lines:
                ln[2] = int(min(phi, math.ceil(ln[2] * f)))
    if s() > hi:  # whole units may overshoot by less than one unit price
        _nudge(lines, s() - hi, plo, down=True)
    if s() < lo:
        _nudge(lines, lo - s(), phi, down=False)
    if not lo <= s() <= hi and qlo == 1:
        _exact(lines, s(), lo, hi, plo, phi)
    if not lo <= s() <= hi:
        raise ConstraintUnsatisfiable(
            "constraints too narrow for a basket of whole quantities and cent prices"
        )
    return lines


def _exact(lines: list[list[Any]], total: int, lo: int, hi: int, plo: int, phi: float) -> None:
    """Whole units can step over a narrow window: one line at quantity 1 takes the price
    that lands the subtotal in it, when its price bounds allow."""
    for ln in reversed(lines):
        others = total - ln[1] * ln[2]
        a, b = max(plo, lo - others), min(phi, hi - others)
        if a <= b:
            ln[1], ln[2] = 1, int(min(max(ln[2], a), b))
            return


def _nudge(lines: list[list[Any]], gap: int, limit: float, down: bool) -> None:
    """Close a remaining gap of `gap` cents by moving unit prices toward `limit`."""
    for ln in sorted(lines, key=lambda x: -x[1]):
        if gap <= 0:
            return
        room = (ln[2] - limit) if down else (limit - ln[2])
        step = min(math.ceil(gap / ln[1]), int(min(room, 10**12)))
        if step > 0:
            ln[2] += -step if down else step
            gap -= step * ln[1]


def distinct(ctx: Ctx, items: tuple[Product, ...], n: int) -> list[Product]:
    """n items, distinct while the catalogue lasts (partial Fisher-Yates on our RNG)."""
    pool = list(items)
    k = len(pool)
    out = []
    for i in range(min(n, k)):
        j = i + int(ctx.rng.random() * (k - i))
        pool[i], pool[j] = pool[j], pool[i]
        out.append(pool[i])
    while len(out) < n:
        out.append(ctx.pick(items))
    return out


def item_dicts(ctx: Ctx, lines: list[list[Any]]) -> list[dict[str, Any]]:
    return [
        {
            "sku": ctx.sku(p),
            "name": p.name,
            "quantity": q,
            "price": pr / 100,
            "category": p.category,
        }
        for p, q, pr in lines
    ]


def _subtotal(lines: list[list[Any]]) -> int:
    return sum(q * pr for _, q, pr in lines)


# ---- composers -------------------------------------------------------------------------
class Composer:
    """Builds one record of an entity; the plan prepares one per request."""

    # Numeric and item-count fields whose request min/max the composer meets; the others
    # are derived (tax from the subtotal...) and the planner refuses bounds on them.
    honours: frozenset[str] = frozenset()
    # Paths `reconcile` re-derives from the others once items changed (money of baskets):
    # whoever edits a record's items leaves these to `reconcile`.
    derived: frozenset[str] = frozenset()

    def __init__(self, schema: EntitySchema):
        self.schema = schema
        self.enum = {p: _c(schema, p).enum_values for p in _enum_paths(schema.fields)}
        self.currency = weighted({"USD": 9, "CAD": 1}, self.enum.get("currency", ["USD"]))

    def __call__(self, ctx: Ctx) -> dict[str, Any]:
        raise NotImplementedError

    def check(self, touched: Iterable[str] = ()) -> list[FieldError]:
        """Reasons the request's constraints (on `touched` paths) cannot all be met."""
        return []

    def check_bounds(self, paths: Iterable[str]) -> list[FieldError]:
        """Request min/max on fields this composer derives cannot be met: refused."""
        out = []
        for path in paths:
            c = _c(self.schema, path)
            if (c.min is not None or c.max is not None) and path not in self.honours:
                out.append(
                    FieldError(
                        path=f"constraints.field_constraints[{path}]",
                        message=f"{self.schema.name} derives {path} from other fields: "
                        "min/max are supported on "
                        + (", ".join(sorted(self.honours)) or "none of its fields"),
                    )
                )
        return out

    def reconcile(self, rec: dict[str, Any], overridden: Iterable[str]) -> None:
        """Re-derive what depends on overridden fields (baskets override this)."""


MONEY_FIELDS = frozenset({"subtotal", "tax", "shipping", "discount", "total"})
# What reconcile_basket recomputes (shipping and discount amounts are kept).
BASKET_DERIVED = frozenset({"subtotal", "tax", "total", "payment.amount"})


def reconcile_basket(rec: dict[str, Any], overridden: Iterable[str]) -> None:
    """After an override of line items, money adds up again (unless money was overridden).

    The tax and discount rates are kept (a kept discount amount could exceed a smaller
    subtotal), the shipping amount too; an order's payment follows.
    """
    paths = set(overridden)
    if not any(p.startswith("items") for p in paths) or paths & MONEY_FIELDS:
        return
    items = rec.get("items") or []
    old_sub = round(rec["subtotal"] * 100)
    rate = rec["tax"] * 100 / old_sub if old_sub else 0.0
    off = rec.get("discount", 0) * 100 / old_sub if old_sub else 0.0
    sub = sum(round(i["quantity"] * round(i["price"] * 100)) for i in items)
    tax, disc = round(sub * rate), round(sub * off)
    extra = round(rec.get("shipping", 0) * 100) - disc
    rec["subtotal"], rec["tax"], rec["total"] = sub / 100, tax / 100, (sub + tax + extra) / 100
    if "discount" in rec:
        rec["discount"] = disc / 100
    if isinstance(rec.get("payment"), dict) and "payment.amount" not in paths:
        rec["payment"]["amount"] = rec["total"]


def _enum_paths(fields: list[FieldSpec], prefix: str = "") -> list[str]:
    out = []
    for f in fields:
        if f.constraint.enum_values:
            out.append(prefix + f.name)
        out += _enum_paths(f.nested_fields, f"{prefix}{f.name}.")
    return out


class BasketComposer(Composer):
    """Entities built around a taxed basket from one occasion: cart, order, payment."""

    total_path = "total"  # the field holding the grand total, whose bounds shape the basket
    honours = frozenset({"items", "items.quantity", "items.price", "subtotal", "total"})

    def __init__(self, schema: EntitySchema):
        super().__init__(schema)
        self.rules = BasketRules.of(schema, self.total_path)

    def check(self, touched: Iterable[str] = ()) -> list[FieldError]:
        ks = [(1 + r, 0) for r in TAX_RATES]
        if errs := check_basket(self.schema, self.total_path, ks):
            return errs
        if self.honours.isdisjoint(touched):
            return []  # the registry's own bounds: met by every basket
        return self.probe(ks)

    def probe(self, ks: list[tuple[float, int]], seeds: int = 4) -> list[FieldError]:
        """Bounds that pass the range check can still be too narrow for whole quantities
        and cent prices (3 units cannot cost exactly $64.00): build baskets for every
        occasion and tax rate up front, so a request fails here and not mid-stream."""
        pools = get_pools()
        for seed in range(seeds):
            ctx = Ctx(random.Random(seed), DEFAULT_ANCHOR, pools)
            for occ in pools.occasions:
                for k, add in ks:
                    try:
                        plan_basket(ctx, occ, self.rules, k, add)
                    except ConstraintUnsatisfiable as exc:
                        return [FieldError(path="constraints.field_constraints", message=str(exc))]
        return []

    def basket(self, ctx: Ctx, add: int = 0) -> tuple[Occasion, float, list[list[Any]], int, int]:
        """(occasion, tax rate, lines, subtotal cents, tax cents)."""
        occ = ctx.pick(ctx.occasions)
        rate = ctx.pick(TAX_RATES)
        lines = plan_basket(ctx, occ, self.rules, 1 + rate, add)
        sub = _subtotal(lines)
        return occ, rate, lines, sub, round(sub * rate)


class CartComposer(BasketComposer):
    reconcile = staticmethod(reconcile_basket)
    derived = BASKET_DERIVED

    def __call__(self, ctx: Ctx) -> dict[str, Any]:
        rng = ctx.rng
        occ, _, lines, sub, tax = self.basket(ctx)
        created = ctx.past(90, min_days=3)
        return {
            "_shopping_occasion": occ.name,
            "cart_id": ctx.ident("id:CRT"),
            "customer_id": ctx.ident("id:USR"),
            "items": item_dicts(ctx, lines),
            "subtotal": sub / 100,
            "tax": tax / 100,
            "total": (sub + tax) / 100,
            "currency": self.currency(rng),
            "created_at": iso(created),
            "updated_at": iso(ctx.after(created, 48)),
        }


ORDER_STATUS = {
    "pending": 8,
    "paid": 15,
    "shipped": 20,
    "delivered": 45,
    "cancelled": 7,
    "returned": 5,
}
METHOD_WEIGHTS = {
    "credit_card": 40,
    "debit_card": 15,
    "paypal": 12,
    "apple_pay": 12,
    "google_pay": 6,
    "macys_card": 10,
    "gift_card": 5,
}


class OrderComposer(BasketComposer):
    reconcile = staticmethod(reconcile_basket)
    derived = BASKET_DERIVED

    def __init__(self, schema: EntitySchema):
        super().__init__(schema)
        # A constrained total fixes shipping and discount at 0 so the window is exact.
        self.free_extras = self.rules.total == (0, INF)
        self.status = weighted(ORDER_STATUS, self.enum["status"])
        self.method = weighted(METHOD_WEIGHTS, self.enum["payment.method"])
        self.discount = Weighted(DISCOUNTS, (70, 20, 10))

    def __call__(self, ctx: Ctx) -> dict[str, Any]:
        rng = ctx.rng
        ship = ctx.pick(SHIPPING_CENTS) if self.free_extras else 0
        disc_rate = self.discount(rng) if self.free_extras else 0.0
        occ, _, lines, sub, tax = self.basket(ctx, ship)
        disc = round(sub * disc_rate)
        if sub >= 7500 and ship == 795:
            ship = 0  # free standard shipping over $75
        total = sub + tax + ship - disc
        status = self.status(rng)
        method = self.method(rng)
        created = ctx.past(180, min_days=12)
        paid = ctx.after(created, 1) if status not in ("pending",) else None
        shipped = (
            ctx.after(paid, 72) if paid and status in ("shipped", "delivered", "returned") else None
        )
        delivered = ctx.after(shipped, 7 * 24) if shipped and status != "shipped" else None
        home = ctx.address()
        billing = home if rng.random() < 0.8 else ctx.address()
        return {
            "_shopping_occasion": occ.name,
            "order_id": ctx.ident("id:ORD"),
            "customer_id": ctx.ident("id:USR"),
            "items": item_dicts(ctx, lines),
            "shipping_address": {**home, "country": self._country("shipping_address")},
            "billing_address": {**billing, "country": self._country("billing_address")},
            "payment": {
                "method": method,
                "amount": total / 100,
                "card_last_four": f"{rng.randint(0, 9999):04d}" if method in CARD_METHODS else None,
            },
            "status": status,
            "subtotal": sub / 100,
            "tax": tax / 100,
            "shipping": ship / 100,
            "discount": disc / 100,
            "total": total / 100,
            "currency": self.currency(rng),
            "created_at": iso(created),
            "paid_at": iso(paid) if paid else None,
            "shipped_at": iso(shipped) if shipped else None,
            "delivered_at": iso(delivered) if delivered else None,
        }

    def _country(self, address: str) -> str:
        allowed = self.enum[f"{address}.country"]
        return "US" if "US" in allowed else allowed[0]


class PaymentComposer(BasketComposer):
    total_path = "amount"
    honours = frozenset({"amount"})

    def __init__(self, schema: EntitySchema):
        super().__init__(schema)
        self.method = weighted(METHOD_WEIGHTS, self.enum["method"])
        self.status = weighted(
            {"captured": 60, "authorized": 15, "pending": 8, "declined": 10, "refunded": 7},
            self.enum["status"],
        )

    def __call__(self, ctx: Ctx) -> dict[str, Any]:
        rng = ctx.rng
        _, _, _, sub, tax = self.basket(ctx)
        amount = sub + tax
        method = self.method(rng)
        status = self.status(rng)
        created = ctx.past(180, min_days=2)
        return {
            "payment_id": ctx.ident("id:PAY"),
            "order_id": ctx.ident("id:ORD"),
            "method": method,
            "amount": amount / 100,
            "currency": self.currency(rng),
            "status": status,
            "card_last_four": f"{rng.randint(0, 9999):04d}" if method in CARD_METHODS else None,
            "created_at": iso(created),
            "updated_at": iso(ctx.after(created, 24)) if status != "pending" else None,
        }


FEATURES = (
    "Designed for everyday comfort and durability.",
    "A best seller this season.",
    "Easy care and built to last.",
    "Thoughtful details at a great value.",
    "Customers love the fit and finish.",
    "Made with quality materials.",
)


def cents_within(x: float, lo: float, hi: float) -> float:
    """x in whole cents inside [lo, hi]; x itself when no cent value lies there."""
    for c, f in ((x, round), (lo, math.ceil), (hi, math.floor)):
        if math.isfinite(c) and lo <= (v := f(c * 100) / 100) <= hi:
            return v
    return x


class ProductComposer(Composer):
    honours = frozenset({"price", "stock"})

    def __call__(self, ctx: Ctx) -> dict[str, Any]:
        p = ctx.pick(ctx.products)
        pc = _c(self.schema, "price")
        lo, hi = num_range(pc, 0.01, INF)
        price = cents_within(min(max(p.cents(ctx.rng.random()) / 100, lo), hi), lo, hi)
        return {
            "product_id": ctx.ident("id:PRD"),
            "sku": ctx.sku(p),
            "name": p.name,
            "description": f"{p.name} by {p.brand}. {ctx.pick(FEATURES)}",
            "price": price,
            "category": p.category,
            "brand": p.brand,
            "stock": int_in(ctx, _c(self.schema, "stock"), 0, 400),
            "created_at": iso(ctx.past(2 * 365, min_days=30)),
        }


# Review text: ratings 4-5 read positive, 3 mixed, 1-2 negative (the scorer's lexicon
# agrees). Generic lines suit any product; each kind of product adds its own (fit only
# where there are sizes, sound only where there is sound...).
Texts = tuple[tuple[str, ...], tuple[str, ...]]  # (titles, bodies)
REVIEW_TEXT: dict[str, Texts] = {
    "positive": (
        ("Love it", "Excellent quality", "Great purchase", "Highly recommend", "Really happy"),
        (
            "I love the {p}, it exceeded my expectations.",
            "Great quality for the price.",
            "Excellent value, fast shipping too.",
            "Fantastic {c} pick, the quality is excellent.",
        ),
    ),
    "neutral": (
        ("It's okay", "Decent but not perfect", "Average", "Mixed feelings"),
        (
            "The {p} is okay for the price.",
            "Decent quality, nothing special.",
            "Some things are good, some are average.",
            "Average {c} item, fine for everyday use.",
        ),
    ),
    "negative": (
        ("Disappointed", "Poor quality", "Would not recommend", "Returned it", "Not worth it"),
        (
            "Poor quality and cheap materials.",
            "Not worth the money, would not buy again.",
            "Arrived damaged and customer service was awful.",
        ),
    ),
}
REVIEW_TEXT_BY_KIND: dict[str, dict[str, Texts]] = {
    "wearable": {
        "positive": (
            ("Perfect fit", "So comfortable"),
            ("Comfortable and well made, I would buy it again.", "True to size and a perfect fit."),
        ),
        "neutral": (("Fit is just okay",), ("It does the job but the fit is just okay.",)),
        "negative": (
            ("Terrible fit",),
            (
                "Terrible fit, I returned it.",
                "The {p} fell apart after a few wears, very disappointed.",
            ),
        ),
    },
    "beauty": {
        "positive": (
            ("My new favorite", "Beautiful results"),
            ("The shade is perfect and it lasts all day.", "Great texture, my skin loves it."),
        ),
        "neutral": (("Just okay",), ("The {p} is fine but the results are average.",)),
        "negative": (
            ("Broke me out",),
            ("Irritated my skin, I returned it.", "The scent was awful and it did not last."),
        ),
    },
    "tech": {
        "positive": (
            ("Amazing sound", "Works perfectly"),
            (
                "Setup was easy and the battery life is excellent.",
                "Works perfectly and sounds great.",
            ),
        ),
        "neutral": (("Decent device",), ("The {p} works, but the battery life is just average.",)),
        "negative": (
            ("Stopped working",),
            (
                "The {p} broke after a week, very disappointed.",
                "Terrible battery life, returned it.",
            ),
        ),
    },
    "home": {
        "positive": (
            ("Beautiful and sturdy", "Use it every day"),
            ("Sturdy, easy to clean and looks great.", "My family loves it, highly recommend."),
        ),
        "neutral": (("Does the job",), ("The {p} is fine, nothing special, cleans up okay.",)),
        "negative": (
            ("Cheaply made",),
            ("The {p} broke after a week, very disappointed.", "Arrived chipped and looked cheap."),
        ),
    },
}
KIND_OF_CATEGORY = {
    **dict.fromkeys(
        (
            "Apparel",
            "Activewear",
            "Outerwear",
            "Swimwear",
            "Sleepwear",
            "Baby Apparel",
            "Kids Apparel",
            "Footwear",
        ),
        "wearable",
    ),
    **dict.fromkeys(("Beauty", "Skincare", "Fragrance", "Haircare"), "beauty"),
    **dict.fromkeys(("Electronics", "Gaming"), "tech"),
    **dict.fromkeys(
        ("Home", "Bedding", "Bath", "Kitchen", "Appliances", "Tableware", "Outdoor"), "home"
    ),
}


@lru_cache(maxsize=256)
def review_text(category: str, sentiment: str) -> Texts:
    """Titles and bodies that suit this kind of product and this sentiment."""
    titles, bodies = REVIEW_TEXT[sentiment]
    kind = REVIEW_TEXT_BY_KIND.get(KIND_OF_CATEGORY.get(category, ""), {})
    more_t, more_b = kind.get(sentiment, ((), ()))
    return (*titles, *more_t), (*bodies, *more_b)


OPENERS = {
    "positive": "Really happy with the {p}.",
    "neutral": "The {p} is okay.",
    "negative": "The {p} was a disappointment.",
}
RATING_WEIGHTS = {1: 8, 2: 7, 3: 12, 4: 30, 5: 43}


def sentiment_of_rating(rating: int) -> str:
    return "positive" if rating >= 4 else "neutral" if rating == 3 else "negative"


class ReviewComposer(Composer):
    honours = frozenset({"rating", "helpful_votes"})

    def __init__(self, schema: EntitySchema):
        super().__init__(schema)
        lo, hi = num_range(_c(schema, "rating"), 1, 5)
        self.ratings = [r for r in range(math.ceil(lo), math.floor(hi) + 1)]
        self.rating = Weighted(self.ratings, [RATING_WEIGHTS.get(r, 1) for r in self.ratings])

    def __call__(self, ctx: Ctx) -> dict[str, Any]:
        rng = ctx.rng
        p = ctx.pick(ctx.products)
        rating = self.rating(rng)
        titles, bodies = review_text(p.category, sentiment_of_rating(rating))
        # The first sentence names the product, so a review says what it is about.
        sentences = [OPENERS[sentiment_of_rating(rating)], *rng.sample(bodies, rng.randint(0, 2))]
        body = " ".join(s.format(p=p.name, c=p.category.lower()) for s in sentences)
        return {
            "review_id": ctx.ident("id:REV"),
            "product_id": ctx.ident("id:PRD"),
            "user_id": ctx.ident("id:USR"),
            "rating": rating,
            "title": ctx.pick(titles),
            "body": body,
            "verified_purchase": rng.random() < 0.8,
            "helpful_votes": int_in(
                ctx, _c(self.schema, "helpful_votes"), 0, ctx.pick((3, 10, 40))
            ),
            "created_at": iso(ctx.past(365)),
        }


class UserComposer(Composer):
    honours = frozenset({"addresses"})

    def __init__(self, schema: EntitySchema):
        super().__init__(schema)
        self.tier = weighted(
            {"Bronze": 45, "Silver": 30, "Gold": 18, "Platinum": 7}, self.enum["loyalty_tier"]
        )

    def __call__(self, ctx: Ctx) -> dict[str, Any]:
        rng = ctx.rng
        first, last = ctx.first_name(), ctx.last_name()
        lo, hi = array_bounds(lookup(self.schema.fields, "addresses"))  # type: ignore[arg-type]
        n = rng.randint(lo, min(hi, max(lo, 2)))
        types = self.enum["addresses.type"]
        addrs = [{"type": types[i % len(types)], **ctx.address()} for i in range(n)]
        for a in addrs:
            allowed = self.enum["addresses.country"]
            a["country"] = "US" if "US" in allowed else allowed[0]
        created = ctx.past(3 * 365, min_days=2)
        return {
            "user_id": ctx.ident("id:USR"),
            "email": ctx.email_for(first, last),
            "first_name": first,
            "last_name": last,
            "phone": ctx.phone(),
            "addresses": addrs,
            "loyalty_tier": self.tier(rng),
            "created_at": iso(created),
            "updated_at": iso(ctx.after(created, 24 * 30)),
        }


COMPOSERS: dict[str, Callable[[EntitySchema], Composer]] = {
    "cart": CartComposer,
    "order": OrderComposer,
    "payment": PaymentComposer,
    "product": ProductComposer,
    "review": ReviewComposer,
    "user": UserComposer,
}
