"""What one request may ask for: every bound the planner checks before any work.

A request is refused, with a field error per bound it crosses, when it would cost more
than these allow; nothing a caller sends can make a process generate, match or hold an
unbounded amount. Values come from `Settings.limits()`; the defaults here are the same.
"""

from __future__ import annotations

from dataclasses import dataclass

# Hard ceilings the code relies on, whatever the settings say.
HARD_MAX_DEPTH = 64  # request models refuse deeper schemas while parsing (see models.py)
SAFE_MAGNITUDE = 2.0**53  # integers beyond this are not exact as floats (and JSON numbers)


@dataclass(frozen=True)
class Limits:
    max_records: int = 1_000_000
    default_count: int = 10
    # Schema shape (custom schemas): levels of nested fields, fields per object and in all.
    max_depth: int = 8
    max_fields_per_object: int = 500
    max_fields_total: int = 2_000
    max_array_items: int = 1_000
    # Text: min_length/max_length, a regex's longest match, override values, context.
    max_text: int = 10_000
    max_enum_values: int = 1_000
    max_enum_value_length: int = 1_000
    # Names: fields, scenarios, entity, domain, request id, hints, `format`.
    max_name_length: int = 200
    max_description_length: int = 1_000  # of fields and scenarios
    max_path_length: int = 1_000  # constraint keys and override paths
    max_scenarios: int = 1_000
    max_overrides: int = 10_000  # over all scenarios
    max_override_chars: int = 1_000_000  # of all override values: each is matched, once
    max_hints: int = 100
    max_regex_length: int = 1_000
    # Estimated RE2 program size of a request's distinct patterns (~1 us of compile per
    # unit: 100,000 is ~0.1 s; Unicode `\w` costs ~1,350 per occurrence, `[a-z]` ~1).
    max_regex_cost: int = 100_000
    max_magnitude: float = 1e15  # |min|, |max| and numeric override values
    min_anchor_year: int = 1900
    max_anchor_year: int = 2200
    # Output estimated from the schema before generating (JSON bytes; see bounds.py).
    # 2 GiB: 1,000,000 orders (the record limit, ~1 KiB each) must stay possible.
    max_output_bytes: int = 2 << 30
    max_record_bytes: int = 2 << 20  # one record fits a result chunk (MAX_CHUNK_BYTES)
    # Generation steps per record (values, regex characters, words added): ~0.2-0.7 us
    # each, so at most ~25 ms a record; a path generates records in slices between
    # turns of other requests, so a record's cost is the unit of latency it can add.
    max_record_cost: int = 50_000
    max_errors: int = 50  # problems reported per request; the rest are counted
