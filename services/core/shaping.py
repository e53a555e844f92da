"""How a request's words shape each scenario's records: roles resolved to fields,
constraints narrowed, values fixed, and everything that could not apply reported.

Explicit constraints and scenario overrides always win: a phrase that disagrees with one
is listed as a contradiction and not applied; a phrase with no field in this entity is
listed as not understood, with the reason.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from typing import Any

from services.core.entities import lookup
from services.core.intent import (
    CONTEXT,
    HINTS,
    Intent,
    Understood,
    scenario_scope,
)
from services.core.models import EntitySchema, FieldConstraint, FieldSpec
from services.core.phrases import resolve_role


@dataclass
class SlotShape:
    """What the words ask of one scenario's records, resolved against the schema."""

    constraints: dict[str, FieldConstraint] = field(default_factory=dict)
    overrides: dict[str, Any] = field(default_factory=dict)


def _bounds(c: FieldConstraint | None) -> tuple[float, float]:
    if c is None:
        return (-float("inf"), float("inf"))
    return (
        c.min if c.min is not None else -float("inf"),
        c.max if c.max is not None else float("inf"),
    )


def _fits(value: Any, f: FieldSpec, c: FieldConstraint | None) -> bool:
    """Does a fixed value satisfy the field's type and a constraint?"""
    if c is None:
        return True
    if c.enum_values and str(value) not in c.enum_values:
        return False
    if isinstance(value, int | float) and not isinstance(value, bool):
        lo, hi = _bounds(c)
        return lo <= value <= hi
    return True


def _describe(c: FieldConstraint) -> str:
    parts = []
    if c.min is not None:
        parts.append(f"min {c.min:g}")
    if c.max is not None:
        parts.append(f"max {c.max:g}")
    if c.enum_values:
        parts.append(f"one of {', '.join(c.enum_values)}")
    return ", ".join(parts) or "no bounds"


@dataclass
class Shaping:
    slots: dict[str, SlotShape]
    intent: Intent  # with what could not apply moved to not_understood / contradictions


def shape(
    intent: Intent,
    schema: EntitySchema,
    slot_names: list[str],
    explicit: dict[str, FieldConstraint],
    scenario_overrides: dict[str, dict[str, Any]],
) -> Shaping:
    """Resolve every understood phrase for every scenario it applies to."""
    unplaced: dict[Understood, str] = {}
    contradictions: dict[str, None] = {}
    shapes: dict[str, SlotShape] = {}
    for name in slot_names:
        own = scenario_overrides.get(name, {})
        sh = SlotShape()
        for u in intent.understood:
            if u.match is None or u.scope not in (CONTEXT, HINTS, scenario_scope(name)):
                continue
            for role, c in u.match.constraints:
                path = resolve_role(schema, role)
                f = lookup(schema.fields, path) if path else None
                if path is None or f is None:
                    unplaced[u] = f"no field for it in {schema.name!r}"
                    continue
                base = sh.constraints.get(path, f.constraint)
                merged = _narrow(base, c)
                exp = explicit.get(path)
                if merged is None or (exp is not None and _narrow(exp, c) is None):
                    why = (
                        f"the explicit constraint on {path} ({_describe(exp)})"
                        if exp is not None
                        else f"{path} ({_describe(base)})"
                    )
                    contradictions[
                        f"{u.scope}: {u.phrase!r} ({u.meaning}) contradicts {why}; "
                        f"the phrase is not applied"
                    ] = None
                    continue
                if path in own:
                    contradictions[
                        f"{u.scope}: {u.phrase!r} ({u.meaning}) is overruled by the "
                        f"scenario override {path}={own[path]!r}"
                    ] = None
                    continue
                sh.constraints[path] = merged
            for role, value in u.match.overrides:
                path = resolve_role(schema, role, value)
                f = lookup(schema.fields, path) if path else None
                if path is None or f is None:
                    unplaced[u] = f"no field for it in {schema.name!r}"
                    continue
                exp = explicit.get(path)
                if path in own and own[path] != value:
                    contradictions[
                        f"{u.scope}: {u.phrase!r} ({u.meaning}) is overruled by the "
                        f"scenario override {path}={own[path]!r}"
                    ] = None
                elif exp is not None and not _fits(value, f, exp):
                    contradictions[
                        f"{u.scope}: {u.phrase!r} ({u.meaning}) contradicts the "
                        f"explicit constraint on {path} ({_describe(exp)}); "
                        "the phrase is not applied"
                    ] = None
                elif not _fits(value, f, sh.constraints.get(path, f.constraint)):
                    unplaced[u] = f"{value!r} is not allowed for {path}"
                else:
                    sh.overrides[path] = value
        shapes[name] = sh
    understood = tuple(u for u in intent.understood if u not in unplaced)
    not_understood = (
        *intent.not_understood,
        *(f"{u.scope}: {u.phrase} ({u.meaning}: {why})" for u, why in unplaced.items()),
    )
    return Shaping(
        slots=shapes,
        intent=replace(
            intent,
            understood=understood,
            not_understood=not_understood,
            contradictions=(*intent.contradictions, *contradictions),
        ),
    )


def _narrow(base: FieldConstraint, c: FieldConstraint) -> FieldConstraint | None:
    """`base` narrowed by `c`; None when nothing satisfies both."""
    lo0, hi0 = _bounds(base)
    lo1, hi1 = _bounds(c)
    lo, hi = max(lo0, lo1), min(hi0, hi1)
    if lo > hi:
        return None
    enum = base.enum_values
    if c.enum_values:
        enum = [v for v in c.enum_values if not base.enum_values or v in base.enum_values]
        if not enum:
            return None
    return base.model_copy(
        update={
            "min": None if lo == -float("inf") else lo,
            "max": None if hi == float("inf") else hi,
            "enum_values": enum,
        }
    )


def with_constraints(schema: EntitySchema, constraints: dict[str, FieldConstraint]) -> EntitySchema:
    """The schema with these constraints replacing its fields' (already narrowed)."""
    if not constraints:
        return schema

    def walk(fields: list[FieldSpec], prefix: str) -> list[FieldSpec]:
        out = []
        for f in fields:
            path = prefix + f.name
            update: dict[str, Any] = {}
            if path in constraints:
                update["constraint"] = constraints[path]
            if f.nested_fields and any(p.startswith(path + ".") for p in constraints):
                update["nested_fields"] = walk(f.nested_fields, path + ".")
            out.append(f.model_copy(update=update) if update else f)
        return out

    return schema.model_copy(update={"fields": walk(schema.fields, "")})
