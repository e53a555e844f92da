"""Field values by meaning and type, honouring constraints by construction.

Every function takes the record's seeded `random.Random`; nothing reads the clock or a
global RNG, so a record is a pure function of (plan, index).
"""

from __future__ import annotations

import math
import random
import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from services.core import regexgen
from services.core.models import FieldConstraint, FieldSpec, FieldType
from services.core.pools import COLORS, SIZES, Pools

ALNUM = "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
DAY = 86400.0


class Ctx:
    """Per-record generation state: the RNG, the time anchor and the value pools."""

    __slots__ = ("anchor", "pools", "rng", "year")

    def __init__(self, rng: random.Random, anchor: datetime, pools: Pools):
        self.rng = rng
        self.anchor = anchor
        self.year = anchor.year
        self.pools = pools

    # ---- identifiers -------------------------------------------------------------
    def code(self, n: int) -> str:
        ch = self.rng.choice
        return "".join([ch(ALNUM) for _ in range(n)])

    def ident(self, semantic: str) -> str:
        """`id:CRT` -> CRT-2025-AB12CD3 (yearly kinds), `id:USR` -> USR-AB12CD3."""
        prefix = semantic.split(":", 1)[1]
        if prefix in ("CRT", "ORD", "PAY"):
            return f"{prefix}-{self.year}-{self.code(7)}"
        return f"{prefix}-{self.code(7)}"

    def uuid(self) -> str:
        return str(uuid.UUID(int=self.rng.getrandbits(128), version=4))

    def sku(self, stem: str) -> str:
        return f"{stem}-{self.rng.choice(COLORS)}-{self.rng.choice(SIZES)}"

    # ---- people and places ---------------------------------------------------------
    def first_name(self) -> str:
        return self.rng.choice(self.pools.first_names)

    def last_name(self) -> str:
        return self.rng.choice(self.pools.last_names)

    def email_for(self, first: str, last: str) -> str:
        r = self.rng
        local = r.choice((f"{first}.{last}", f"{first[0]}{last}", f"{first}{last}{r.randint(1, 99)}",
                          f"{first}_{last}"))
        return f"{local.lower().replace(' ', '').replace(chr(39), '')}@{r.choice(self.pools.email_domains)}"

    def phone(self) -> str:
        r = self.rng
        return f"+1-{r.choice(self.pools.area_codes)}-{r.randint(200, 999)}-{r.randint(0, 9999):04d}"

    def address(self) -> dict[str, str]:
        city, state, zipcode = self.rng.choice(self.pools.cities)
        return {"line1": self.rng.choice(self.pools.streets), "city": city, "state": state,
                "postal_code": zipcode, "country": "US"}

    def address_line(self) -> str:
        a = self.address()
        return f"{a['line1']}, {a['city']}, {a['state']} {a['postal_code']}"

    # ---- time ------------------------------------------------------------------
    def past(self, max_days: float = 365.0, min_days: float = 0.0) -> datetime:
        """A second-precision instant between max_days and min_days before the anchor."""
        secs = self.rng.randint(int(min_days * DAY), int(max_days * DAY))
        return self.anchor - timedelta(seconds=secs)

    def after(self, t: datetime, max_hours: float) -> datetime:
        return t + timedelta(seconds=self.rng.randint(60, max(61, int(max_hours * 3600))))


def iso(t: datetime) -> str:
    return t.strftime("%Y-%m-%dT%H:%M:%SZ")


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
    a, b = num_range(c, lo, hi)
    if cents:
        ia, ib = math.ceil(a * 100 - 1e-9), math.floor(b * 100 + 1e-9)
        if ia <= ib:
            return ctx.rng.randint(ia, ib) / 100
    return round(ctx.rng.uniform(a, b), 4) if b - a > 1e-3 else a


def fit_length(ctx: Ctx, text: str, c: FieldConstraint) -> str:
    """Trim or extend pool text so it satisfies min_length/max_length."""
    if c.max_length is not None and len(text) > c.max_length:
        text = text[: c.max_length].rstrip() or text[: c.max_length]
    if c.min_length is not None:
        while len(text) < c.min_length:
            text = f"{text} {ctx.rng.choice(ctx.pools.words)}".strip()
        if c.max_length is not None and len(text) > c.max_length:
            text = text[: c.max_length]
    return text


def text_by_semantic(ctx: Ctx, semantic: str | None, name: str) -> str:
    p = ctx.pools
    r = ctx.rng
    match semantic:
        case "first_name":
            return ctx.first_name()
        case "last_name":
            return ctx.last_name()
        case "full_name":
            return f"{ctx.first_name()} {ctx.last_name()}"
        case "city":
            return r.choice(p.cities)[0]
        case "state":
            return r.choice(p.cities)[1]
        case "postcode":
            return r.choice(p.cities)[2]
        case "street_address":
            return r.choice(p.streets)
        case "country":
            return "US"
        case "company" | "brand":
            return r.choice(p.companies)
        case "uuid":
            return ctx.uuid()
        case "sku":
            occ = r.choice(p.occasions)
            return ctx.sku(r.choice(occ.products).sku_stem)
        case "product_name":
            return r.choice(r.choice(p.occasions).products).name
        case "category":
            return r.choice(r.choice(p.occasions).products).category
        case "title":
            return r.choice(p.sentences).rstrip(".")
        case "sentence":
            return r.choice(p.sentences)
        case str(s) if s.startswith("id:"):
            return ctx.ident(s)
    return f"{r.choice(p.words)}-{ctx.code(6).lower()}"


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
        return [fit_length(ctx, ctx.rng.choice(ctx.pools.words), c) for _ in range(n)]
    if t == FieldType.ENUM:
        return ctx.rng.choice(c.enum_values)
    if t == FieldType.INTEGER:
        return int_in(ctx, c, 0, 1000)
    if t == FieldType.FLOAT:
        if f.semantic == "money":
            return float_in(ctx, c, 1.0, 500.0, cents=True)
        return float_in(ctx, c, 0.0, 1000.0)
    if t == FieldType.BOOLEAN:
        return ctx.rng.random() < 0.5
    if t == FieldType.DATE:
        return ctx.past(3 * 365).strftime("%Y-%m-%d")
    if t == FieldType.DATETIME:
        return iso(ctx.past(365))
    if c.regex is not None:
        return regex_text(ctx, c)
    if t == FieldType.EMAIL:
        text = ctx.email_for(ctx.first_name(), ctx.last_name())
        return text if _len_ok(text, c) else fit_email(ctx, c)
    if t == FieldType.PHONE:
        return fit_length(ctx, ctx.phone(), c)
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
    """A valid address of the allowed length: local part sized to fit."""
    domain = "ex.io"
    lo = max(c.min_length or 0, len(domain) + 2)
    hi = max(lo, c.max_length if c.max_length is not None else lo + 10)
    n = ctx.rng.randint(lo, hi) - len(domain) - 1
    return "".join(ctx.rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(n)) + "@" + domain


def regex_text(ctx: Ctx, c: FieldConstraint) -> str:
    """A regex match within the length bounds (bounds checked compatible at plan time)."""
    assert c.regex is not None
    for _ in range(64):
        text = regexgen.generate(c.regex, ctx.rng)
        if _len_ok(text, c):
            return text
    raise ValueError(f"regex {c.regex!r} rarely matches within the length bounds")


def array_bounds(f: FieldSpec) -> tuple[int, int]:
    c = f.constraint
    lo = int(c.min) if c.min is not None else f.min_items
    hi = int(c.max) if c.max is not None else max(f.max_items, lo)
    return lo, hi


def gen_object(ctx: Ctx, fields: list[FieldSpec]) -> dict[str, Any]:
    return {f.name: gen_field(ctx, f) for f in fields}


def utc(dt: datetime) -> datetime:
    return dt if dt.tzinfo else dt.replace(tzinfo=UTC)
