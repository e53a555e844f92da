"""Pure ranking helpers: Weaviate's fusion arithmetic and safe FTS5 queries."""

from __future__ import annotations

import sqlite3

import pytest

from services.patterns.fusion import (
    fts_query,
    keywords,
    ranked_fusion,
    relative_fusion,
    top,
)


def test_relative_fusion_normalises_each_leg_then_weighs_by_alpha() -> None:
    keyword = {1: 10.0, 2: 5.0, 3: 0.0}  # raw BM25: normalised to 1, 0.5, 0
    vector = {2: 0.9, 4: 0.3}  # cosine: normalised to 1, 0
    fused = relative_fusion(keyword, vector, alpha=0.75)
    assert fused == pytest.approx({1: 0.25, 2: 0.25 * 0.5 + 0.75, 3: 0.0, 4: 0.0})
    assert max(fused, key=lambda k: fused[k]) == 2


def test_relative_fusion_scores_an_all_equal_leg_as_one() -> None:
    assert relative_fusion({1: 3.0, 2: 3.0}, {}, alpha=0.25) == {1: 0.75, 2: 0.75}
    assert relative_fusion({}, {7: 0.4}, alpha=0.5) == {7: 0.5}


def test_alpha_zero_and_one_ignore_the_other_leg() -> None:
    keyword, vector = {1: 2.0, 2: 1.0}, {3: 0.9, 1: 0.1}
    assert relative_fusion(keyword, vector, alpha=0.0) == {1: 1.0, 2: 0.0}
    assert relative_fusion(keyword, vector, alpha=1.0) == {3: 1.0, 1: 0.0}


def test_ranked_fusion_is_reciprocal_rank_from_zero() -> None:
    fused = ranked_fusion([1, 2], [2, 3], alpha=0.5)
    assert fused[2] == pytest.approx(0.5 / 61 + 0.5 / 60)
    assert fused[1] == pytest.approx(0.5 / 60)
    assert fused[3] == pytest.approx(0.5 / 61)


def test_top_orders_by_score_then_key() -> None:
    assert top({"b": 0.5, "a": 0.5, "c": 0.9}, 2) == [("c", 0.9), ("a", 0.5)]
    assert top({1: 0.1}, 0) == []


def test_keywords_drop_stopwords_and_repeats() -> None:
    assert keywords("Presents for the Christmas party, presents!") == [
        "presents",
        "christmas",
        "party",
    ]
    assert keywords("Zoë 可爱 naïve") == ["zoë", "可爱", "naïve"]


@pytest.mark.parametrize(
    "text",
    [
        'say "hello',
        "a AND b OR NOT c NEAR(d e)",
        "col:umn -minus +plus ^caret *star (paren",
        'quote""inside',
        "DROP TABLE x; --",
        "émoji 🐰 text",
    ],
)
def test_any_text_becomes_a_valid_fts5_query(text: str) -> None:
    db = sqlite3.connect(":memory:")
    db.execute("create virtual table t using fts5(x, tokenize='porter unicode61')")
    db.execute("insert into t values (?)", (text,))
    query = fts_query(text)
    assert query is not None
    assert db.execute("select count(*) from t where t match ?", (query,)).fetchone() == (1,)


def test_nothing_searchable_is_none() -> None:
    assert fts_query("the of and") is None
    assert fts_query("  ,;: ") is None
