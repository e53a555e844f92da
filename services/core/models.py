"""Request and schema models: the typed boundary every path and transport shares.

They mirror the TestDataService proto (testdata.v1) field for field, plus `seed` and
`anchor`, which make generation a pure function of the request.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from pydantic import BaseModel, ConfigDict, Field


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


class OutputFormat(StrEnum):
    JSON = "JSON"
    CSV = "CSV"
    SQL = "SQL"


class GenerationPath(StrEnum):
    TRADITIONAL = "traditional"
    LLM = "llm"
    RAG = "rag"
    HYBRID = "hybrid"


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


class RequestField(_Model):
    """A field of a caller-supplied schema (proto `Field`)."""

    name: str
    type: FieldType = FieldType.STRING
    required: bool = False
    description: str = ""
    nested_fields: list[RequestField] = Field(default_factory=list)


class Schema(_Model):
    fields: list[RequestField] = Field(default_factory=list)
    predefined_schema: str = ""


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


class FieldError(_Model):
    """One problem with a request or a record, located by a dotted/indexed path."""

    path: str
    message: str
    value: Any = None

    def __str__(self) -> str:
        return f"{self.path}: {self.message}"


class RequestInvalid(ValueError):
    """A request that cannot be served; carries every problem found, not just the first."""

    def __init__(self, errors: list[FieldError]):
        self.errors = errors
        super().__init__("; ".join(str(e) for e in errors))


DEFAULT_ANCHOR = datetime(2025, 1, 1, tzinfo=UTC)
