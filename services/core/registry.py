"""Entity schemas: loaded from schemas/entities/*.json, checked on load, listed by domain."""

from __future__ import annotations

import json
from pathlib import Path

from pydantic import ValidationError

from services.core.models import (
    EntitySchema,
    FieldConstraint,
    FieldError,
    FieldSpec,
    FieldType,
    RequestField,
)
from services.core.pools import SCHEMAS_DIR
from services.core.regexgen import (
    UnsupportedRegex,
    check_regex,
    compile_pattern,
    length_bounds,
    refusal,
)

NUMERIC = (FieldType.INTEGER, FieldType.FLOAT)
# Bounds on what one value may be: a test-data request must not be able to ask for a
# gigabyte string or a million-item array (one record has to fit in a result chunk).
MAX_TEXT = 10_000
MAX_ITEMS = 1_000
CONTAINERS = (FieldType.OBJECT, FieldType.ARRAY)


class SchemaFileError(ValueError):
    """A schema file that is not a valid entity schema: the service refuses to start."""


def check_constraint(c: FieldConstraint, ftype: FieldType, path: str) -> list[FieldError]:
    """Every reason this constraint cannot be honoured on a field of this type."""
    errs: list[FieldError] = []
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
    if ftype == FieldType.INTEGER and c.min is not None and c.max is not None:
        import math

        if math.ceil(c.min) > math.floor(c.max):
            errs.append(FieldError(path=path, message=f"no integer lies in [{c.min}, {c.max}]"))
    if c.enum_values and ftype != FieldType.ENUM:
        errs.append(
            FieldError(
                path=f"{path}.enum_values",
                message=f"enum_values need an ENUM field, not {ftype.value}",
                value=c.enum_values,
            )
        )
    for bound in ("min_length", "max_length"):
        v = getattr(c, bound)
        if v is not None and not 0 <= v <= MAX_TEXT:
            errs.append(
                FieldError(path=f"{path}.{bound}", message=f"must be 0..{MAX_TEXT}", value=v)
            )
    if ftype == FieldType.ARRAY and c.max is not None and c.max > MAX_ITEMS:
        errs.append(
            FieldError(
                path=f"{path}.max", value=c.max, message=f"an array holds at most {MAX_ITEMS} items"
            )
        )
    if c.min_length is not None and c.max_length is not None and c.min_length > c.max_length:
        errs.append(
            FieldError(
                path=f"{path}.min_length",
                message=f"min_length {c.min_length} is above max_length {c.max_length}",
                value=c.min_length,
            )
        )
    if c.regex is not None:
        if ftype in (*NUMERIC, FieldType.BOOLEAN, *CONTAINERS):
            errs.append(
                FieldError(
                    path=f"{path}.regex", message=f"regex needs a text field, not {ftype.value}"
                )
            )
        elif (reason := _regex_reason(c.regex)) is not None:
            errs.append(FieldError(path=f"{path}.regex", message=reason, value=c.regex))
        else:
            lo, hi = length_bounds(c.regex)
            if lo > MAX_TEXT:
                errs.append(
                    FieldError(
                        path=f"{path}.regex",
                        value=c.regex,
                        message=f"matches are longer than {MAX_TEXT} characters",
                    )
                )
            elif (c.max_length is not None and lo > c.max_length) or (
                c.min_length is not None and hi < c.min_length
            ):
                errs.append(
                    FieldError(
                        path=f"{path}.regex",
                        value=c.regex,
                        message="regex cannot match within min_length/max_length",
                    )
                )
    return errs


def _regex_reason(pattern: str) -> str | None:
    """Why a pattern is refused. Its longest match is checked before RE2 compiles it:
    an RE2 program grows with its repeats."""
    try:
        p = compile_pattern(pattern)
    except UnsupportedRegex as exc:
        return refusal(exc)
    if p.hi > MAX_TEXT:
        return f"matches are longer than {MAX_TEXT} characters"
    return check_regex(pattern)


def check_fields(
    fields: list[FieldSpec], prefix: str = "", skip: frozenset[str] = frozenset()
) -> list[FieldError]:
    """Schema problems; constraints at paths in `skip` are reported by their owner."""
    errs: list[FieldError] = []
    seen: set[str] = set()
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
            errs.append(FieldError(path=path, message="duplicate field name"))
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
        if not 0 <= f.min_items <= f.max_items <= MAX_ITEMS:
            errs.append(
                FieldError(path=path, message=f"need 0 <= min_items <= max_items <= {MAX_ITEMS}")
            )
        if path not in skip:
            errs += check_constraint(f.constraint, f.type, path)
        errs += check_fields(f.nested_fields, f"{path}.", skip)
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
