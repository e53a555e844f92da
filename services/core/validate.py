"""Record validation against an entity schema: every error, with its path and value."""

from __future__ import annotations

import math
import re
import uuid
from datetime import date, datetime
from typing import Any

from services.core import regexgen
from services.core.errors import UnsupportedRegex
from services.core.models import (
    TEXT_TYPES,
    EntitySchema,
    FieldConstraint,
    FieldError,
    FieldSpec,
    FieldType,
)
from services.core.values import array_bounds

# Our own patterns, fixed and linear on any input; callers' patterns go through RE2.
EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[A-Za-z]{2,}$")
PHONE_RE = re.compile(r"^\+?[\d\s().-]{7,20}$")


INT64 = 1 << 63  # what JSON encoders, Avro longs and SQL integers carry


def bad_text(v: str) -> str | None:
    """Why a string cannot be a value at all (every format must carry it), or None."""
    if "\x00" in v:
        return "contains a NUL character"
    if not v.isascii():
        try:
            v.encode("utf-8")
        except UnicodeEncodeError:
            return "is not valid Unicode (lone surrogate)"
    return None


def _matches(pattern: str, v: str) -> bool:
    """Whole-string match in linear time (RE2), with Python's meaning (see regexgen)."""
    try:
        return regexgen.matcher(pattern)(v)
    except UnsupportedRegex:
        return False  # the planner refuses such patterns; a value cannot be shown to match


def _type_error(f: FieldSpec, v: Any) -> str | None:
    t = f.type
    if t in TEXT_TYPES:
        if not isinstance(v, str):
            return f"expected a string for {t.value}, got {type(v).__name__}"
        try:
            if t == FieldType.EMAIL and not EMAIL_RE.match(v):
                return "not an email address"
            if t == FieldType.PHONE and not PHONE_RE.match(v):
                return "not a phone number"
            if t == FieldType.UUID:
                uuid.UUID(v)
            if t == FieldType.DATE:
                date.fromisoformat(v)
            if t == FieldType.DATETIME:
                datetime.fromisoformat(v.replace("Z", "+00:00"))
        except ValueError:
            return f"not a valid {t.value}"
        return None
    if t == FieldType.INTEGER:
        if isinstance(v, bool) or not isinstance(v, int):
            return f"expected an integer, got {type(v).__name__}"
        if not -INT64 <= v < INT64:
            return "integer out of the 64-bit range"
    if t == FieldType.FLOAT:
        if isinstance(v, bool) or not isinstance(v, int | float):
            return f"expected a number, got {type(v).__name__}"
        if isinstance(v, float) and not math.isfinite(v):
            return "not a finite number"
        if isinstance(v, int) and not -INT64 <= v < INT64:
            return "number out of the 64-bit range"
    if t == FieldType.BOOLEAN and not isinstance(v, bool):
        return f"expected a boolean, got {type(v).__name__}"
    if t == FieldType.OBJECT and not isinstance(v, dict):
        return f"expected an object, got {type(v).__name__}"
    if t == FieldType.ARRAY and not isinstance(v, list):
        return f"expected an array, got {type(v).__name__}"
    return None


def check_value(f: FieldSpec, v: Any, path: str) -> list[FieldError]:
    """Type, constraint and nested checks for one present, non-null value."""
    if (msg := _type_error(f, v)) is not None:
        return [FieldError(path=path, message=msg, value=v)]
    c = f.constraint
    errs: list[FieldError] = []
    if f.type in (FieldType.INTEGER, FieldType.FLOAT):
        if c.min is not None and v < c.min:
            errs.append(FieldError(path=path, message=f"below min {c.min}", value=v))
        if c.max is not None and v > c.max:
            errs.append(FieldError(path=path, message=f"above max {c.max}", value=v))
    elif isinstance(v, str):
        if (why := bad_text(v)) is not None:
            return [FieldError(path=path, message=why, value=v)]
        if c.enum_values and v not in c.enum_values:
            errs.append(FieldError(path=path, message=f"not one of {c.enum_values}", value=v))
        errs += _length_errors(c, v, path)
        if c.regex is not None and not _matches(c.regex, v):
            errs.append(FieldError(path=path, message=f"does not match {c.regex}", value=v))
    elif f.type == FieldType.OBJECT:
        errs += check_object(f.nested_fields, v, path + ".")
    elif f.type == FieldType.ARRAY:
        lo, hi = array_bounds(f)
        if not lo <= len(v) <= hi:
            errs.append(
                FieldError(
                    path=path, message=f"has {len(v)} items, expected {lo}..{hi}", value=len(v)
                )
            )
        for i, item in enumerate(v):
            if f.nested_fields:
                if not isinstance(item, dict):
                    errs.append(
                        FieldError(path=f"{path}[{i}]", message="expected an object", value=item)
                    )
                else:
                    errs += check_object(f.nested_fields, item, f"{path}[{i}].")
            elif not isinstance(item, str):
                errs.append(
                    FieldError(path=f"{path}[{i}]", message="expected a string", value=item)
                )
            elif (why := bad_text(item)) is not None:
                errs.append(FieldError(path=f"{path}[{i}]", message=why, value=item))
            else:  # an array of strings: min_length/max_length apply to each item
                errs += _length_errors(c, item, f"{path}[{i}]")
    return errs


def _length_errors(c: FieldConstraint, v: str, path: str) -> list[FieldError]:
    errs = []
    if c.min_length is not None and len(v) < c.min_length:
        errs.append(FieldError(path=path, message=f"shorter than {c.min_length}", value=v))
    if c.max_length is not None and len(v) > c.max_length:
        errs.append(FieldError(path=path, message=f"longer than {c.max_length}", value=v))
    return errs


def check_object(
    fields: list[FieldSpec], obj: dict[str, Any], prefix: str = ""
) -> list[FieldError]:
    errs: list[FieldError] = []
    for f in fields:
        v = obj.get(f.name)
        if v is None:
            if f.required:
                errs.append(FieldError(path=prefix + f.name, message="required field missing"))
            continue
        errs += check_value(f, v, prefix + f.name)
    known = {f.name for f in fields}
    for key in obj:
        if key not in known and not key.startswith("_"):
            errs.append(FieldError(path=prefix + key, message="not in the schema"))
    return errs


#: A defect record names its class of defect here...
EDGE_CASE_KEY = "_edge_case_type"
#: ...and here the paths it breaks on purpose (exactly those: a stale mark is an error).
INVALID_KEY = "_intentionally_invalid"


def with_defect_columns(schema: EntitySchema) -> EntitySchema:
    """The schema as a defect request's output shows it: CSV and SQL get the two defect
    keys as columns (JSON shows whatever keys a record has)."""
    extra = [k for k in (EDGE_CASE_KEY, INVALID_KEY) if k not in schema.meta_fields]
    return schema.model_copy(update={"meta_fields": [*schema.meta_fields, *extra]})


def validate_record(
    schema: EntitySchema, record: dict[str, Any], *, honour_marks: bool = False
) -> list[FieldError]:
    """Every problem with one record; an empty list means valid.

    With `honour_marks`, a defect record (one with `_edge_case_type`) may break the
    schema at the paths its `_intentionally_invalid` list names, and only there: those
    errors are dropped, and a listed path that is in fact valid is an error itself, so a
    mark always says exactly where the defect is. Only paths that produce defects on
    purpose pass it; model output never does.
    """
    errs = check_object(schema.fields, record)
    for meta in ("_index", "_scenario"):
        if meta not in record:
            errs.append(FieldError(path=meta, message="required field missing"))
    if honour_marks and (INVALID_KEY in record or EDGE_CASE_KEY in record):
        errs = _apply_marks(record, errs)
    return errs


def _apply_marks(record: dict[str, Any], errs: list[FieldError]) -> list[FieldError]:
    kind, marks = record.get(EDGE_CASE_KEY), record.get(INVALID_KEY, [])
    if not isinstance(kind, str) or not kind:
        return [*errs, FieldError(path=EDGE_CASE_KEY, message="a defect record must name its type")]
    if not isinstance(marks, list) or not all(isinstance(m, str) for m in marks):
        return [*errs, FieldError(path=INVALID_KEY, message="must be a list of paths")]
    marked = set(marks)
    out = [e for e in errs if e.path not in marked]
    hit = {e.path for e in errs}
    out += [
        FieldError(path=INVALID_KEY, message=f"{m} is marked intentionally invalid but is valid")
        for m in marks
        if m not in hit
    ]
    return out
