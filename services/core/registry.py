"""Entity schemas: loaded from schemas/entities/*.json, checked on load, listed by domain."""

from __future__ import annotations

import json
import math
from pathlib import Path

from pydantic import ValidationError

from services.core import regexgen
from services.core.errors import SchemaFileError, UnsupportedRegex
from services.core.limits import Limits
from services.core.models import (
    TEXT_TYPES,
    EntitySchema,
    FieldConstraint,
    FieldError,
    FieldSpec,
    FieldType,
    RequestField,
)
from services.core.pools import SCHEMAS_DIR
from services.core.problems import MAX_REPORTED
from services.core.validate import bad_text

NUMERIC = (FieldType.INTEGER, FieldType.FLOAT)
# Bounds on what one value may be: a test-data request must not be able to ask for a
# gigabyte string or a million-item array (one record has to fit in a result chunk).
# The defaults of `Limits`; a deployment may set others (Settings).
_DEFAULT = Limits()
MAX_TEXT = _DEFAULT.max_text
MAX_ITEMS = _DEFAULT.max_array_items
CONTAINERS = (FieldType.OBJECT, FieldType.ARRAY)
# Fields whose values have a fixed length, and the lengths they may have otherwise.
FIXED_LENGTH = {FieldType.UUID: 36, FieldType.DATE: 10, FieldType.DATETIME: 20}
EMAIL_MIN = 6  # a@b.io: the shortest address the validator accepts
PHONE_LENGTHS = (7, 21)  # what the validator's phone pattern accepts
LENGTH_TYPES = TEXT_TYPES
REGEX_TYPES = (FieldType.STRING, FieldType.ADDRESS, FieldType.ENUM)


def _numbers(c: FieldConstraint, path: str, limits: Limits) -> list[FieldError]:
    errs = []
    for bound in ("min", "max"):
        v = getattr(c, bound)
        if v is None:
            continue
        if not math.isfinite(v):
            errs.append(
                FieldError(path=f"{path}.{bound}", message="must be a finite number", value=v)
            )
        elif abs(v) > limits.max_magnitude:
            errs.append(
                FieldError(
                    path=f"{path}.{bound}",
                    value=v,
                    message=f"must be within ±{limits.max_magnitude:g}",
                )
            )
    return errs


def check_constraint(
    c: FieldConstraint,
    ftype: FieldType,
    path: str,
    limits: Limits | None = None,
    nested: bool = False,
) -> list[FieldError]:
    """Every reason this constraint cannot be honoured on a field of this type (`nested`:
    an ARRAY of objects): what passes here, the generator meets for every record."""
    limits = limits or Limits()
    if errs := _numbers(c, path, limits):
        return errs
    errs = []
    if c.min is not None and c.max is not None and c.min > c.max:
        errs.append(
            FieldError(path=f"{path}.min", message=f"min {c.min} is above max {c.max}", value=c.min)
        )
    if (c.min is not None or c.max is not None) and ftype not in (*NUMERIC, FieldType.ARRAY):
        errs.append(
            FieldError(
                path=path,
                message=f"min/max need an INTEGER, FLOAT or ARRAY field, not {ftype.value}",
            )
        )
    if (
        ftype == FieldType.INTEGER
        and c.min is not None
        and c.max is not None
        and math.ceil(c.min) > math.floor(c.max)
    ):
        errs.append(FieldError(path=path, message=f"no integer lies in [{c.min}, {c.max}]"))
    if ftype == FieldType.ARRAY:
        for bound in ("min", "max"):
            v = getattr(c, bound)
            if v is not None and not (v == int(v) and 0 <= v <= limits.max_array_items):
                errs.append(
                    FieldError(
                        path=f"{path}.{bound}",
                        value=v,
                        message=f"an array holds at most {limits.max_array_items} items "
                        "(a whole number from 0)",
                    )
                )
    if c.enum_values and ftype != FieldType.ENUM:
        errs.append(
            FieldError(
                path=f"{path}.enum_values",
                message=f"enum_values need an ENUM field, not {ftype.value}",
                value=c.enum_values,
            )
        )
    errs += _enum_values(c, path, limits)
    length_errs = _lengths(c, ftype, path, limits, nested)
    errs += length_errs
    if c.regex is not None:
        errs += _regex(c, ftype, path, limits, lengths_ok=not length_errs)
    if c.format is not None and len(c.format) > limits.max_name_length:
        errs.append(
            FieldError(path=f"{path}.format", message=f"longer than {limits.max_name_length}")
        )
    return errs


def _enum_values(c: FieldConstraint, path: str, limits: Limits) -> list[FieldError]:
    where = f"{path}.enum_values"
    if len(c.enum_values) > limits.max_enum_values:
        return [
            FieldError(
                path=where,
                value=len(c.enum_values),
                message=f"{len(c.enum_values)} values, above the limit of {limits.max_enum_values}",
            )
        ]
    errs = []
    for i, v in enumerate(c.enum_values):
        if len(v) > limits.max_enum_value_length:
            errs.append(
                FieldError(
                    path=f"{where}[{i}]",
                    value=v,
                    message=f"longer than {limits.max_enum_value_length} characters",
                )
            )
        elif (why := bad_text(v)) is not None:
            errs.append(FieldError(path=f"{where}[{i}]", value=v, message=why))
        if len(errs) >= MAX_REPORTED:
            break
    return errs


def _lengths(
    c: FieldConstraint, ftype: FieldType, path: str, limits: Limits, nested: bool
) -> list[FieldError]:
    errs = []
    for bound in ("min_length", "max_length"):
        v = getattr(c, bound)
        if v is not None and not 0 <= v <= limits.max_text:
            errs.append(
                FieldError(path=f"{path}.{bound}", message=f"must be 0..{limits.max_text}", value=v)
            )
    if errs:
        return errs
    lo, hi = c.min_length, c.max_length
    if lo is not None and hi is not None and lo > hi:
        return [
            FieldError(
                path=f"{path}.min_length",
                message=f"min_length {lo} is above max_length {hi}",
                value=lo,
            )
        ]
    if lo is None and hi is None:
        return []
    a, b = lo or 0, limits.max_text if hi is None else hi
    if ftype not in LENGTH_TYPES and not (ftype == FieldType.ARRAY and not nested):
        return [
            FieldError(
                path=path,
                message="min_length/max_length need a text field or an ARRAY of strings, "
                f"not {ftype.value}{' of objects' if nested else ''}",
            )
        ]
    reason = None
    if ftype in FIXED_LENGTH and not a <= FIXED_LENGTH[ftype] <= b:
        reason = f"a {ftype.value} is always {FIXED_LENGTH[ftype]} characters"
    elif ftype == FieldType.EMAIL and b < EMAIL_MIN:
        reason = f"the shortest email address is {EMAIL_MIN} characters"
    elif ftype == FieldType.PHONE and (b < PHONE_LENGTHS[0] or a > PHONE_LENGTHS[1]):
        reason = f"a phone number has {PHONE_LENGTHS[0]}..{PHONE_LENGTHS[1]} characters"
    elif ftype == FieldType.ENUM:
        bad = [v for v in c.enum_values if not a <= len(v) <= b][:3]
        if bad:
            reason = f"enum values {bad} are outside {a}..{b} characters"
    if reason:
        return [FieldError(path=path, message=f"min_length/max_length cannot be met: {reason}")]
    return []


def regex_too_long(hi: int, limits: Limits) -> str:
    return (
        f"matches can be {hi:,} characters, longer than {limits.max_text} "
        f"(each * or + counts as {regexgen.UNBOUNDED_CAP} repeats)"
    )


def _regex(
    c: FieldConstraint, ftype: FieldType, path: str, limits: Limits, lengths_ok: bool
) -> list[FieldError]:
    assert c.regex is not None
    where = f"{path}.regex"

    def err(message: str) -> list[FieldError]:
        return [FieldError(path=where, value=c.regex, message=message)]

    if ftype not in REGEX_TYPES:
        return err(
            f"regex needs a STRING, ADDRESS or ENUM field, not {ftype.value}"
            + (
                ""
                if ftype in (*NUMERIC, FieldType.BOOLEAN, *CONTAINERS)
                else f" ({ftype.value} values have their own format; use a STRING field)"
            )
        )
    if len(c.regex) > limits.max_regex_length:
        return err(f"pattern longer than {limits.max_regex_length} characters")
    try:
        p = regexgen.compile_pattern(c.regex)
    except UnsupportedRegex as exc:
        return err(regexgen.refusal(exc))
    if p.hi > limits.max_text:
        return err(regex_too_long(p.hi, limits))
    if p.cost > limits.max_regex_cost:
        return err(
            f"too costly to match in linear time (estimated RE2 program {p.cost:,} "
            f"> {limits.max_regex_cost:,}); ASCII classes ([0-9], [A-Za-z0-9_] or (?a)) "
            "cost far less than Unicode \\d \\w"
        )
    try:
        match = p.ready()
    except UnsupportedRegex as exc:
        return err(regexgen.refusal(exc))
    if ftype == FieldType.ENUM:
        bad = [v for v in c.enum_values if bad_text(v) is None and not match(v)][:3]
        return err(f"enum values {bad} do not match it") if bad else []
    if lengths_ok and not regexgen.allowed_lengths(c.regex, c.min_length, c.max_length):
        return err(
            f"regex cannot match within min_length/max_length (its matches are "
            f"{p.lo}..{p.hi} characters)"
        )
    return []


def check_fields(
    fields: list[FieldSpec],
    prefix: str = "",
    skip: frozenset[str] = frozenset(),
    limits: Limits | None = None,
) -> list[FieldError]:
    """Schema problems; constraints at paths in `skip` are reported by their owner.
    Recursion is as deep as the schema, which the planner has bounded first."""
    limits = limits or Limits()
    errs: list[FieldError] = []
    seen: set[str] = set()
    duplicates = 0
    for i, f in enumerate(fields):
        path = f"{prefix}{f.name}" if f.name else f"{prefix}[{i}]"
        if not f.name or not f.name.replace("_", "a").isalnum():
            errs.append(
                FieldError(
                    path=path,
                    message="field name must be non-empty letters, digits or _",
                    value=f.name,
                )
            )
        if f.name in seen:
            duplicates += 1
            if duplicates <= MAX_REPORTED:
                errs.append(FieldError(path=path, message="duplicate field name"))
            continue
        seen.add(f.name)
        if f.nested_fields and f.type not in CONTAINERS:
            errs.append(
                FieldError(
                    path=path, message=f"nested_fields need OBJECT or ARRAY, not {f.type.value}"
                )
            )
        if f.type == FieldType.OBJECT and not f.nested_fields:
            errs.append(FieldError(path=path, message="OBJECT field needs nested_fields"))
        if f.type == FieldType.ENUM and not f.constraint.enum_values:
            errs.append(
                FieldError(
                    path=path,
                    message="ENUM field needs enum_values "
                    "(constraints.field_constraints[...].enum_values)",
                )
            )
        if not 0 <= f.min_items <= f.max_items <= limits.max_array_items:
            errs.append(
                FieldError(
                    path=path,
                    message=f"need 0 <= min_items <= max_items <= {limits.max_array_items}",
                )
            )
        if path not in skip:
            errs += check_constraint(
                f.constraint, f.type, path, limits, nested=bool(f.nested_fields)
            )
        errs += check_fields(f.nested_fields, f"{path}.", skip, limits)
    if duplicates > MAX_REPORTED:
        errs.append(
            FieldError(
                path=prefix.rstrip("."),
                message=f"{duplicates} duplicate field names in all",
                value=duplicates,
            )
        )
    return errs


class SchemaRegistry:
    """Known entities by name; the source for GetSchemas and for request resolution."""

    def __init__(self, entities: dict[str, EntitySchema]):
        self._entities = entities

    @classmethod
    def load(cls, directory: Path | None = None) -> SchemaRegistry:
        directory = directory or SCHEMAS_DIR / "entities"
        entities: dict[str, EntitySchema] = {}
        for path in sorted(directory.glob("*.json")):
            try:
                schema = EntitySchema.model_validate(json.loads(path.read_text()))
            except (ValidationError, json.JSONDecodeError) as exc:
                raise SchemaFileError(f"{path.name}: {exc}") from exc
            if errs := check_fields(schema.fields):
                raise SchemaFileError(f"{path.name}: " + "; ".join(map(str, errs)))
            if schema.name in entities:
                raise SchemaFileError(f"{path.name}: entity {schema.name!r} defined twice")
            entities[schema.name] = schema
        if not entities:
            raise SchemaFileError(f"no entity schemas in {directory}")
        return cls(entities)

    def get(self, name: str) -> EntitySchema | None:
        return self._entities.get(name.strip().lower())

    def names(self) -> list[str]:
        return sorted(self._entities)

    def list(self, domain: str | None = None) -> list[EntitySchema]:
        d = (domain or "").strip().lower()
        return [s for n, s in sorted(self._entities.items()) if not d or s.domain == d]


# Custom fields get realistic values when their names say what they hold.
_SEMANTIC_BY_NAME = {
    "first_name": "first_name",
    "firstname": "first_name",
    "given_name": "first_name",
    "last_name": "last_name",
    "lastname": "last_name",
    "surname": "last_name",
    "name": "full_name",
    "full_name": "full_name",
    "customer_name": "full_name",
    "city": "city",
    "state": "state",
    "zip": "postcode",
    "zipcode": "postcode",
    "postal_code": "postcode",
    "postcode": "postcode",
    "street": "street_address",
    "street_address": "street_address",
    "line1": "street_address",
    "company": "company",
    "description": "sentence",
    "comment": "sentence",
    "notes": "sentence",
    "body": "sentence",
    "title": "title",
    "sku": "sku",
    "product_name": "product_name",
    "category": "category",
    "brand": "brand",
    "country": "country",
}
_MONEY_WORDS = ("price", "amount", "cost", "total", "subtotal", "tax", "fee", "balance")


def infer_semantic(name: str, ftype: FieldType) -> str | None:
    n = name.lower()
    if ftype == FieldType.STRING:
        if n in _SEMANTIC_BY_NAME:
            return _SEMANTIC_BY_NAME[n]
        if n.endswith("_id") or n == "id":
            return "uuid"
    if ftype == FieldType.FLOAT and any(w in n for w in _MONEY_WORDS):
        return "money"
    return None


def fields_from_request(fields: list[RequestField]) -> list[FieldSpec]:
    """A caller's proto-shaped fields as generator FieldSpecs (constraints merged later)."""
    return [
        FieldSpec(
            name=f.name,
            type=f.type,
            required=f.required,
            description=f.description,
            semantic=infer_semantic(f.name, f.type),
            nested_fields=fields_from_request(f.nested_fields),
        )
        for f in fields
    ]
