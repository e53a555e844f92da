"""Request and schema models: the typed boundary every path and transport shares.

They mirror the TestDataService proto (testdata.v1) field for field, plus `seed` and
`anchor`, which make generation a pure function of the request.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator

from services.core.limits import HARD_MAX_DEPTH


class FieldType(StrEnum):
    """Proto FieldType, by name. Proto enum numbers map through `FIELD_TYPE_NUMBERS`."""

    STRING = "STRING"
    INTEGER = "INTEGER"
    FLOAT = "FLOAT"
    BOOLEAN = "BOOLEAN"
    DATE = "DATE"
    DATETIME = "DATETIME"
    EMAIL = "EMAIL"
    PHONE = "PHONE"
    ADDRESS = "ADDRESS"
    UUID = "UUID"
    ENUM = "ENUM"
    OBJECT = "OBJECT"
    ARRAY = "ARRAY"


FIELD_TYPE_NUMBERS: dict[FieldType, int] = {t: i for i, t in enumerate(FieldType)}
#: Types whose values are strings: length, enum and NUL checks apply to them.
TEXT_TYPES = (
    FieldType.STRING,
    FieldType.EMAIL,
    FieldType.PHONE,
    FieldType.ADDRESS,
    FieldType.UUID,
    FieldType.DATE,
    FieldType.DATETIME,
    FieldType.ENUM,
)


class OutputFormat(StrEnum):
    JSON = "JSON"
    CSV = "CSV"
    SQL = "SQL"


class GenerationPath(StrEnum):
    TRADITIONAL = "traditional"
    LLM = "llm"
    RAG = "rag"
    HYBRID = "hybrid"

    @property
    def traits(self) -> PathTraits:
        return PATH_TRAITS[self]


@dataclass(frozen=True)
class PathTraits:
    """What the rest of the system may assume of a path's output: every place that asks
    reads this table, never a path's name."""

    #: a rerun of one request gives the same chunks: a cut stream can be resumed and a
    #: redelivery's chunks spliced (else each run carries a run id)
    reruns_identical: bool
    #: the request alone regenerates the records: the results log keeps only the final
    #: chunk's digest, and export regenerates them
    rebuildable: bool
    #: a model wrote the records: replay cannot expect the same bytes
    model_written: bool
    #: records are varied from retrieved patterns: replay's bytes depend on the store
    uses_patterns: bool
    #: its output may become a pattern (rag's never: the store would feed on itself)
    learnable: bool


PATH_TRAITS: dict[GenerationPath, PathTraits] = {
    GenerationPath.TRADITIONAL: PathTraits(True, True, False, False, True),
    GenerationPath.LLM: PathTraits(False, False, True, False, True),
    GenerationPath.RAG: PathTraits(False, False, False, True, False),
    GenerationPath.HYBRID: PathTraits(False, False, True, True, True),
}


def traits_of(path: str) -> PathTraits | None:
    """A path's traits by name (as metadata and outcomes carry it); None if unknown."""
    try:
        return PATH_TRAITS[GenerationPath(path)]
    except ValueError:
        return None


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)


class FieldConstraint(_Model):
    min: float | None = None
    max: float | None = None
    enum_values: list[str] = Field(default_factory=list)
    regex: str | None = None
    min_length: int | None = None
    max_length: int | None = None
    format: str | None = None

    def merged(self, other: FieldConstraint | None) -> FieldConstraint:
        """This constraint with every field `other` sets taking precedence."""
        if other is None:
            return self
        return self.model_copy(update=other.model_dump(exclude_defaults=True))


def nesting_depth(fields: Any, stop: int = HARD_MAX_DEPTH) -> int:
    """Levels of `nested_fields` in raw or parsed fields, found without recursion (the
    input is the caller's); stops counting once past `stop`."""
    deepest, stack = 0, [(fields, 1)]
    while stack:
        items, depth = stack.pop()
        if not isinstance(items, list | tuple) or not items:
            continue
        deepest = max(deepest, depth)
        if deepest > stop:
            break
        for f in items:
            nested = (
                f.get("nested_fields") if isinstance(f, dict) else getattr(f, "nested_fields", None)
            )
            stack.append((nested, depth + 1))
    return deepest


def _shallow(fields: Any) -> Any:
    """Parsing recurses once per level: refuse a schema deeper than any limit allows
    before pydantic walks it (a 1,000-deep one would end in RecursionError)."""
    if nesting_depth(fields) > HARD_MAX_DEPTH:
        raise ValueError(f"fields are nested more than {HARD_MAX_DEPTH} levels deep")
    return fields


class RequestField(_Model):
    """A field of a caller-supplied schema (proto `Field`)."""

    name: str
    type: FieldType = FieldType.STRING
    required: bool = False
    description: str = ""
    nested_fields: list[RequestField] = Field(default_factory=list)

    _shallow = field_validator("nested_fields", mode="before")(_shallow)


class Schema(_Model):
    fields: list[RequestField] = Field(default_factory=list)
    predefined_schema: str = ""

    _shallow = field_validator("fields", mode="before")(_shallow)


class Constraints(_Model):
    """Per-field constraints keyed by dotted path (`items.quantity`)."""

    field_constraints: dict[str, FieldConstraint] = Field(default_factory=dict)


class Scenario(_Model):
    name: str
    count: int = 0
    overrides: dict[str, str] = Field(default_factory=dict)
    description: str = ""


class GenerateRequest(_Model):
    """What a caller asks for. `count == 0` means "the default count" (proto3 omits 0)."""

    request_id: str = ""
    domain: str = ""
    entity: str = ""
    schema_: Schema = Field(default_factory=Schema, alias="schema")
    constraints: Constraints = Field(default_factory=Constraints)
    scenarios: list[Scenario] = Field(default_factory=list)
    context: str = ""
    hints: list[str] = Field(default_factory=list)
    output_format: OutputFormat = OutputFormat.JSON
    count: int = 0
    use_cache: bool = False
    learn_from_history: bool = False
    defect_triggering: bool = False
    production_like: bool = False
    # Determinism: both are fixed at ingress when the caller leaves them out, so the
    # request as logged on the requests topic regenerates the same dataset.
    seed: int | None = None
    anchor: datetime | None = None
    # A replay (`testdata replay`): the request id this one regenerates. Not part of what
    # determines the records.
    replay_of: str = ""

    def hint_set(self) -> set[str]:
        return {h.strip().lower() for h in self.hints if h.strip()}


class FieldSpec(_Model):
    """A field of an entity schema as the generator sees it (registry files use this)."""

    name: str
    type: FieldType = FieldType.STRING
    required: bool = True
    description: str = ""
    constraint: FieldConstraint = Field(default_factory=FieldConstraint)
    # What the value means (e.g. "first_name", "money", "id:CRT"); drives realism.
    semantic: str | None = None
    nested_fields: list[FieldSpec] = Field(default_factory=list)
    min_items: int = 1
    max_items: int = 5

    def child(self, name: str) -> FieldSpec | None:
        return next((f for f in self.nested_fields if f.name == name), None)


class EntitySchema(_Model):
    name: str
    domain: str = "custom"
    description: str = ""
    fields: list[FieldSpec]
    coherence_rules: list[str] = Field(default_factory=list)
    # Extra `_`-prefixed keys the entity's records carry besides `_index`/`_scenario`.
    meta_fields: list[str] = Field(default_factory=list)

    def field_names(self) -> list[str]:
        return [f.name for f in self.fields]


def clip(text: str, n: int) -> str:
    """At most n characters: errors echo what callers sent, which may be huge."""
    return text if len(text) <= n else text[: n - 1] + "…"


class FieldError(_Model):
    """One problem with a request or a record, located by a dotted/indexed path. Path,
    message and value are clipped: an error must stay small whatever it quotes."""

    path: str
    message: str
    value: Any = None

    @field_validator("path")
    @classmethod
    def _clip_path(cls, v: str) -> str:
        return clip(v, 300)

    @field_validator("message")
    @classmethod
    def _clip_message(cls, v: str) -> str:
        return clip(v, 500)

    @field_validator("value")
    @classmethod
    def _clip_value(cls, v: Any) -> Any:
        if isinstance(v, int) and not isinstance(v, bool) and abs(v) >= 1 << 63:
            return f"<{v.bit_length()}-bit integer>"
        if v is None or isinstance(v, bool | int | float):
            return v
        if isinstance(v, str):
            return clip(v, 100)
        text = repr(v)
        return v if len(text) <= 100 else clip(text, 100)

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


DEFAULT_ANCHOR = datetime(2025, 1, 1, tzinfo=UTC)
