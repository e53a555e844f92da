"""Field values by meaning and type, honouring constraints by construction.

Every function takes the record's seeded `random.Random`; nothing reads the clock or a
global RNG, so a record is a pure function of (plan, index).
"""

from __future__ import annotations

import bisect
import itertools
import math
import random
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from functools import lru_cache
from typing import Any, Generic, TypeVar

from services.core import regexgen
from services.core.models import FieldConstraint, FieldSpec, FieldType
from services.core.pools import Pools, Product

T = TypeVar("T")

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
DAY = 86400.0
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


def pick(rng: random.Random, seq: Sequence[T]) -> T:
    """`rng.choice` without its per-call overhead (hot path: several calls per record)."""
    return seq[int(rng.random() * len(seq))]


class Weighted(Generic[T]):
    """Values with weights, sampled by one uniform draw and a bisect."""

    __slots__ = ("cum", "total", "values")

    def __init__(self, values: Sequence[T], weights: Sequence[float]):
        self.values = tuple(values)
        self.cum = list(itertools.accumulate(weights))
        self.total = self.cum[-1]

    def __call__(self, rng: random.Random) -> T:
        return self.values[bisect.bisect(self.cum, rng.random() * self.total)]


@lru_cache(maxsize=4096)
def _day(days: int) -> str:
    return (_EPOCH + timedelta(days=days)).strftime("%Y-%m-%dT")


def iso(t: int) -> str:
    """Epoch seconds as `YYYY-MM-DDTHH:MM:SSZ` (UTC), without strftime per call."""
    d, r = divmod(t, 86400)
    h, r = divmod(r, 3600)
    m, sec = divmod(r, 60)
    return f"{_day(d)}{h:02d}:{m:02d}:{sec:02d}Z"


class Ctx:
    """Per-record generation state: the RNG, the time anchor and the value pools."""

    __slots__ = ("anchor", "occasions", "pools", "products", "rng", "year")

    def __init__(self, rng: random.Random, anchor: datetime, pools: Pools):
        self.rng = rng
        self.anchor = int(anchor.timestamp())  # epoch seconds
        self.year = anchor.year
        self.pools = pools
        # What the current records draw from: the whole catalogue, or the occasions and
        # products the request's words selected (set per scenario by the generator).
        self.occasions = pools.occasions
        self.products = pools.all_products

    def pick(self, seq: Sequence[T]) -> T:
        return seq[int(self.rng.random() * len(seq))]

    # ---- identifiers -------------------------------------------------------------
    def code(self, n: int) -> str:
        """n uppercase alphanumerics from one draw (base-36 digits of a random int)."""
        x = self.rng.getrandbits(6 * n)
        out = []
        for _ in range(n):
            x, d = divmod(x, 36)
            out.append(ALNUM[d])
        return "".join(out)

    def ident(self, semantic: str) -> str:
        """`id:CRT` -> CRT-2025-AB12CD3 (yearly kinds), `id:USR` -> USR-AB12CD3."""
        prefix = semantic.split(":", 1)[1]
        if prefix in ("CRT", "ORD", "PAY"):
            return f"{prefix}-{self.year}-{self.code(7)}"
        return f"{prefix}-{self.code(7)}"

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def sku(self, p: Product) -> str:
        """BRAND-CAT-COLOUR-VARIANT, from the attributes its category has (a size only
        where sizes exist: no lipstick in XL)."""
        return f"{p.sku_stem}-{self.pick(p.colors)}-{self.pick(p.variants)}"

    # ---- people and places ---------------------------------------------------------
    def first_name(self) -> str:
        return self.pick(self.pools.first_names)

    def last_name(self) -> str:
        return self.pick(self.pools.last_names)

    def email_for(self, first: str, last: str) -> str:
        """An address derived from the person's name, as real ones mostly are."""
        n = int(self.rng.random() * 98) + 1
        local = self.pick(
            (f"{first}.{last}", f"{first[0]}{last}", f"{first}{last}{n}", f"{first}_{last}")
        )
        local = local.lower().replace(" ", "").replace("'", "")
        return f"{local}@{self.pick(self.pools.email_domains)}"

    def phone(self) -> str:
        x = int(self.rng.random() * 800 * 10000)
        return f"+1-{self.pick(self.pools.area_codes)}-{200 + x // 10000}-{x % 10000:04d}"

    def address(self) -> dict[str, str]:
        city, state, zipcode = self.pick(self.pools.cities)
        return {
            "line1": self.pick(self.pools.streets),
            "city": city,
            "state": state,
            "postal_code": zipcode,
            "country": "US",
        }

    def address_line(self) -> str:
        a = self.address()
        return f"{a['line1']}, {a['city']}, {a['state']} {a['postal_code']}"

    # ---- time ------------------------------------------------------------------
    def past(self, max_days: float = 365.0, min_days: float = 0.0) -> int:
        """Epoch seconds between max_days and min_days before the anchor."""
        lo = int(min_days * DAY)
        return self.anchor - lo - int(self.rng.random() * (int(max_days * DAY) - lo + 1))

    def after(self, t: int, max_hours: float) -> int:
        return t + 60 + int(self.rng.random() * max(1, int(max_hours * 3600) - 60))


def money(x: float) -> float:
    return round(x + 1e-9, 2)


# ---- generic generation -------------------------------------------------------------
def num_range(c: FieldConstraint, lo: float, hi: float) -> tuple[float, float]:
    """The constraint's bounds, defaulting each side; a one-sided bound moves the other."""
    a = c.min if c.min is not None else lo
    b = c.max if c.max is not None else hi
    if a > b:  # only one side was given and it lies beyond the default range
        a, b = (a, a + (hi - lo)) if c.max is None else (b - (hi - lo), b)
    return a, b


def int_in(ctx: Ctx, c: FieldConstraint, lo: int, hi: int) -> int:
    a, b = num_range(c, lo, hi)
    return ctx.rng.randint(math.ceil(a), math.floor(b))


def float_in(ctx: Ctx, c: FieldConstraint, lo: float, hi: float, cents: bool = False) -> float:
    """A float in the bounds; rounding (to cents, to 4 places) never leaves them."""
    a, b = num_range(c, lo, hi)
    if cents:
        ia, ib = math.ceil(a * 100 - 1e-9), math.floor(b * 100 + 1e-9)
        if ia <= ib:
            v = ctx.rng.randint(ia, ib) / 100
            if a <= v <= b:
                return v
    if b - a <= 1e-3:
        return a
    x = ctx.rng.uniform(a, b)
    v = round(x, 4)
    return v if a <= v <= b else min(max(x, a), b)


def fit_length(ctx: Ctx, text: str, c: FieldConstraint) -> str:
    """Trim or extend pool text so it satisfies min_length/max_length."""
    if c.max_length is not None and len(text) > c.max_length:
        text = text[: c.max_length].rstrip() or text[: c.max_length]
    if c.min_length is not None and len(text) < c.min_length:
        parts, n = ([text] if text else []), len(text)
        while n < c.min_length:  # joined once: up to 10,000 characters, word by word
            w = ctx.pick(ctx.pools.words)
            n += len(w) + (1 if parts else 0)
            parts.append(w)
        text = " ".join(parts)
        if c.max_length is not None and len(text) > c.max_length:
            text = text[: c.max_length]
    return text


def text_by_semantic(ctx: Ctx, semantic: str | None, name: str) -> str:
    p = ctx.pools
    match semantic:
        case "first_name":
            return ctx.first_name()
        case "last_name":
            return ctx.last_name()
        case "full_name":
            return f"{ctx.first_name()} {ctx.last_name()}"
        case "city":
            return ctx.pick(p.cities)[0]
        case "state":
            return ctx.pick(p.cities)[1]
        case "postcode":
            return ctx.pick(p.cities)[2]
        case "street_address":
            return ctx.pick(p.streets)
        case "country":
            return "US"
        case "company" | "brand":
            return ctx.pick(p.companies)
        case "uuid":
            return ctx.uuid()
        case "sku":
            occ = ctx.pick(p.occasions)
            return ctx.sku(ctx.pick(occ.products))
        case "product_name":
            return ctx.pick(ctx.pick(p.occasions).products).name
        case "category":
            return ctx.pick(ctx.pick(p.occasions).products).category
        case "title":
            return ctx.pick(p.sentences).rstrip(".")
        case "sentence":
            return ctx.pick(p.sentences)
        case str(s) if s.startswith("id:"):
            return ctx.ident(s)
    return f"{ctx.pick(p.words)}-{ctx.code(6).lower()}"


def gen_field(ctx: Ctx, f: FieldSpec) -> Any:
    """One value for a field; satisfies its (merged) constraint by construction."""
    c = f.constraint
    t = f.type
    if t == FieldType.OBJECT:
        return gen_object(ctx, f.nested_fields)
    if t == FieldType.ARRAY:
        lo, hi = array_bounds(f)
        n = ctx.rng.randint(lo, hi)
        if f.nested_fields:
            return [gen_object(ctx, f.nested_fields) for _ in range(n)]
        return [fit_length(ctx, ctx.pick(ctx.pools.words), c) for _ in range(n)]
    if t == FieldType.ENUM:
        return ctx.pick(c.enum_values)
    if t == FieldType.INTEGER:
        return int_in(ctx, c, 0, 1000)
    if t == FieldType.FLOAT:
        if f.semantic == "money":
            return float_in(ctx, c, 1.0, 500.0, cents=True)
        return float_in(ctx, c, 0.0, 1000.0)
    if t == FieldType.BOOLEAN:
        return ctx.rng.random() < 0.5
    if t == FieldType.DATE:
        return iso(ctx.past(3 * 365))[:10]
    if t == FieldType.DATETIME:
        return iso(ctx.past(365))
    if c.regex is not None:
        return regex_text(ctx, c)
    if t == FieldType.EMAIL:
        text = ctx.email_for(ctx.first_name(), ctx.last_name())
        return text if _len_ok(text, c) else fit_email(ctx, c)
    if t == FieldType.PHONE:
        return fit_phone(ctx, c)
    if t == FieldType.ADDRESS:
        return fit_length(ctx, ctx.address_line(), c)
    if t == FieldType.UUID:
        return ctx.uuid()
    return fit_length(ctx, text_by_semantic(ctx, f.semantic, f.name), c)


def _len_ok(text: str, c: FieldConstraint) -> bool:
    return (c.min_length is None or len(text) >= c.min_length) and (
        c.max_length is None or len(text) <= c.max_length
    )


def fit_email(ctx: Ctx, c: FieldConstraint) -> str:
    """A valid address of an allowed length (the planner refused max_length < 6): the
    local part sized to fit, the domain shorter when only 6 characters are allowed."""
    lo = max(c.min_length or 0, 6)
    hi = max(lo, c.max_length if c.max_length is not None else lo + 10)
    n = ctx.rng.randint(lo, hi)
    domain = "ex.io" if n >= 7 else "x.io"
    local = "".join(ctx.pick("abcdefghijklmnopqrstuvwxyz") for _ in range(n - len(domain) - 1))
    return f"{local}@{domain}"


def fit_phone(ctx: Ctx, c: FieldConstraint) -> str:
    """A phone number of an allowed length: the usual +1-AAA-XXX-XXXX when it fits, else
    digits (after +1 from 8 characters on), which the validator's pattern accepts for
    7..21 characters (the planner refused bounds outside that)."""
    text = ctx.phone()
    if _len_ok(text, c):
        return text
    lo = max(c.min_length or 0, 7)
    hi = min(c.max_length if c.max_length is not None else 21, 21)
    n = ctx.rng.randint(lo, max(lo, hi))
    head = "+1" if n >= 8 else ""
    return head + "".join(str(int(ctx.rng.random() * 10)) for _ in range(n - len(head)))


def regex_text(ctx: Ctx, c: FieldConstraint) -> str:
    """A regex match within the length bounds, by construction: free when every match
    the generator makes fits, else of a length drawn from those that fit."""
    assert c.regex is not None
    p = regexgen.compile_pattern(c.regex)
    lengths = regexgen.allowed_lengths(c.regex, c.min_length, c.max_length)
    if lengths == (-1,):
        return p.generate(ctx.rng)
    if not lengths:  # the planner refuses these; a direct caller gets a clear error
        raise ValueError(f"regex {c.regex!r} cannot match within the length bounds")
    return p.generate_len(ctx.rng, ctx.pick(lengths))


def array_bounds(f: FieldSpec) -> tuple[int, int]:
    c = f.constraint
    lo = int(c.min) if c.min is not None else f.min_items
    hi = int(c.max) if c.max is not None else max(f.max_items, lo)
    return (lo if c.min is not None else min(lo, hi)), hi


def gen_object(ctx: Ctx, fields: list[FieldSpec]) -> dict[str, Any]:
    return {f.name: gen_field(ctx, f) for f in fields}


def utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
