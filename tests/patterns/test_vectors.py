"""The in-memory vector index: exact cosine search, filters by scope, removal."""

from __future__ import annotations

import numpy as np

from services.patterns.vectors import VectorIndex


def unit(*xs: float) -> np.ndarray:
    v = np.array(xs, dtype=np.float32)
    return v / np.linalg.norm(v)


def test_search_is_exact_and_filters_by_scope() -> None:
    idx = VectorIndex(dim=3, capacity=1)  # grows past its capacity
    idx.put(
        [
            (10, ("patterns", "ecommerce", "cart", ""), unit(1, 0, 0)),
            (11, ("patterns", "ecommerce", "cart", ""), unit(1, 1, 0)),
            (12, ("patterns", "ecommerce", "order", ""), unit(1, 0, 0)),
            (13, ("defects", "ecommerce", "cart", ""), unit(1, 0, 0)),
            (14, ("patterns", "fintech", "cart", ""), unit(0, 0, 1)),
        ]
    )
    q = unit(1, 0, 0)
    got = idx.search(q, "patterns", "ecommerce", "cart", limit=10)
    assert got.keys() == {10, 11}
    assert got[10] > got[11] and abs(got[10] - 1.0) < 1e-6
    assert idx.search(q, "patterns", None, None, 10).keys() == {10, 11, 12, 14}
    assert idx.search(q, "patterns", None, "cart", 10).keys() == {10, 11, 14}
    assert idx.search(q, "defects", "ecommerce", None, 10).keys() == {13}
    assert idx.search(q, "production", None, None, 10) == {}
    assert idx.search(q, "patterns", None, None, 2).keys() == {10, 12}


def test_a_tenant_finds_its_own_rows_and_shared_ones_only() -> None:
    idx = VectorIndex(dim=2)
    idx.put(
        [
            (1, ("patterns", "d", "e", ""), unit(1, 0)),
            (2, ("patterns", "d", "e", "team-a"), unit(1, 0)),
            (3, ("patterns", "d", "e", "team-b"), unit(1, 0)),
        ]
    )
    q = unit(1, 0)
    assert idx.search(q, "patterns", "d", "e", 10, "team-a").keys() == {1, 2}
    assert idx.search(q, "patterns", "d", "e", 10, "team-c").keys() == {1}
    assert idx.search(q, "patterns", "d", "e", 10).keys() == {1, 2, 3}


def test_put_replaces_and_remove_keeps_the_rest_findable() -> None:
    idx = VectorIndex(dim=2)
    scope = ("patterns", "d", "e", "")
    idx.put([(1, scope, unit(1, 0)), (2, scope, unit(0, 1)), (3, scope, unit(1, 1))])
    idx.put([(1, scope, unit(0, 1))])  # replaced, not added
    assert len(idx) == 3
    idx.remove([1, 99])
    assert len(idx) == 2 and 1 not in idx
    got = idx.search(unit(0, 1), "patterns", None, None, 10)
    assert got.keys() == {2, 3}
    assert abs(got[2] - 1.0) < 1e-6  # the row moved into the hole still has its vector
    idx.remove([2, 3])
    assert idx.search(unit(0, 1), "patterns", None, None, 10) == {}
