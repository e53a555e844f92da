"""Edge-case records on request, with no pattern store and no LLM.

`defect_triggering`, an `edge_case` hint, or words such as "boundary values" or "unicode
names" make records that exercise the spec's defect classes. Each class applies where the
entity has a field it fits (a DST boundary needs a timestamp, a negative quantity an
integer quantity); the applicable classes take turns record by record, so the mix is even
unless the request names classes. A record says its class in `_edge_case_type`, and lists
in `_intentionally_invalid` exactly the paths where it breaks the schema on purpose (found
by validating it, so the mark can never be stale).

Pure and deterministic: an edge record is a function of (plan, index), drawn from its own
RNG so that the records around it are unchanged.
"""

from __future__ import annotations

import random
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from services.core.intent import Match
from services.core.models import EntitySchema, FieldSpec, FieldType
from services.core.validate import EDGE_CASE_KEY, INVALID_KEY, check_object

ALL = "*"
TEXT = (FieldType.STRING,)
TIMES = (FieldType.DATETIME, FieldType.DATE)
UNICODE_PRODUCTS = (
    "Crème Brûlée Ramekin Set",
    "Ästhetik Kaffeebecher",
    "日本製 Chef's Knife",
    "Piñata Party Kit",
)
UNICODE_NAMES = (
    "José Ñúñez",
    "Zoë Ångström",
    "王芳",
    "Øyvind Łukasz",
    "Nguyễn Văn Anh",
    "Ólafur Þór",
)
EMOJI = ("🚀", "😍", "🎉", "👩‍💻", "🏃‍♀️", "🇨🇦")
SQL = ("Robert'); DROP TABLE students;--", "' OR '1'='1", "1; DELETE FROM orders WHERE 1=1;--")
SCRIPT = ("<script>alert('xss')</script>", '"><img src=x onerror=alert(1)>')
FAR_FUTURE = "9999-12-31T23:59:59Z"
INVALID_ENUM = "__INVALID__"


@dataclass(frozen=True)
class Target:
    path: str  # dotted; through an array it means the first element
    field: FieldSpec


def _targets(fields: list[FieldSpec], prefix: str = "") -> list[Target]:
    out = []
    for f in fields:
        out.append(Target(prefix + f.name, f))
        if f.nested_fields and f.type in (FieldType.OBJECT, FieldType.ARRAY):
            out += _targets(f.nested_fields, f"{prefix}{f.name}.")
    return out


def _free_text(f: FieldSpec) -> bool:
    c = f.constraint
    return f.type in TEXT and c.regex is None and not c.enum_values and c.format is None


def _namey(t: Target) -> bool:
    return _free_text(t.field) and "name" in t.field.name.lower()


def _money(t: Target) -> bool:
    return t.field.type == FieldType.FLOAT and (t.field.semantic or "") == "money"


def _qty(t: Target) -> bool:
    return t.field.type == FieldType.INTEGER and any(
        w in t.field.name.lower() for w in ("quantity", "qty", "stock", "count")
    )


# class -> which fields it fits
APPLIES: dict[str, Callable[[Target], bool]] = {
    "midnight_utc": lambda t: t.field.type in TIMES,
    "dst_boundary": lambda t: t.field.type == FieldType.DATETIME,
    "unicode_name": _namey,
    "emoji_text": lambda t: _free_text(t.field),
    "max_length_string": lambda t: (
        t.field.type in TEXT and t.field.constraint.max_length is not None
    ),
    "zero_amount": _money,
    "negative_quantity": _qty,
    "sql_injection": lambda t: _free_text(t.field),
    "script_injection": lambda t: _free_text(t.field),
    "missing_required": lambda t: t.field.required,
    "invalid_enum": lambda t: t.field.type == FieldType.ENUM,
    "precision_0_001": _money,
    "far_future_date": lambda t: t.field.type in TIMES,
    "boundary_min": lambda t: (
        t.field.type in (FieldType.INTEGER, FieldType.FLOAT) and t.field.constraint.min is not None
    ),
    "boundary_max": lambda t: (
        t.field.type in (FieldType.INTEGER, FieldType.FLOAT) and t.field.constraint.max is not None
    ),
}
CLASSES = tuple(APPLIES)


def dst_instants(year: int) -> tuple[datetime, datetime]:
    """US Eastern DST transitions in UTC: 2:00 EST on the second Sunday of March (07:00Z)
    and 2:00 EDT on the first Sunday of November (06:00Z)."""
    march = datetime(year, 3, 1, 7, tzinfo=UTC)
    march += timedelta(days=(6 - march.weekday()) % 7 + 7)
    nov = datetime(year, 11, 1, 6, tzinfo=UTC)
    nov += timedelta(days=(6 - nov.weekday()) % 7)
    return march, nov


def _z(dt: datetime, date_only: bool) -> str:
    return dt.strftime("%Y-%m-%d") if date_only else dt.strftime("%Y-%m-%dT%H:%M:%SZ")


def _value(kind: str, t: Target, current: Any, rng: random.Random, anchor: datetime) -> Any:
    f, c = t.field, t.field.constraint
    date_only = f.type == FieldType.DATE
    if kind == "midnight_utc":
        day = anchor - timedelta(days=rng.randint(1, 365))
        return _z(day.replace(hour=0, minute=0, second=0, microsecond=0), date_only)
    if kind == "dst_boundary":
        return _z(rng.choice(dst_instants(anchor.year - rng.randint(0, 1))), False)
    if kind == "far_future_date":
        return FAR_FUTURE[:10] if date_only else FAR_FUTURE
    if kind == "unicode_name":
        return rng.choice(UNICODE_PRODUCTS if f.semantic == "product_name" else UNICODE_NAMES)
    if kind == "emoji_text":
        return f"{current if isinstance(current, str) and current else 'Test'} {rng.choice(EMOJI)}"
    if kind == "max_length_string":
        n = c.max_length or 0
        return ("Ünïcødé-" * (n // 8 + 1))[:n]
    if kind == "sql_injection":
        return rng.choice(SQL)
    if kind == "script_injection":
        return rng.choice(SCRIPT)
    if kind == "zero_amount":
        return 0.0
    if kind == "negative_quantity":
        return -rng.randint(1, 3)
    if kind == "invalid_enum":
        return INVALID_ENUM
    if kind == "precision_0_001":
        return 0.001
    if kind == "boundary_min":
        return int(c.min) if f.type == FieldType.INTEGER and c.min is not None else c.min
    if kind == "boundary_max":
        return int(c.max) if f.type == FieldType.INTEGER and c.max is not None else c.max
    raise ValueError(kind)


@dataclass(frozen=True)
class EdgePlan:
    """The classes one scenario's records take turns at, with the fields each fits."""

    classes: tuple[tuple[str, tuple[Target, ...]], ...]

    def class_for(self, offset: int) -> tuple[str, tuple[Target, ...]]:
        return self.classes[offset % len(self.classes)]

    def counts(self, n: int) -> dict[str, int]:
        k = len(self.classes)
        return {
            name: n // k + (1 if j < n % k else 0)
            for j, (name, _) in enumerate(self.classes)
            if n // k + (1 if j < n % k else 0)
        }


def edge_plan(schema: EntitySchema, wanted: Iterable[str]) -> EdgePlan | None:
    """The applicable classes among those wanted (ALL: every class); None if none."""
    asked = set(wanted)
    names = CLASSES if ALL in asked else tuple(c for c in CLASSES if c in asked)
    targets = _targets(schema.fields)
    classes = []
    for name in names:
        fits = tuple(t for t in targets if APPLIES[name](t))
        if fits:
            classes.append((name, fits))
    return EdgePlan(tuple(classes)) if classes else None


def _set(rec: dict[str, Any], path: str, value: Any, delete: bool = False) -> bool:
    """Set (or delete) a dotted path; through an array, in its first element."""
    head, _, rest = path.partition(".")
    node = rec.get(head)
    if not rest:
        if delete:
            return rec.pop(head, None) is not None
        rec[head] = value
        return True
    if isinstance(node, list):
        node = node[0] if node and isinstance(node[0], dict) else None
    return isinstance(node, dict) and _set(node, rest, value, delete)


def _get(rec: dict[str, Any], path: str) -> Any:
    head, _, rest = path.partition(".")
    node = rec.get(head)
    if not rest:
        return node
    if isinstance(node, list):
        node = node[0] if node else None
    return _get(node, rest) if isinstance(node, dict) else None


def apply(
    ep: EdgePlan,
    offset: int,
    rec: dict[str, Any],
    fields: list[FieldSpec],
    seed: int,
    anchor: datetime,
) -> dict[str, Any]:
    """Make `rec` the edge case its position calls for, marked as such."""
    kind, targets = ep.class_for(offset)
    rng = random.Random(seed)
    order = list(targets)
    rng.shuffle(order)
    for t in order:  # the first target that exists in this record
        if kind == "missing_required":
            if _set(rec, t.path, None, delete=True):
                break
        elif _get(rec, t.path) is not None or "." not in t.path:
            _set(rec, t.path, _value(kind, t, _get(rec, t.path), rng, anchor))
            break
    rec[EDGE_CASE_KEY] = kind
    broken = sorted({e.path for e in check_object(fields, rec)})
    if broken:
        rec[INVALID_KEY] = broken
    return rec


# ---- what asks for them -------------------------------------------------------------------
PHRASES: dict[str, tuple[str, ...]] = {
    r"\bedge[ _-]?cases?\b|\bcorner[ _-]?cases?\b|\bdefects?\b|\bbug[ -]?(?:triggering|hunting)\b|\bnegative[ _-]testing\b|\bmalformed\b|\bstress[ _-]test\w*\b|\bfuzz\w*\b": (
        ALL,
    ),
    r"\bboundary[ _-]?values?\b|\bboundar(?:y|ies)\b": ("boundary_min", "boundary_max"),
    r"\bunicode\b|\bnon[- ]ascii\b|\baccents?\b|\binternational(?:ised|ized)? names\b": (
        "unicode_name",
    ),
    r"\bemojis?\b": ("emoji_text",),
    r"\bsql[ _-]?injection\b|\bsqli\b": ("sql_injection",),
    r"\bxss\b|\bscript[ _-]?injection\b|\bcross[- ]site scripting\b": ("script_injection",),
    r"\bmidnight\b": ("midnight_utc",),
    r"\bdst\b|\bdaylight[ -]saving": ("dst_boundary",),
    r"\bmax(?:imum)?[ _-]?length\b|\blong(?:est)? strings?\b": ("max_length_string",),
    r"\bzero[ _-]amounts?\b|\$0(?:\.00)?\b|\bzero[- ]dollar\b": ("zero_amount",),
    r"\bnegative[ _-]quantit(?:y|ies)\b": ("negative_quantity",),
    r"\bmissing[ _-](?:required[ _-])?fields?\b|\bnulls?\b": ("missing_required",),
    r"\binvalid[ _-]enums?\b|\bunknown[ _-](?:status|values?)\b": ("invalid_enum",),
    r"\bprecision\b|\b0\.001\b|\brounding\b": ("precision_0_001",),
    r"\bfar[ _-]future\b|\by10k\b|\byear 9999\b": ("far_future_date",),
}
_RULES = [(re.compile(p, re.IGNORECASE), classes) for p, classes in PHRASES.items()]


def recognize(text: str) -> list[Match]:
    out = []
    for pattern, classes in _RULES:
        for m in pattern.finditer(text):
            what = "every applicable class" if classes == (ALL,) else ", ".join(classes)
            out.append(Match(m.start(), m.end(), f"edge cases: {what}", edge_cases=classes))
    return out
