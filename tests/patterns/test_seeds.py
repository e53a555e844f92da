"""The shipped seed patterns: the spec's set, realistic, valid for their entity schemas.

Defect records fail validation only where that is the defect: each says which properties
in `_invalid_fields`, and the validator must report exactly those.
"""

from __future__ import annotations

import re
from collections import Counter, defaultdict

import pytest

from services.core.coherence import score_records
from services.core.registry import SchemaRegistry
from services.core.validate import validate_record
from services.kit.settings import Settings
from services.patterns.seeds import load_seeds
from services.patterns.store import Collection, Pattern

SEEDS = load_seeds()
DEFECT_TYPES = {
    "timezone_midnight_utc",
    "unicode_emoji",
    "max_length",
    "zero_amount",
    "negative_quantity",
    "sql_injection",
    "missing_required_field",
    "invalid_enum",
    "decimal_precision",
    "far_future_date",
}


def of(collection: Collection) -> list[Pattern]:
    return [p for p in SEEDS if p.collection == collection]


def test_the_spec_set_is_there_with_distinct_ids() -> None:
    assert len({p.id for p in SEEDS}) == len(SEEDS)
    patterns = of(Collection.PATTERNS)
    assert Counter(p.entity for p in patterns) == {"cart": 5, "order": 5, "payment": 5, "review": 5}
    assert len(of(Collection.DEFECTS)) == 10
    assert 1 <= len(of(Collection.PRODUCTION)) <= 10
    assert all(p.source == "seed" and p.description and p.scenario for p in SEEDS)


def test_each_entity_varies_the_way_the_spec_says() -> None:
    seen: dict[str, set[str]] = defaultdict(set)
    for p in of(Collection.PATTERNS):
        for r in p.records:
            key = {
                "cart": "_shopping_occasion",
                "order": "status",
                "payment": "method",
            }.get(p.entity)
            seen[p.entity].add(str(r[key]) if key else str(r["rating"]))
    assert len(seen["cart"]) == 5  # shopping occasions
    assert len(seen["order"]) == 5  # statuses
    assert len(seen["payment"]) == 5  # methods
    assert seen["review"] == {"1", "2", "3", "4", "5"}  # sentiments, by rating


def test_defects_cover_the_classic_types_with_severity() -> None:
    defects = of(Collection.DEFECTS)
    assert {p.defect_type for p in defects} == DEFECT_TYPES
    assert {p.severity for p in defects} <= {"critical", "high", "medium", "low"}
    for p in defects:
        assert all(r["_edge_case_type"] == p.defect_type for r in p.records)


@pytest.mark.parametrize("pattern", SEEDS, ids=lambda p: f"{p.collection}-{p.scenario}")
def test_records_pass_the_validator_except_where_that_is_the_defect(pattern: Pattern) -> None:
    schema = SchemaRegistry.load().get(pattern.entity)
    for record in pattern.records:
        errors = {e.path for e in validate_record(schema, record)}
        expected = set(record.get("_invalid_fields", []))
        assert errors == expected, (record, errors)
        if expected:  # the description names what makes it a defect
            assert pattern.collection == Collection.DEFECTS
            assert any(f.split("[")[0].split(".")[0] in pattern.description for f in expected)


@pytest.mark.parametrize(
    "pattern",
    [p for p in SEEDS if p.collection != Collection.DEFECTS],
    ids=lambda p: f"{p.collection}-{p.scenario}",
)
def test_examples_are_coherent_and_formatted_like_generated_data(pattern: Pattern) -> None:
    score = score_records(pattern.entity, pattern.records)
    assert score is None or score >= Settings().coherence_threshold
    for i, record in enumerate(pattern.records):
        assert record["_index"] == i and record["_scenario"] == pattern.scenario
        for key in ("subtotal", "tax", "shipping", "discount", "total", "amount"):
            if key in record:
                assert round(record[key], 2) == record[key]  # money has two decimals
        for item in record.get("items", []):
            assert round(item["price"], 2) == item["price"]
        for key in ("cart_id", "order_id", "payment_id"):
            if key in record:  # as the generator writes them: CRT-2025-XXXXXXX
                assert re.fullmatch(r"(CRT|ORD|PAY)-2025-[A-Z0-9]{7}", record[key])
