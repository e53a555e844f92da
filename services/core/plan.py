"""Turns a request into a checked, resolved generation plan, or every reason it can't.

Everything that could fail mid-stream is decided here, before the first record: the
schema, merged constraints, scenario slots, coerced overrides, basket feasibility.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from services.core.entities import COMPOSERS, Composer, lookup
from services.core.limits import Limits
from services.core.models import (
    DEFAULT_ANCHOR,
    EntitySchema,
    FieldConstraint,
    FieldError,
    FieldSpec,
    FieldType,
    GenerateRequest,
    RequestInvalid,
)
from services.core.registry import (
    SchemaRegistry,
    check_constraint,
    check_fields,
    fields_from_request,
)
from services.core.values import utc

__all__ = ["Limits", "Plan", "Slot", "build_plan"]

DEFAULT_SCENARIO = "default"


@dataclass(frozen=True)
class Slot:
    name: str
    start: int
    stop: int
    overrides: dict[str, Any]


@dataclass(frozen=True)
class Plan:
    request: GenerateRequest
    schema: EntitySchema
    count: int
    slots: tuple[Slot, ...]
    seed: int
    anchor: datetime
    base_seed: int
    composer: Composer | None
    # Fields whose request constraints a composer does not model: regenerated generically.
    enforce: tuple[str, ...] = field(default=())

    def scenario_counts(self) -> dict[str, int]:
        return {s.name: s.stop - s.start for s in self.slots}

    def slot_for(self, index: int) -> Slot:
        for s in self.slots:
            if index < s.stop:
                return s
        raise IndexError(index)


def fingerprint(request: GenerateRequest) -> bytes:
    """Canonical bytes of what determines the records (not id, format or cache use)."""
    body = request.model_dump(
        mode="json", by_alias=True, exclude={"request_id", "output_format", "use_cache"}
    )
    return json.dumps(body, sort_keys=True, separators=(",", ":")).encode()


def base_seed(request: GenerateRequest, seed: int) -> int:
    h = hashlib.sha256(fingerprint(request) + b"|" + str(seed).encode()).digest()
    return int.from_bytes(h[:8], "big")


def resolve_schema(
    req: GenerateRequest, registry: SchemaRegistry, errs: list[FieldError]
) -> tuple[EntitySchema | None, bool]:
    """The entity schema and whether it is predefined (composer-backed)."""
    if req.schema_.fields:
        name = (req.entity or req.schema_.predefined_schema or "custom").strip().lower()
        fields = fields_from_request(req.schema_.fields)
        return EntitySchema(name=name, domain=req.domain or "custom", fields=fields), False
    name = req.schema_.predefined_schema or req.entity
    if not name.strip():
        errs.append(
            FieldError(
                path="entity",
                message="entity is required (or schema.fields "
                f"for a custom schema); known: {', '.join(registry.names())}",
            )
        )
        return None, False
    schema = registry.get(name)
    if schema is None:
        path = "schema.predefined_schema" if req.schema_.predefined_schema else "entity"
        errs.append(
            FieldError(
                path=path,
                value=name,
                message=f"unknown entity {name!r} and no "
                f"schema.fields given; known: {', '.join(registry.names())}",
            )
        )
        return None, False
    return schema, True


def apply_constraints(
    req: GenerateRequest, schema: EntitySchema, errs: list[FieldError]
) -> tuple[EntitySchema, list[str]]:
    """Schema with request constraints merged in; also the paths they touch.

    Only the fields on a constrained path are copied: registry schemas are shared and
    never mutated, and most requests carry no constraints at all.
    """
    if not req.constraints.field_constraints:
        return schema, []
    fields = list(schema.fields)
    touched = []
    for path, c in req.constraints.field_constraints.items():
        where = f"constraints.field_constraints[{path}]"
        if lookup(fields, path) is None:
            errs.append(
                FieldError(path=where, message=f"no field {path!r} in {schema.name}", value=path)
            )
            continue
        fields = _replace(fields, path.split("."), c)
        f = lookup(fields, path)
        assert f is not None
        errs.extend(check_constraint(f.constraint, f.type, where))
        touched.append(path)
    return schema.model_copy(update={"fields": fields}), touched


def _replace(fields: list[FieldSpec], parts: list[str], c: FieldConstraint) -> list[FieldSpec]:
    """A new field list where the field at `parts` has `c` merged into its constraint."""
    out = []
    for f in fields:
        if f.name != parts[0]:
            out.append(f)
        elif len(parts) == 1:
            out.append(f.model_copy(update={"constraint": f.constraint.merged(c)}))
        else:
            out.append(
                f.model_copy(update={"nested_fields": _replace(f.nested_fields, parts[1:], c)})
            )
    return out


def coerce(f: FieldSpec, raw: str) -> Any:
    """An override's string as the field's type; ValueError says why not."""
    t = f.type
    if raw.strip().lower() == "null":
        if f.required:
            raise ValueError("null given for a required field")
        return None
    if t == FieldType.INTEGER:
        return int(raw)
    if t == FieldType.FLOAT:
        return float(raw)
    if t == FieldType.BOOLEAN:
        low = raw.strip().lower()
        if low not in ("true", "false", "1", "0", "yes", "no"):
            raise ValueError(f"{raw!r} is not a boolean")
        return low in ("true", "1", "yes")
    if t in (FieldType.OBJECT, FieldType.ARRAY):
        v = json.loads(raw)
        if not isinstance(v, dict if t == FieldType.OBJECT else list):
            raise ValueError(f"expected a JSON {t.value.lower()}")
        return v
    return raw


def build_slots(
    req: GenerateRequest, schema: EntitySchema, limits: Limits, errs: list[FieldError]
) -> tuple[int, list[Slot]]:
    from services.core.validate import check_value  # local: validate imports plan types

    count = req.count
    given = [s.count for s in req.scenarios]
    if count < 0:
        errs.append(
            FieldError(
                path="count",
                value=count,
                message=f"count must be >= 0 (0 means the default, {limits.default_count})",
            )
        )
        count = 0
    for i, s in enumerate(req.scenarios):
        if s.count < 0:
            errs.append(
                FieldError(path=f"scenarios[{i}].count", value=s.count, message="must be >= 0")
            )
        if not s.name.strip():
            errs.append(FieldError(path=f"scenarios[{i}].name", message="must not be empty"))
    names = [s.name for s in req.scenarios]
    for n in {n for n in names if names.count(n) > 1}:
        errs.append(FieldError(path="scenarios", value=n, message=f"duplicate scenario {n!r}"))
    fixed = sum(c for c in given if c > 0)
    if count == 0:
        count = fixed if fixed and all(c > 0 for c in given) else limits.default_count
        count = max(count, fixed)
    if count > limits.max_records:
        errs.append(
            FieldError(
                path="count",
                value=count,
                message=f"count {count} is above the limit of {limits.max_records}",
            )
        )
    if req.scenarios:
        free = [i for i, c in enumerate(given) if c <= 0]
        if fixed > count or (not free and fixed != count):
            errs.append(
                FieldError(
                    path="scenarios",
                    value=given,
                    message=f"scenario counts add up to {fixed} but count is {count}",
                )
            )
    overrides: list[dict[str, Any]] = []
    for i, s in enumerate(req.scenarios):
        coerced: dict[str, Any] = {}
        for path, raw in s.overrides.items():
            where = f"scenarios[{i}].overrides[{path}]"
            f = lookup(schema.fields, path)
            if f is None:
                errs.append(FieldError(path=where, message=f"no field {path!r}", value=path))
                continue
            try:
                v = coerce(f, raw)
            except ValueError as exc:
                errs.append(
                    FieldError(path=where, value=raw, message=f"not a valid {f.type.value}: {exc}")
                )
                continue
            if v is not None:
                errs.extend(
                    FieldError(path=where, message=e.message, value=raw)
                    for e in check_value(f, v, where)
                )
            coerced[path] = v
        overrides.append(coerced)
    if errs:
        return count, []
    if not req.scenarios:
        return count, [Slot(DEFAULT_SCENARIO, 0, count, {})]
    counts = list(given)
    free = [i for i, c in enumerate(given) if c <= 0]
    rest = count - fixed
    for j, i in enumerate(free):
        counts[i] = rest // len(free) + (1 if j < rest % len(free) else 0)
    slots, start = [], 0
    for s, c, ov in zip(req.scenarios, counts, overrides, strict=True):
        slots.append(Slot(s.name, start, start + c, ov))
        start += c
    return count, slots


def build_plan(
    req: GenerateRequest, registry: SchemaRegistry, limits: Limits | None = None
) -> Plan:
    """Check the whole request; raise RequestInvalid listing every problem found."""
    limits = limits or Limits()
    errs: list[FieldError] = []
    schema, predefined = resolve_schema(req, registry, errs)
    if schema is None:
        build_slots(req, EntitySchema(name="?", fields=[]), limits, errs)
        raise RequestInvalid(errs)
    schema, touched = apply_constraints(req, schema, errs)
    if not predefined:  # checked after merging: ENUM values may come from constraints
        errs.extend(
            FieldError(path=f"schema.fields.{e.path}", message=e.message, value=e.value)
            for e in check_fields(schema.fields, skip=frozenset(touched))
        )
    count, slots = build_slots(req, schema, limits, errs)
    if errs:
        raise RequestInvalid(errs)
    composer = COMPOSERS[schema.name](schema) if predefined and schema.name in COMPOSERS else None
    if composer is not None and (errs := composer.check()):
        raise RequestInvalid(errs)
    enforce = tuple(p for p in touched if _needs_enforcement(schema, p)) if composer else ()
    seed = req.seed if req.seed is not None else 0
    anchor = utc(req.anchor) if req.anchor is not None else DEFAULT_ANCHOR
    return Plan(
        request=req,
        schema=schema,
        count=count,
        slots=tuple(slots),
        seed=seed,
        anchor=anchor,
        base_seed=base_seed(req, seed),
        composer=composer,
        enforce=enforce,
    )


def _needs_enforcement(schema: EntitySchema, path: str) -> bool:
    f = lookup(schema.fields, path)
    c = f.constraint if f else None
    return bool(
        f
        and c
        and f.type
        not in (
            FieldType.INTEGER,
            FieldType.FLOAT,
            FieldType.ENUM,
            FieldType.ARRAY,
            FieldType.OBJECT,
        )
        and (c.regex or c.min_length is not None or c.max_length is not None)
    )
