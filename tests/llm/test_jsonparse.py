"""parse_records: reading records out of whatever a model wraps them in."""

from __future__ import annotations

import json

import pytest

from services.llm.errors import LLMOutputError
from services.llm.jsonparse import parse_records, strip_trailing_commas

A = {"_index": 0, "_scenario": "default", "name": "Ava"}
B = {"_index": 1, "_scenario": "default", "name": "Ben"}
TWO = [A, B]
TWO_JSON = json.dumps(TWO)


@pytest.mark.parametrize(
    "text",
    [
        TWO_JSON,
        "  \n" + TWO_JSON + "\n\n",
        "\ufeff" + TWO_JSON,
        "```json\n" + TWO_JSON + "\n```",
        "```JSON\n" + json.dumps(TWO, indent=2) + "\n```\n",
        "```\n" + TWO_JSON + "\n```",
        "Here are your records:\n```json\n" + TWO_JSON + "\n```\nLet me know if you need more!",
        "Here are your records: " + TWO_JSON,
        TWO_JSON + "\n\nThese cover the requested scenarios.",
        "Note [see below] and {placeholder}: " + TWO_JSON + " (2 records)",
        '[{"_index": 0, "_scenario": "default", "name": "Ava",},'
        ' {"_index": 1, "_scenario": "default", "name": "Ben"},]',
        json.dumps({"records": TWO}),
        json.dumps({"data": TWO, "count": 2}),
        json.dumps({"generated_customers": TWO}),
        "Result:\n" + json.dumps({"results": TWO}, indent=2),
        json.dumps(A) + "\n" + json.dumps(B),
        json.dumps(A) + ",\n" + json.dumps(B),
        "```json\n" + TWO_JSON,  # fence never closed
    ],
    ids=[
        "plain",
        "whitespace",
        "bom",
        "fence-json",
        "fence-upper-indented",
        "fence-bare",
        "fence-with-prose",
        "prose-before",
        "prose-after",
        "brackets-in-prose",
        "trailing-commas",
        "records-wrapper",
        "data-wrapper-with-metadata",
        "any-single-list-key",
        "prose-and-wrapper",
        "json-lines",
        "objects-without-brackets",
        "unclosed-fence",
    ],
)
def test_records_are_found(text: str) -> None:
    assert parse_records(text) == TWO


def test_single_object_becomes_one_record() -> None:
    assert parse_records(json.dumps(A)) == [A]
    assert parse_records("Here it is: " + json.dumps(A) + " - done") == [A]


def test_record_with_nested_array_is_not_unwrapped() -> None:
    cart = {"cart_id": "CRT-1", "items": [{"sku": "X", "quantity": 1}]}
    assert parse_records(json.dumps(cart)) == [cart]
    # ... even when its array field has a wrapper-like name, as long as it has _index
    rec = {"_index": 0, "data": [{"k": 1}]}
    assert parse_records(json.dumps(rec)) == [rec]


def test_strings_with_brackets_and_escapes() -> None:
    tricky = [{"_index": 0, "note": 'has ] and } and "quotes" and \\ and ,]'}]
    assert parse_records("Output: " + json.dumps(tricky) + " ok") == tricky
    # a trailing-comma-like sequence inside a string is left alone
    assert strip_trailing_commas('["a,]", 1,]') == '["a,]", 1]'


def test_unicode_survives() -> None:
    recs = [{"_index": 0, "name": "Zoë 😀 東京"}]
    assert parse_records(json.dumps(recs, ensure_ascii=False)) == recs


def test_empty_array_is_valid() -> None:
    assert parse_records("[]") == []
    assert parse_records("```json\n[]\n```") == []


def test_prefers_records_over_earlier_non_record_json() -> None:
    assert parse_records("Counts [1, 2, 3] then " + TWO_JSON) == TWO


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("", "empty"),
        ("   \n ", "empty"),
        ("I cannot help with that.", "no JSON"),
        ("Here is a poem about the sea, with no data at all.", "no JSON"),
        ("[1, 2, 3]", "not a list of objects"),
        ('"just a string"', "not a list of objects"),
        ('[{"_index": 0, "a": 1}, {"_index": 1, "a": ', "never closes"),
        ("```json\n[{'_index': 0}]\n```", "no JSON"),
        ('[{"_index": 0, "a": NaN}]', "no JSON"),
    ],
    ids=[
        "empty",
        "blank",
        "refusal",
        "poem",
        "numbers",
        "string",
        "truncated",
        "single-quotes",
        "nan",
    ],
)
def test_unparseable_output_raises(text: str, message: str) -> None:
    with pytest.raises(LLMOutputError) as info:
        parse_records(text)
    assert message in str(info.value)
    assert info.value.reason == "unparseable_output"


def test_truncated_array_is_not_half_read() -> None:
    text = TWO_JSON[:-1] + ', {"_index": 2, "_scenario": "def'
    with pytest.raises(LLMOutputError):
        parse_records(text)


def test_error_quotes_the_start_of_the_output() -> None:
    with pytest.raises(LLMOutputError) as info:
        parse_records("Sorry, as an AI " + "x" * 500)
    assert "Sorry, as an AI" in str(info.value)
    assert len(info.value.snippet) < 200


def test_non_text_input_raises() -> None:
    with pytest.raises(LLMOutputError):
        parse_records(None)  # type: ignore[arg-type]
