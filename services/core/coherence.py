"""Coherence scores in [0, 1]: do a record's parts make sense together?

Cart: category affinity 0.3, reasonable quantities 0.2, math 0.3, chronology 0.2.
Order: affinity 0.25, quantities 0.15, math 0.3, chronology 0.3.
Review: rating agrees with the sentiment of its title and body.
Works on any path's output (traditional, LLM, RAG), so it only reads the record.
"""

from __future__ import annotations

import itertools
import re
from collections import Counter
from collections.abc import Mapping
from datetime import datetime
from functools import lru_cache
from typing import Any

from services.core.pools import get_pools

TOL = 0.011


@lru_cache(maxsize=1)
def _keyword_index() -> tuple[tuple[str, tuple[str, ...], frozenset[str]], ...]:
    return tuple(
        (o.name, o.keywords, frozenset(p.name.lower() for p in o.products))
        for o in get_pools().occasions
    )


@lru_cache(maxsize=8192)
def _occasions(name: str, category: str) -> frozenset[str]:
    text = f"{name} {category}"
    return frozenset(
        occ for occ, kws, names in _keyword_index() if name in names or any(k in text for k in kws)
    )


def occasions_of(item: dict[str, Any]) -> frozenset[str]:
    """Occasions an item belongs to, by catalogue name or keywords (cached per name)."""
    return _occasions(str(item.get("name", "")).lower(), str(item.get("category", "")).lower())


def affinity(items: list[dict[str, Any]]) -> float:
    """Share of items that belong to the cart's dominant shopping occasion."""
    if len(items) <= 1:
        return 1.0
    tags = [occasions_of(it) for it in items]
    counts = Counter(o for t in tags for o in t)
    if not counts:
        return 0.0
    best = counts.most_common(1)[0][1]
    return best / len(items)


def num(v: Any) -> float | None:
    return float(v) if isinstance(v, int | float) and not isinstance(v, bool) else None


def items_of(rec: Mapping[str, Any]) -> list[dict[str, Any]]:
    items = rec.get("items")
    return [i for i in items if isinstance(i, dict)] if isinstance(items, list) else []


def quantities(items: list[dict[str, Any]]) -> float:
    if not items:
        return 0.0
    ok = sum(1 for i in items if (q := num(i.get("quantity"))) is not None and 1 <= q <= 10)
    return ok / len(items)


def _close(a: float | None, b: float | None) -> float:
    return 1.0 if a is not None and b is not None and abs(a - b) <= TOL else 0.0


def line_sum(items: list[dict[str, Any]]) -> float | None:
    total = 0.0
    for i in items:
        q, p = num(i.get("quantity")), num(i.get("price"))
        if q is None or p is None:
            return None
        total += q * p
    return total


def _time(v: Any) -> datetime | None:
    if not isinstance(v, str):
        return None
    try:
        return datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None


def chronology(rec: dict[str, Any], keys: tuple[str, ...]) -> float:
    """1 when the present timestamps are in order; 0 on disorder or an unreadable one."""
    times = []
    for k in keys:
        if rec.get(k) is None:
            continue
        t = _time(rec[k])
        if t is None:
            return 0.0
        times.append(t)
    if not times:
        return 0.0
    return 1.0 if all(a <= b for a, b in itertools.pairwise(times)) else 0.0


def score_cart(rec: dict[str, Any]) -> float:
    items = items_of(rec)
    sub, tax, total = (num(rec.get(k)) for k in ("subtotal", "tax", "total"))
    math_ok = 0.5 * _close(line_sum(items), sub) + 0.5 * _close(
        None if sub is None or tax is None else sub + tax, total
    )
    return (
        0.3 * affinity(items)
        + 0.2 * quantities(items)
        + 0.3 * math_ok
        + 0.2 * chronology(rec, ("created_at", "updated_at"))
    )


def score_order(rec: dict[str, Any]) -> float:
    items = items_of(rec)
    sub, tax, total = (num(rec.get(k)) for k in ("subtotal", "tax", "total"))
    ship, disc = (num(rec.get(k)) or 0.0 for k in ("shipping", "discount"))
    expected = None if sub is None or tax is None else sub + tax + ship - disc
    checks = [_close(line_sum(items), sub), _close(expected, total)]
    pay = rec.get("payment")
    if isinstance(pay, dict) and "amount" in pay:
        checks.append(_close(num(pay.get("amount")), total))
    math_ok = sum(checks) / len(checks)
    return (
        0.25 * affinity(items)
        + 0.15 * quantities(items)
        + 0.3 * math_ok
        + 0.3 * chronology(rec, ("created_at", "paid_at", "shipped_at", "delivered_at"))
    )


POSITIVE = (
    "love",
    "great",
    "excellent",
    "perfect",
    "recommend",
    "happy",
    "fantastic",
    "amazing",
    "comfortable",
    "well made",
    "exceeded",
    "awesome",
    "best",
)
NEGATIVE = (
    "disappoint",
    "poor",
    "terrible",
    "broke",
    "returned",
    "not worth",
    "would not",
    "awful",
    "damaged",
    "cheap",
    "waste",
    "worst",
    "never again",
    "bad",
)
NEUTRAL = ("okay", "ok ", "decent", "average", "mixed", "nothing special", "fine", "just ok")
_WS = re.compile(r"\s+")


def sentiment(text: str) -> str:
    t = _WS.sub(" ", text.lower()) + " "
    pos = sum(t.count(w) for w in POSITIVE)
    neg = sum(t.count(w) for w in NEGATIVE)
    neu = sum(t.count(w) for w in NEUTRAL)
    if neu and neu >= max(pos, neg):
        return "neutral"
    if pos > neg:
        return "positive"
    if neg > pos:
        return "negative"
    return "neutral"


def score_review(rec: dict[str, Any]) -> float:
    rating = num(rec.get("rating"))
    if rating is None:
        return 0.0
    expected = "positive" if rating >= 4 else "neutral" if rating == 3 else "negative"
    got = sentiment(f"{rec.get('title', '')}. {rec.get('body', '')}")
    if got == expected:
        return 1.0
    return 0.0 if {got, expected} == {"positive", "negative"} else 0.5


CARD_METHODS = frozenset({"credit_card", "debit_card", "macys_card"})
_LAST4 = re.compile(r"^\d{4}$")


def score_payment(rec: dict[str, Any]) -> float:
    """Method and card fields agree (a card number only for card methods), the amount is
    positive, the timestamps are in order."""
    method, last4 = rec.get("method"), rec.get("card_last_four")
    if method in CARD_METHODS:
        card = 1.0 if isinstance(last4, str) and _LAST4.match(last4) else 0.0
    else:
        card = 1.0 if last4 in (None, "") else 0.0
    amount = num(rec.get("amount"))
    return (
        0.4 * card
        + 0.3 * (1.0 if amount is not None and amount > 0 else 0.0)
        + 0.3 * chronology(rec, ("created_at", "updated_at"))
    )


_NON_ALNUM = re.compile(r"[^a-z0-9]")


def score_user(rec: dict[str, Any]) -> float:
    """The email agrees with the name, the tier is one we know, the dates are in order."""
    first = _NON_ALNUM.sub("", str(rec.get("first_name", "")).lower())
    last = _NON_ALNUM.sub("", str(rec.get("last_name", "")).lower())
    local = _NON_ALNUM.sub("", str(rec.get("email", "")).split("@")[0].lower())
    named = bool(last) and last in local and (bool(first) and first[0] == local[0])
    tier = rec.get("loyalty_tier")
    return (
        0.5 * (1.0 if named else 0.0)
        + 0.2 * (1.0 if tier in (None, "Bronze", "Silver", "Gold", "Platinum") else 0.0)
        + 0.3 * chronology(rec, ("created_at", "updated_at"))
    )


@lru_cache(maxsize=1)
def _category_ranges() -> dict[str, tuple[float, float]]:
    out: dict[str, tuple[float, float]] = {}
    for o in get_pools().occasions:
        for p in o.products:
            lo, hi = out.get(p.category, (float("inf"), 0.0))
            out[p.category] = (min(lo, p.low or p.price), max(hi, p.price))
    return out


def score_product(rec: dict[str, Any]) -> float:
    """The price is within its category's range in the catalogue (an unknown category
    cannot be judged and counts as in range), stock is not negative."""
    price, stock = num(rec.get("price")), num(rec.get("stock"))
    rng = _category_ranges().get(str(rec.get("category", "")))
    if price is None or price <= 0:
        priced = 0.0
    elif rng is None:
        priced = 1.0
    else:
        priced = 1.0 if rng[0] - TOL <= price <= rng[1] + TOL else 0.0
    return 0.6 * priced + 0.4 * (1.0 if stock is None or stock >= 0 else 0.0)


SCORERS = {
    "cart": score_cart,
    "order": score_order,
    "review": score_review,
    "payment": score_payment,
    "user": score_user,
    "product": score_product,
}
EDGE_CASE_KEY = "_edge_case_type"


def not_applicable(entity: str, records: list[dict[str, Any]]) -> str | None:
    """Why no score means nothing here, or None when records can be scored."""
    if entity not in SCORERS:
        return f"no coherence rules for {entity!r} (a custom schema)"
    if records and all(EDGE_CASE_KEY in r for r in records):
        return "every record is an edge case, incoherent on purpose"
    return None


def score_records(entity: str, records: list[dict[str, Any]]) -> float | None:
    """Mean score over the records that are meant to be coherent (edge cases are not),
    or None for entities without coherence rules."""
    scorer = SCORERS.get(entity)
    scored = [r for r in records if EDGE_CASE_KEY not in r] if scorer else []
    if scorer is None or not scored:
        return None
    return sum(scorer(r) for r in scored) / len(scored)
