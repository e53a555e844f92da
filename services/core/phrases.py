"""Common phrases of test-data requests turned into constraints and fixed values.

"Cart total > $500", "over $1k", "3-5 items", "single item", "expired card", "international
shipping", "Gold tier", "5-star reviews"... A phrase does not know the entity it is read
for, so it names a role (`@total`, `@items`) or an enum value (`@enum` = "declined"); the
plan resolves those against the entity's schema (`resolve_role`), and a phrase with no
field to land on is reported, never dropped silently.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from services.core.entities import lookup
from services.core.intent import Match
from services.core.models import EntitySchema, FieldConstraint, FieldSpec, FieldType

ENUM = "@enum"  # an override whose field is whichever enum field allows the value
# Role -> candidate field paths, first existing one wins.
ROLES: dict[str, tuple[str, ...]] = {
    "@total": ("total", "amount", "payment.amount", "price"),
    "@items": ("items",),
    "@quantity": ("items.quantity",),
    "@method": ("method", "payment.method"),
    "@ship_country": ("shipping_address.country", "addresses.country"),
    "@shipping": ("shipping",),
    "@rating": ("rating",),
    "@verified": ("verified_purchase",),
    "@stock": ("stock",),
}
CARD_METHODS = ["credit_card", "debit_card", "macys_card"]

_NUM_WORDS = {
    "one": 1,
    "single": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_N = r"(\d{1,3}|one|two|three|four|five|six|seven|eight|nine|ten)"
_MONEY = r"(?:\$\s?(\d[\d,]*(?:\.\d+)?)\s?(k|m)?\b|(\d[\d,]*(?:\.\d+)?)\s?(k|m)?\s?(?:dollars|usd|bucks)\b|(\d[\d,]*(?:\.\d+)?)(k)\b)"
_ITEMS = r"(?:line\s+)?(?:items?|products?|things|pieces|skus?)"
_MONEY_SUBJECT = r"(?:(?:cart|order|basket|payment)\s+)?(?:totals?|amounts?|values?|prices?|spend|worth|costing|costs?|of|at|for)?\s*"


def money(groups: tuple[str | None, ...]) -> float:
    """The amount of one _MONEY match: "$1.5k" -> 1500, "2,000 dollars" -> 2000."""
    for i in range(0, len(groups), 2):
        raw = groups[i]
        if raw:
            mult = {"k": 1e3, "m": 1e6}.get((groups[i + 1] or "").lower(), 1.0)
            return round(float(raw.replace(",", "")) * mult, 2)
    raise ValueError("no amount")


def num(word: str) -> int:
    return _NUM_WORDS[word.lower()] if word.lower() in _NUM_WORDS else int(word)


def _fmt(x: float) -> str:
    return f"{x:,.2f}".rstrip("0").rstrip(".")


Rule = tuple[re.Pattern[str], Callable[[re.Match[str]], Match | None]]
RULES: list[Rule] = []


def rule(pattern: str) -> Callable[[Callable[[re.Match[str]], Match | None]], Any]:
    def deco(fn: Callable[[re.Match[str]], Match | None]) -> Any:
        RULES.append((re.compile(pattern, re.IGNORECASE), fn))
        return fn

    return deco


def _m(m: re.Match[str], meaning: str, **kw: Any) -> Match:
    return Match(start=m.start(), end=m.end(), meaning=meaning, **kw)


def _bounds(lo: float | None, hi: float | None) -> tuple[tuple[str, FieldConstraint], ...]:
    return (("@total", FieldConstraint(min=lo, max=hi)),)


# ---- money ----------------------------------------------------------------------------
@rule(rf"{_MONEY_SUBJECT}between\s+{_MONEY}\s+and\s+{_MONEY}")
def _between(m: re.Match[str]) -> Match:
    g = m.groups()
    lo, hi = sorted((money(g[:6]), money(g[6:12])))
    return _m(m, f"total between {_fmt(lo)} and {_fmt(hi)}", constraints=_bounds(lo, hi))


@rule(rf"{_MONEY}\s*(?:-|–|to)\s*{_MONEY}")
def _range(m: re.Match[str]) -> Match:
    g = m.groups()
    lo, hi = sorted((money(g[:6]), money(g[6:12])))
    return _m(m, f"total between {_fmt(lo)} and {_fmt(hi)}", constraints=_bounds(lo, hi))


@rule(
    rf"{_MONEY_SUBJECT}(>=|≥|>|over|above|more than|greater than|exceeding|at least|no less than|min(?:imum)?(?: of)?)\s*{_MONEY}(\s*(?:\+|or more|and up))?"
)
def _over(m: re.Match[str]) -> Match:
    op, amount = m.group(1).lower(), money(m.groups()[1:7])
    inclusive = op in (">=", "≥", "at least", "no less than") or op.startswith("min")
    inclusive = inclusive or bool(m.group(8))
    lo = amount if inclusive else round(amount + 0.01, 2)
    return _m(
        m, f"total {'>=' if inclusive else '>'} {_fmt(amount)}", constraints=_bounds(lo, None)
    )


@rule(
    rf"{_MONEY_SUBJECT}(<=|≤|<|under|below|less than|cheaper than|at most|up to|no more than|max(?:imum)?(?: of)?)\s*{_MONEY}"
)
def _under(m: re.Match[str]) -> Match:
    op, amount = m.group(1).lower(), money(m.groups()[1:7])
    inclusive = op in ("<=", "≤", "at most", "up to", "no more than") or op.startswith("max")
    hi = amount if inclusive else round(amount - 0.01, 2)
    return _m(
        m, f"total {'<=' if inclusive else '<'} {_fmt(amount)}", constraints=_bounds(None, hi)
    )


@rule(r"\b(?:high[- ]value|big[- ]ticket|luxury|premium)\s+(?:carts?|orders?|purchases?|baskets?)")
def _high_value(m: re.Match[str]) -> Match:
    return _m(m, "total > 500 (high value)", constraints=_bounds(500.01, None))


# ---- item counts ----------------------------------------------------------------------
def _items(m: re.Match[str], lo: int, hi: int | None) -> Match:
    what = f"{lo}" if lo == hi else f"{lo}-{hi}" if hi is not None else f">= {lo}"
    return _m(m, f"items count {what}", constraints=(("@items", FieldConstraint(min=lo, max=hi)),))


@rule(rf"\b{_N}\s*(?:-|–|to)\s*{_N}\s+{_ITEMS}\b")
def _n_to_m(m: re.Match[str]) -> Match:
    lo, hi = sorted((num(m.group(1)), num(m.group(2))))
    return _items(m, lo, hi)


@rule(rf"\b(?:single|one)[- ]{_ITEMS}\b|\bjust one {_ITEMS}\b|\bsingle[- ]line\b")
def _single(m: re.Match[str]) -> Match:
    return _items(m, 1, 1)


@rule(
    rf"\b(?:at least|minimum of|min(?:imum)?|more than|over)\s+{_N}\s+{_ITEMS}\b|\b{_N}\+\s*{_ITEMS}\b"
)
def _at_least(m: re.Match[str]) -> Match:
    n = num(m.group(1) or m.group(2))
    if m.group(0).lower().startswith(("more than", "over")):
        n += 1
    return _items(m, n, None)


@rule(
    rf"\b(?:up to|at most|no more than|max(?:imum)?(?: of)?|fewer than|less than)\s+{_N}\s+{_ITEMS}\b"
)
def _at_most(m: re.Match[str]) -> Match:
    n = num(m.group(1))
    if m.group(0).lower().startswith(("fewer", "less")):
        n -= 1
    return _items(m, 1, max(n, 1))


@rule(rf"\b(?:exactly\s+)?{_N}\s+{_ITEMS}\b")
def _exactly(m: re.Match[str]) -> Match:
    n = num(m.group(1))
    return _items(m, n, n)


@rule(r"\bmulti[- ]?items?\b|\bmultiple\s+items\b|\bseveral\s+items\b")
def _multi(m: re.Match[str]) -> Match:
    return _items(m, 2, None)


# ---- payments and orders --------------------------------------------------------------
def _enum(m: re.Match[str], value: str, meaning: str | None = None, **kw: Any) -> Match:
    return _m(m, meaning or f"status {value}", overrides=((ENUM, value),), **kw)


@rule(r"\bexpired\s+(?:credit\s+|debit\s+)?cards?\b|\bcards?\s+(?:is\s+|was\s+)?expired\b")
def _expired(m: re.Match[str]) -> Match:
    return _m(
        m,
        "status declined (card expired); method a card",
        overrides=((ENUM, "declined"),),
        constraints=(("@method", FieldConstraint(enum_values=CARD_METHODS)),),
    )


STATUS_WORDS = {
    r"declined|failed|rejected": "declined",
    r"refunded|refunds?": "refunded",
    r"cancell?ed|cancellations?": "cancelled",
    r"returned|returns": "returned",
    r"delivered": "delivered",
    r"shipped|in transit": "shipped",
    r"pending|unpaid|abandoned": "pending",
    r"authori[sz]ed": "authorized",
    r"captured|settled": "captured",
}
for _pat, _value in STATUS_WORDS.items():

    def _make(value: str) -> Callable[[re.Match[str]], Match]:
        return lambda m: _enum(m, value)

    rule(rf"\b(?:{_pat})(?:\s+(?:payments?|orders?|transactions?|charges?|cards?))?\b")(
        _make(_value)
    )

METHOD_WORDS = {
    r"pay\s?pal": "paypal",
    r"apple\s?pay": "apple_pay",
    r"google\s?pay": "google_pay",
    r"gift\s?cards?": "gift_card",
    r"macy'?s\s+(?:credit\s+)?card|store\s+card|star\s+rewards\s+card": "macys_card",
    r"credit\s?cards?": "credit_card",
    r"debit\s?cards?": "debit_card",
}
for _pat, _value in METHOD_WORDS.items():

    def _make_m(value: str) -> Callable[[re.Match[str]], Match]:
        return lambda m: _enum(m, value, f"method {value}")

    rule(rf"\b(?:paid\s+(?:with|by|via)\s+|using\s+|via\s+)?(?:{_pat})\b")(_make_m(_value))


@rule(r"\b(?:canadian\s+dollars|in\s+cad|cad\b)")
def _cad(m: re.Match[str]) -> Match:
    return _enum(m, "CAD", "currency CAD")


@rule(
    r"\binternational\s+(?:shipping|orders?|customers?|addresses?|delivery)|\bcross[- ]border\b|\bships?\s+to\s+canada\b"
)
def _international(m: re.Match[str]) -> Match:
    return _m(m, "shipping country CA (outside the US)", overrides=(("@ship_country", "CA"),))


@rule(r"\b(?:express|expedited|overnight|next[- ]day|rush)\s+(?:shipping|delivery)\b")
def _express(m: re.Match[str]) -> Match:
    return _m(m, "shipping 19.95 (express)", overrides=(("@shipping", 19.95),))


@rule(r"\bstandard\s+(?:shipping|delivery)\b")
def _standard(m: re.Match[str]) -> Match:
    return _m(m, "shipping 7.95 (standard)", overrides=(("@shipping", 7.95),))


@rule(
    r"\bfree\s+(?:shipping|delivery)\b|\bbopis\b|\bbuy\s+online,?\s+pick\s*up\s+in[- ]store\b|\b(?:in[- ]store|store|curbside)\s+pick\s*-?\s*up\b"
)
def _pickup(m: re.Match[str]) -> Match:
    what = "free shipping" if m.group(0).lower().startswith("free") else "store pickup"
    return _m(m, f"shipping 0 ({what})", overrides=(("@shipping", 0.0),))


# ---- people ---------------------------------------------------------------------------
for _tier in ("Bronze", "Silver", "Gold", "Platinum"):

    def _make_t(tier: str) -> Callable[[re.Match[str]], Match]:
        return lambda m: _enum(m, tier, f"loyalty_tier {tier}")

    rule(
        rf"\b{_tier}\s+(?:tier|members?|status|level|customers?|users?|rewards?)\b|\b(?:star rewards\s+)?{_tier}\b(?=\s+(?:star rewards))"
    )(_make_t(_tier))


@rule(
    r"\b(?:first[- ]time|brand[- ]new|new)\s+(?:customers?|buyers?|shoppers?|users?|members?)\b|\bfirst\s+purchases?\b"
)
def _first_time(m: re.Match[str]) -> Match:
    return _enum(m, "Bronze", "loyalty_tier Bronze (a first-time customer has no tier yet)")


# ---- reviews --------------------------------------------------------------------------
@rule(r"\b(one|two|three|four|five|[1-5])[- ]stars?\b")
def _stars(m: re.Match[str]) -> Match:
    n = num(m.group(1))
    return _m(m, f"rating {n}", constraints=(("@rating", FieldConstraint(min=n, max=n)),))


@rule(
    r"\b(?:negative|bad|critical|unhappy|angry|poor|low[- ]rated)\s+(?:reviews?|ratings?|feedback)\b"
)
def _negative(m: re.Match[str]) -> Match:
    return _m(m, "rating <= 2 (negative)", constraints=(("@rating", FieldConstraint(max=2)),))


@rule(
    r"\b(?:positive|good|glowing|happy|rave|great|high[- ]rated)\s+(?:reviews?|ratings?|feedback)\b"
)
def _positive(m: re.Match[str]) -> Match:
    return _m(m, "rating >= 4 (positive)", constraints=(("@rating", FieldConstraint(min=4)),))


@rule(r"\bmixed\s+(?:opinions?|reviews?|feelings?|ratings?|feedback)\b|\bneutral\s+reviews?\b")
def _mixed(m: re.Match[str]) -> Match:
    return _m(m, "rating 2-4 (mixed)", constraints=(("@rating", FieldConstraint(min=2, max=4)),))


@rule(r"\bverified\s+(?:purchases?|buyers?|reviews?)\b")
def _verified(m: re.Match[str]) -> Match:
    return _m(m, "verified_purchase true", overrides=(("@verified", True),))


@rule(r"\bout\s+of\s+stock\b")
def _out_of_stock(m: re.Match[str]) -> Match:
    return _m(m, "stock 0 (out of stock)", overrides=(("@stock", 0),))


# ---- the request's own fields ----------------------------------------------------------
@rule(r"\b(?:as|in|to)\s+(sql|csv|json)(?:\s+(?:format|file|rows|inserts))?\b")
def _format(m: re.Match[str]) -> Match:
    fmt = m.group(1).upper()
    return _m(m, f"output format {fmt}", output_format=fmt)


@rule(
    r"\b(\d{1,3}(?:\.\d+)?)\s?%\s+(?:of\s+(?:them\s+|records\s+)?)?([a-z][a-z_-]*(?:[ _-][a-z]+)?)"
)
def _share(m: re.Match[str]) -> Match | None:
    pct, name = float(m.group(1)), m.group(2).lower().replace("-", "_").replace(" ", "_")
    if pct > 100:
        return None
    return _m(m, f"scenario {name} {pct:g}%", scenario_share=(name, pct))


def recognize(text: str) -> list[Match]:
    """Every rule's matches; the interpreter keeps the longest where they overlap."""
    out = []
    for pattern, fn in RULES:
        for m in pattern.finditer(text):
            found = fn(m)
            if found is not None and found.end > found.start:
                out.append(found)
    return out


# ---- resolving roles against an entity ---------------------------------------------------


def resolve_role(schema: EntitySchema, role: str, value: Any = None) -> str | None:
    """The field path a role (or, for `@enum`, a value) lands on in this entity."""
    if role == ENUM:
        for path in _enum_paths(schema.fields):
            f = lookup(schema.fields, path)
            if f is not None and value in f.constraint.enum_values:
                return path
        return None
    if not role.startswith("@"):
        return role if lookup(schema.fields, role) else None
    for path in ROLES.get(role, ()):
        f = lookup(schema.fields, path)
        if f is not None and (role != "@items" or f.type == FieldType.ARRAY):
            return path
    return None


def _enum_paths(fields: list[FieldSpec], prefix: str = "") -> list[str]:
    """Enum fields, shallowest first (a record's own status before its payment's)."""
    top = [prefix + f.name for f in fields if f.type == FieldType.ENUM]
    deeper = [
        p
        for f in fields
        if f.nested_fields and f.type == FieldType.OBJECT
        for p in _enum_paths(f.nested_fields, f"{prefix}{f.name}.")
    ]
    return top + deeper
