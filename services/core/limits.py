"""What one request may ask for: every bound the planner checks before any work.

A request is refused, with a field error per bound it crosses, when it would cost more
than these allow; nothing a caller sends can make a process generate, match or hold an
unbounded amount. `Limits` is also the request-bounds section of the settings
(`Settings.limits`): each field's environment variable is its name in upper case, or its
`validation_alias` where the two differ (MAX_SCHEMA_DEPTH sets `max_depth`).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator

# Hard ceilings the code relies on, whatever the settings say.
HARD_MAX_DEPTH = 64  # request models refuse deeper schemas while parsing (see models.py)
SAFE_MAGNITUDE = 2.0**53  # integers beyond this are not exact as floats (and JSON numbers)


class Limits(BaseModel):
    """Request bounds, checked before any work (see services/core/limits.py)."""

    model_config = ConfigDict(frozen=True, validate_by_name=True, validate_by_alias=True)

    max_records: int = Field(
        default=1_000_000, ge=1, description="Records one request may ask for."
    )
    default_count: int = Field(
        default=10, ge=1, description="Records generated when a request asks for no count."
    )
    max_depth: int = Field(
        default=8,
        ge=1,
        le=HARD_MAX_DEPTH,
        validation_alias="max_schema_depth",
        description="Schema shape (custom schemas): levels of nested fields.",
    )
    max_fields_per_object: int = Field(
        default=500, ge=1, description="Schema shape (custom schemas): fields per object."
    )
    max_fields_total: int = Field(
        default=2_000, ge=1, description="Schema shape (custom schemas): fields in all."
    )
    max_array_items: int = Field(default=1_000, ge=1, description="Items an array may hold.")
    max_text: int = Field(
        default=10_000,
        ge=1,
        validation_alias="max_text_length",
        description=(
            "Text: min_length/max_length, a regex's longest match, override values, context."
        ),
    )
    max_enum_values: int = Field(default=1_000, ge=1, description="Values of one enum.")
    max_enum_value_length: int = Field(
        default=1_000, ge=1, description="Characters of one enum value."
    )
    max_name_length: int = Field(
        default=200,
        ge=1,
        description="Names: fields, scenarios, entity, domain, request id, hints, `format`.",
    )
    max_description_length: int = Field(
        default=1_000, ge=0, description="Descriptions of fields and scenarios."
    )
    max_path_length: int = Field(
        default=1_000, ge=1, description="Constraint keys and override paths."
    )
    max_scenarios: int = Field(default=1_000, ge=1, description="Scenarios of one request.")
    max_overrides: int = Field(default=10_000, ge=0, description="Overrides over all scenarios.")
    max_override_chars: int = Field(
        default=1_000_000,
        ge=0,
        description="Characters of all override values: each is matched, once.",
    )
    max_hints: int = Field(default=100, ge=0, description="Hints of one request.")
    max_regex_length: int = Field(default=1_000, ge=1, description="Characters of one regex.")
    max_regex_cost: int = Field(
        default=100_000,
        ge=1_000,
        description=(
            "Estimated RE2 program size of a request's distinct patterns (~1 us of compile "
            "per unit: 100,000 is ~0.1 s; Unicode `\\w` costs ~1,350 per occurrence, `[a-z]` "
            "~1)."
        ),
    )
    max_magnitude: float = Field(
        default=1e15,
        gt=0,
        le=SAFE_MAGNITUDE,
        validation_alias="max_number_magnitude",
        description=(
            "|min|, |max| and numeric override values. Numbers beyond 2**53 are not exact as "
            "floats: money and JSON would go wrong."
        ),
    )
    min_anchor_year: int = Field(
        default=1900,
        ge=10,
        description=("Generated times reach a few years before the anchor and have 4-digit years."),
    )
    max_anchor_year: int = Field(default=2200, le=9990, description="The latest anchor year.")
    max_output_bytes: int = Field(
        default=2 << 30,
        ge=1,
        description=(
            "Output estimated from the schema before generating (JSON bytes; see bounds.py). "
            "2 GiB: 1,000,000 orders (the record limit, ~1 KiB each) must stay possible."
        ),
    )
    max_record_bytes: int = Field(
        default=2 << 20,
        ge=1024,
        le=8 << 20,
        description=(
            "A record travels alone in a chunk at worst: it must fit in a Kafka record (8 MiB)."
        ),
    )
    max_record_cost: int = Field(
        default=50_000,
        ge=100,
        description=(
            "Generation steps per record (values, regex characters, words added): ~0.2-0.7 us "
            "each, so at most ~25 ms a record; a path generates records in slices between "
            "turns of other requests, so a record's cost is the unit of latency it can add."
        ),
    )
    max_errors: int = Field(
        default=50, ge=1, description="Problems reported per request; the rest are counted."
    )

    @model_validator(mode="after")
    def _anchor_years(self) -> Limits:
        if self.min_anchor_year > self.max_anchor_year:
            raise ValueError("min_anchor_year is above max_anchor_year")
        return self
