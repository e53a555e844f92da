"""Records varied from retrieved examples: the RAG path's generator, pure like generate.py.

Record i of a plan starts from example `i mod n` (examples in the order retrieved) and gets:
- fresh identifiers in the entity's formats (an id repeated within a record stays one id),
  fresh people, phones and addresses;
- its timestamps moved to before the request's anchor (the record's age and spacing
  stretched a little, their order within the record kept);
- its numbers perturbed inside the plan's (request-merged) constraints, and the money a
  composer derives (basket subtotal, tax, total, payment amount) re-derived from the items;
- the plan's shape: unknown keys dropped, missing required fields generated, values that
  break a constraint regenerated;
- `_index`, `_scenario` and the scenario's overrides from `finalize`, as on every path.
Records do not repeat: each gets fresh random identifiers, and one from an example without
any (or with a scenario override that may pin them) is checked against its block of
records and drawn again. A record whose re-derived money breaks a constraint is tried
again with the example's own numbers, then taken from the traditional generator, as are
the records of an example that cannot fit the plan (too few items for a constrained
count): `Varied.traditional` lists them.

Defect examples (from the defect collection, or records carrying `_edge_case_type`) keep
what makes them defects: the values where the example breaks the schema, every number,
timestamp, text and array as it was, missing and unknown keys too (a defect is often a
value: midnight UTC on New Year, a leap day, a far-future date, a rounding-prone amount).
Only identifiers, people and addresses are fresh. Each says its `_edge_case_type` and
lists in `_intentionally_invalid` exactly the paths it breaks, which
`validate_record(..., honour_marks=True)` accepts (an example's own list, under either
name, is not trusted: it is recomputed).

Fast: each example is checked against the plan and compiled once into a builder (a tree
of small functions), so a record costs its fresh values, not a schema walk and a
validation. Deterministic: the RNG is seeded per block of BLOCK records as in generate.py,
so the same plan and examples give the same records however the range is chunked.
"""

from __future__ import annotations

import hashlib
import math
import random
from collections import OrderedDict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson

from services.core.entities import MONEY_FIELDS, lookup
from services.core.errors import NoExamples
from services.core.generate import BLOCK, META_KEYS, block_seed, finalize, generate_records
from services.core.models import FieldSpec, FieldType
from services.core.plan import Plan, Slot
from services.core.pools import get_pools
from services.core.validate import EDGE_CASE_KEY, INVALID_KEY, check_object, check_value
from services.core.values import DAY, Ctx, array_bounds, gen_field, gen_object, iso

RAG_SALT = 0x52414756415259  # varied records draw apart from the traditional ones
ATTEMPTS = 3  # perturbed, then the example's own numbers, then perturbed again
DEFAULT_EDGE_CASE = "defect"
ADDRESS_PARTS = {
    "street_address": "line1",
    "city": "city",
    "state": "state",
    "postcode": "postal_code",
}
PEOPLE = frozenset({"first_name", "last_name", "full_name"})
SMALL_SCALE = 10  # integers bounded this tightly are categories (ratings): never perturbed
MIN_SPREAD = 7 * DAY


@dataclass(frozen=True)
class Example:
    """One retrieved record; `edge_case` names the defect class of a defect example."""

    record: Mapping[str, Any]
    edge_case: str | None = None
    # Names this record's content for good ("<pattern id>:<n>": pattern ids are content
    # hashes), so its compiled form is reused by later requests of the same shape.
    key: str = ""


@dataclass
class Varied:
    records: list[dict[str, Any]]
    traditional: list[int] = field(default_factory=list)  # indexes no example fitted


def _epoch(v: Any) -> int | None:
    if not isinstance(v, str):
        return None
    try:
        dt = datetime.fromisoformat(v.replace("Z", "+00:00"))
    except ValueError:
        return None
    return int((dt if dt.tzinfo else dt.replace(tzinfo=UTC)).timestamp())


def _clone(v: Any) -> Any:
    """A copy of a JSON value: records never share mutable parts."""
    if isinstance(v, dict):
        return {k: _clone(x) for k, x in v.items()}
    if isinstance(v, list):
        return [_clone(x) for x in v]
    return v


def _key(rec: dict[str, Any]) -> bytes:
    return orjson.dumps({k: v for k, v in rec.items() if k not in META_KEYS})


def _decimals(like: float) -> int:
    text = repr(like)
    return len(text.split(".")[1]) if "." in text and "e" not in text else 2


class _Record:
    """One record's variation state: what was renamed, how its time moves, the RNG."""

    __slots__ = ("addresses", "ctx", "ids", "new_max", "person", "perturb", "scale", "t_max")

    def __init__(self, ctx: Ctx, perturb: bool, t_max: int | None):
        self.ctx = ctx
        self.perturb = perturb
        self.t_max = t_max
        self.ids: dict[Any, Any] = {}
        self.addresses: dict[tuple[str, ...], dict[str, str]] = {}
        self.person: tuple[str, str] | None = None
        self.new_max = 0
        self.scale = 1.0

    def fresh(self, old: Any, make: Callable[[], Any]) -> Any:
        """A new value for `old`, the same one each time `old` recurs in the record."""
        if old not in self.ids:
            self.ids[old] = make()
        return self.ids[old]

    def names(self) -> tuple[str, str]:
        if self.person is None:
            self.person = (self.ctx.first_name(), self.ctx.last_name())
        return self.person

    def address(self, key: tuple[str, ...]) -> dict[str, str]:
        if key not in self.addresses:
            self.addresses[key] = self.ctx.address()
        return self.addresses[key]

    def moved(self, t: int) -> str:
        assert self.t_max is not None
        return iso(max(0, self.new_max - int((self.t_max - t) * self.scale)))


Node = Callable[[_Record], Any]


class _Const:
    """A value every variation keeps; objects fold scalar ones into their template."""

    __slots__ = ("value",)

    def __init__(self, value: Any):
        self.value = value

    def __call__(self, r: _Record) -> Any:
        return _clone(self.value)


def _const(v: Any) -> Node:
    return _Const(v)


def _gen(f: FieldSpec) -> Node:
    return lambda r: gen_field(r.ctx, f)


def _checked(f: FieldSpec, node: Node) -> Node:
    """`node`'s fresh value, regenerated when the (request-merged) constraint refuses it."""

    def fit(r: _Record) -> Any:
        v = node(r)
        return gen_field(r.ctx, f) if check_value(f, v, f.name) else v

    return fit


def _dict_node(pairs: list[tuple[str, Node]]) -> Node:
    """An object: a template of its constant scalars (in field order), the rest filled in."""
    template = {k: None for k, _ in pairs}
    varying = []
    for k, fn in pairs:
        if isinstance(fn, _Const) and not isinstance(fn.value, dict | list):
            template[k] = fn.value
        else:
            varying.append((k, fn))

    def build(r: _Record) -> dict[str, Any]:
        d = template.copy()
        for k, fn in varying:
            d[k] = fn(r)
        return d

    return build


def _list_node(nodes: list[Node]) -> Node:
    return lambda r: [fn(r) for fn in nodes]


class _Unfit(ValueError):
    """An example no variation can make valid for this plan."""


@dataclass(frozen=True)
class _Compiled:
    build: Node  # the record body (meta fields and schema fields)
    defect: str | None  # its edge-case type, when it is a defect
    invalid: tuple[str, ...]  # where a defect breaks the schema, in schema order
    t_max: int | None  # its latest timestamp (epoch seconds)
    # It gets a fresh identifier (7 random base-36 characters, or a UUID) each time: its
    # variations cannot repeat, so they need no duplicate check.
    unique: bool = False


class _Compiler:
    """Turns one example into a builder for the plan, checking it once."""

    def __init__(self, plan: Plan, kept: frozenset[str]):
        self.plan = plan
        self.kept = kept  # numbers left as they are: the composer derives or reads them
        self.touched = frozenset(plan.request.constraints.field_constraints)
        self.times: list[int] = []
        self.unique = False
        self.invalid: frozenset[str] = frozenset()

    def example(self, ex: Example) -> _Compiled:
        rec = ex.record
        own = rec.get(EDGE_CASE_KEY)
        kind = ex.edge_case or (own if isinstance(own, str) and own else None)
        if kind is None and own is not None:
            kind = DEFAULT_EDGE_CASE
        meta = [k for k in self.plan.schema.meta_fields if k not in META_KEYS]
        body = {k: v for k, v in rec.items() if not k.startswith("_") or k in meta}
        fields = self.plan.schema.fields
        if kind is not None:
            errs = check_object(fields, body)
            self.invalid = frozenset(e.path for e in errs)
            build = self._d_obj(fields, body, "")
            invalid = tuple(dict.fromkeys(e.path for e in errs))
        else:
            build = self._obj(fields, body, "", [k for k in meta if k in body])
            invalid = ()
        return _Compiled(
            build=build,
            defect=kind,
            invalid=invalid,
            t_max=max(self.times) if self.times else None,
            unique=self.unique,
        )

    # ---- ordinary examples: everything checked here, fresh values made valid --------------
    def _obj(
        self, fields: list[FieldSpec], src: Mapping[str, Any], prefix: str, meta: Sequence[str] = ()
    ) -> Node:
        parts = [f for f in fields if f.semantic in ADDRESS_PARTS]
        addr = tuple(str(src.get(f.name)) for f in parts) if parts else None
        pairs: list[tuple[str, Node]] = [(k, _const(src[k])) for k in meta]
        for f in fields:
            v = src.get(f.name)
            if v is None:
                node = _gen(f) if f.required else _const(None)
            else:
                node = self._value(f, v, prefix + f.name, addr)
            pairs.append((f.name, node))
        return _dict_node(pairs)

    def _value(self, f: FieldSpec, v: Any, path: str, addr: tuple[str, ...] | None) -> Node:
        t = f.type
        if t == FieldType.OBJECT:
            return self._obj(f.nested_fields, v, path + ".") if isinstance(v, dict) else _gen(f)
        if t == FieldType.ARRAY:
            return self._array(f, v, path)
        if t in (FieldType.INTEGER, FieldType.FLOAT):
            if isinstance(v, bool) or not isinstance(v, int | float) or not math.isfinite(v):
                return _gen(f)
            if path in self.kept:
                return _const(v)  # re-derived (or read) by the composer's reconcile
            return _number(f, v)
        if t in (FieldType.DATETIME, FieldType.DATE):
            return self._time(f, v)
        if t == FieldType.ENUM:
            return _const(v) if v in f.constraint.enum_values else _gen(f)
        if t == FieldType.BOOLEAN:
            return _const(v) if isinstance(v, bool) else _gen(f)
        if (fresh := _identity(f, v, addr)) is not None:
            self.unique = self.unique or _random_id(f)
            return _checked(f, fresh) if self._constrained(f, path) else fresh
        return _const(v) if isinstance(v, str) and not check_value(f, v, path) else _gen(f)

    def _constrained(self, f: FieldSpec, path: str) -> bool:
        """Whether a fresh value may break the field's constraint: the entity generators'
        formats meet their own schema's, so only a request's constraints, or a custom
        schema's, need a check per value."""
        c = f.constraint
        if c.regex is None and c.min_length is None and c.max_length is None:
            return False
        return self.plan.composer is None or path in self.touched

    def _time(self, f: FieldSpec, v: Any) -> Node:
        t = _epoch(v)
        if t is None:
            return _gen(f)
        self.times.append(t)
        if f.type == FieldType.DATE:
            return lambda r: r.moved(t)[:10]
        return lambda r: r.moved(t)

    def _array(self, f: FieldSpec, v: Any, path: str) -> Node:
        if not isinstance(v, list):
            return _gen(f)
        lo, hi = array_bounds(f)
        if len(v) < lo:
            raise _Unfit(f"{path} has {len(v)} items, the plan needs at least {lo}")
        items = v[:hi]
        if not f.nested_fields:
            return _gen(f) if check_value(f, items, path) else _const(items)
        nested = f.nested_fields
        return _list_node(
            [
                self._obj(nested, x, path + ".")
                if isinstance(x, dict)
                else (lambda r: gen_object(r.ctx, nested))
                for x in items
            ]
        )

    # ---- defect examples: verbatim but for identities ---------------------------------------
    def _d_obj(self, fields: list[FieldSpec], src: Mapping[str, Any], prefix: str) -> Node:
        known = {f.name: f for f in fields}
        parts = [f for f in fields if f.semantic in ADDRESS_PARTS]
        addr = tuple(str(src.get(f.name)) for f in parts) if parts else None
        pairs: list[tuple[str, Node]] = []
        for k, v in src.items():  # the example's keys, unknown ones and gaps included
            f = known.get(k)
            path = prefix + k
            if f is None or v is None or path in self.invalid:
                pairs.append((k, _const(v)))
            else:
                pairs.append((k, self._d_value(f, v, path, addr)))
        return _dict_node(pairs)

    def _d_value(self, f: FieldSpec, v: Any, path: str, addr: tuple[str, ...] | None) -> Node:
        if f.type == FieldType.OBJECT and isinstance(v, dict):
            return self._d_obj(f.nested_fields, v, path + ".")
        if f.type == FieldType.ARRAY and f.nested_fields and isinstance(v, list):
            return _list_node(
                [
                    self._d_obj(f.nested_fields, x, f"{path}[{j}].")
                    if isinstance(x, dict)
                    else _const(x)
                    for j, x in enumerate(v)
                ]
            )
        if isinstance(v, str) and (fresh := _identity(f, v, addr)) is not None:
            self.unique = self.unique or _random_id(f)
            return fresh
        return _const(v)


def _random_id(f: FieldSpec) -> bool:
    return (f.semantic or "").startswith("id:") or f.type == FieldType.UUID or f.semantic == "uuid"


def _identity(f: FieldSpec, v: Any, addr: tuple[str, ...] | None) -> Node | None:
    """A node making a fresh value for a field that names someone or something."""
    t, sem = f.type, f.semantic or ""
    v = v if isinstance(v, str | int | float) else repr(v)  # the key it is renamed by
    if sem.startswith("id:"):
        return lambda r: r.fresh(v, lambda: r.ctx.ident(sem))
    if t == FieldType.UUID or sem == "uuid":
        return lambda r: r.fresh(v, r.ctx.uuid)
    if sem == "first_name":
        return lambda r: r.names()[0]
    if sem == "last_name":
        return lambda r: r.names()[1]
    if sem == "full_name":
        return lambda r: " ".join(r.names())
    if t == FieldType.EMAIL:
        return lambda r: r.ctx.email_for(*r.names())
    if t == FieldType.PHONE:
        return lambda r: r.fresh(v, r.ctx.phone)
    if addr is not None and sem in ADDRESS_PARTS:
        part = ADDRESS_PARTS[sem]
        return lambda r: r.address(addr)[part]
    if t == FieldType.ADDRESS:
        return lambda r: r.fresh(v, r.ctx.address_line)
    return None


def _number(f: FieldSpec, v: float) -> Node:
    """`v` moved a little (on perturbing attempts) and always inside the constraint."""
    c = f.constraint
    lo = c.min if c.min is not None else -math.inf
    hi = c.max if c.max is not None else math.inf
    if f.type == FieldType.INTEGER:
        n0 = int(min(max(int(v), lo), hi))
        if hi - lo <= SMALL_SCALE:
            return _const(n0)
        step = max(1, round(abs(v) * 0.2))

        def integer(r: _Record) -> int:
            if not r.perturb:
                return n0
            moved = int(v) + int(r.ctx.rng.random() * (2 * step + 1)) - step
            return int(min(max(moved, lo), hi))

        return integer
    if f.semantic == "money":
        clo = math.ceil(lo * 100 - 1e-9) if lo > -math.inf else -math.inf
        chi = math.floor(hi * 100 + 1e-9) if hi < math.inf else math.inf
        cents = round(v * 100)
        c0 = min(max(cents, clo), chi) / 100

        def money(r: _Record) -> float:
            if not r.perturb:
                return c0
            return min(max(round(cents * (0.9 + 0.2 * r.ctx.rng.random())), clo), chi) / 100

        return money
    digits = max(1, min(_decimals(v), 6))
    x0 = min(max(v, lo), hi)

    def number(r: _Record) -> float:
        if not r.perturb:
            return x0
        return min(max(round(v * (0.9 + 0.2 * r.ctx.rng.random()), digits), lo), hi)

    return number


_COMPILED: OrderedDict[tuple[str, str, str | None], _Compiled | str] = OrderedDict()
COMPILED_CACHE = 4096  # compiled examples kept (a few KB each)


def _shape(plan: Plan) -> str:
    """What compiling depends on besides the example: the (request-merged) schema, the
    constraints a request set, whether a composer derives money."""
    body = plan.schema.model_dump_json() + repr(sorted(plan.request.constraints.field_constraints))
    body += type(plan.composer).__name__
    return hashlib.sha256(body.encode()).hexdigest()


def _compile(plan: Plan, kept: frozenset[str], ex: Example, shape: str) -> _Compiled | str:
    """The example's builder, or why it cannot fit the plan; reused across requests for
    keyed examples of the same shape (compiling is a schema walk with checks)."""
    ck = (shape, ex.key, ex.edge_case)
    if ex.key and (hit := _COMPILED.get(ck)) is not None:
        _COMPILED.move_to_end(ck)
        return hit
    try:
        got: _Compiled | str = _Compiler(plan, kept).example(ex)
    except _Unfit as exc:
        got = str(exc)
    if ex.key:
        _COMPILED[ck] = got
        while len(_COMPILED) > COMPILED_CACHE:
            _COMPILED.popitem(last=False)
    return got


class Variation:
    """Varies one plan's records from one list of examples (compiled once per request)."""

    def __init__(self, plan: Plan, examples: Sequence[Example]):
        self.plan = plan
        self.composer = plan.composer
        derived = plan.composer.derived if plan.composer is not None else frozenset()
        kept = derived | MONEY_FIELDS if derived else frozenset()
        self.checks = [  # (path, lower, upper) of each re-derived number
            (
                p.split("."),
                f.constraint.min if f.constraint.min is not None else -math.inf,
                f.constraint.max if f.constraint.max is not None else math.inf,
            )
            for p in sorted(derived)
            if (f := lookup(plan.schema.fields, p)) is not None
        ]
        self.anchor = int(plan.anchor.timestamp())
        usable = [e for e in examples if isinstance(e.record, Mapping)]
        if not usable:
            raise NoExamples("no example record to vary")
        self.examples: list[_Compiled | None] = []
        self.unfit: list[str] = []
        shape = _shape(plan) if any(ex.key for ex in usable) else ""
        for ex in usable:
            compiled = _compile(plan, kept, ex, shape)
            if isinstance(compiled, str):
                self.examples.append(None)
                self.unfit.append(compiled)
            else:
                self.examples.append(compiled)
        latest = [e.t_max for e in self.examples if e is not None and e.t_max is not None]
        self.ref = max(latest) if latest else self.anchor
        self.spread = max(MIN_SPREAD, self.ref - min(latest)) if latest else MIN_SPREAD

    def records(self, start: int, stop: int) -> Varied:
        """Records [start, stop) of the plan; identical however the range is split."""
        out = Varied(records=[])
        if start >= stop:
            return out
        rng = random.Random()
        ctx = Ctx(rng, self.plan.anchor, get_pools())
        first = start - start % BLOCK
        slot = self.plan.slot_for(first)
        seen: set[bytes] = set()  # per block, so chunk-independent
        n = len(self.examples)
        for i in range(first, stop):
            if i % BLOCK == 0:
                rng.seed(block_seed(self.plan, i // BLOCK) ^ RAG_SALT)
                seen.clear()
            if i >= slot.stop:
                slot = self.plan.slot_for(i)
            ex = self.examples[i % n]
            rec = self._one(ctx, ex, i, slot, seen) if ex is not None else None
            if i < start:
                continue  # replayed only to reach `start` with the block's RNG state
            if rec is None:
                out.traditional.append(i)
                (rec,) = generate_records(self.plan, i, i + 1)
            out.records.append(rec)
        return out

    def _one(
        self, ctx: Ctx, ex: _Compiled, i: int, slot: Slot, seen: set[bytes]
    ) -> dict[str, Any] | None:
        for attempt in range(ATTEMPTS):
            rec = self._vary(ctx, ex, i, slot, perturb=attempt != 1)
            if rec is None:
                continue
            if ex.unique and not slot.overrides:  # an override may pin the identifier
                return rec
            key = _key(rec)
            if key not in seen:
                seen.add(key)
                return rec
        return None

    def _vary(
        self, ctx: Ctx, ex: _Compiled, i: int, slot: Slot, *, perturb: bool
    ) -> dict[str, Any] | None:
        r = _Record(ctx, perturb, ex.t_max)
        rng = ctx.rng
        if ex.defect is not None:
            body = {EDGE_CASE_KEY: ex.defect, INVALID_KEY: list(ex.invalid)}
            body.update(ex.build(r))
            rec = finalize(self.plan, i, body, slot)
            if slot.overrides:  # an override may mend or break a path: say which now
                errs = check_object(self.plan.schema.fields, rec)
                rec[INVALID_KEY] = list(dict.fromkeys(e.path for e in errs))
            return rec
        if ex.t_max is not None:
            age = (self.ref - ex.t_max) * (0.5 + rng.random()) + rng.random() * self.spread / 4
            r.new_max = self.anchor - int(age)
            r.scale = 0.75 + 0.5 * rng.random()
        body = ex.build(r)
        if self.checks and self.composer is not None:
            try:
                self.composer.reconcile(body, ("items",))
            except (TypeError, KeyError, ValueError, ZeroDivisionError):
                return None  # money it cannot read: not a coherent record
            if not self._derived_ok(body):
                return None
        return finalize(self.plan, i, body, slot)

    def _derived_ok(self, body: dict[str, Any]) -> bool:
        """Re-derived money inside its constraints (the rest is valid by construction)."""
        for parts, lo, hi in self.checks:
            v: Any = body
            for p in parts:
                v = v.get(p) if isinstance(v, dict) else None
            if v is not None and not lo <= v <= hi:
                return False
        return True


def vary_records(
    plan: Plan, examples: Sequence[Example], start: int, stop: int
) -> list[dict[str, Any]]:
    """Records [start, stop) varied from `examples` (see `Variation` for repeated ranges)."""
    return Variation(plan, examples).records(start, stop).records
