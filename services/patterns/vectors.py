"""The embedded store's in-memory vector index: one NumPy matrix, exact cosine search.

Brute force is exact and, at the sizes a pattern store reaches, faster than an ANN or
sqlite-vec index (10k x 384: a ~0.3 ms product). Rows are unit vectors, so the dot
product is the cosine similarity, Weaviate's `1 - distance` for cosine.
Each row carries a scope code for its (collection, domain, entity, tenant): filters are a mask
over the codes, never a copy of the matrix. Not thread-safe: the store holds its lock.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

Scope = tuple[str, str, str, str]  # (collection, domain, entity, tenant: "" shared)


class VectorIndex:
    def __init__(self, dim: int, capacity: int = 256):
        self.dim = dim
        self._m = np.zeros((capacity, dim), dtype=np.float32)
        self._ids = np.zeros(capacity, dtype=np.int64)
        self._codes = np.zeros(capacity, dtype=np.int32)
        self._n = 0
        self._pos: dict[int, int] = {}  # row id -> position in the matrix
        self._scopes: dict[Scope, int] = {}
        # positions per filter, until the next change: searches repeat the same filters
        self._selected: dict[tuple[str, str | None, str | None, str | None], np.ndarray] = {}

    def __len__(self) -> int:
        return self._n

    def __contains__(self, row_id: int) -> bool:
        return row_id in self._pos

    def ids(self) -> set[int]:
        return set(self._pos)

    def nbytes(self) -> int:
        return int(self._m.nbytes + self._ids.nbytes + self._codes.nbytes)

    def _code(self, scope: Scope) -> int:
        return self._scopes.setdefault(scope, len(self._scopes))

    def _grow(self, need: int) -> None:
        cap = len(self._ids)
        if need <= cap:
            return
        cap = max(need, cap * 2)  # doubling: amortised O(1) appends
        m = np.zeros((cap, self.dim), dtype=np.float32)
        m[: self._n] = self._m[: self._n]
        ids = np.zeros(cap, dtype=np.int64)
        ids[: self._n] = self._ids[: self._n]
        codes = np.zeros(cap, dtype=np.int32)
        codes[: self._n] = self._codes[: self._n]
        self._m, self._ids, self._codes = m, ids, codes

    def put(self, rows: Sequence[tuple[int, Scope, np.ndarray]]) -> None:
        """Add rows or replace them by id."""
        self._selected.clear()
        self._grow(self._n + len(rows))
        for row_id, scope, vec in rows:
            pos = self._pos.get(row_id)
            if pos is None:
                pos = self._pos[row_id] = self._n
                self._n += 1
                self._ids[pos] = row_id
            self._m[pos] = vec
            self._codes[pos] = self._code(scope)

    def remove(self, row_ids: Sequence[int] | set[int]) -> None:
        """Drop rows by id: the last row moves into the hole."""
        self._selected.clear()
        for row_id in row_ids:
            pos = self._pos.pop(row_id, None)
            if pos is None:
                continue
            last = self._n - 1
            if pos != last:
                moved = int(self._ids[last])
                self._m[pos] = self._m[last]
                self._ids[pos] = moved
                self._codes[pos] = self._codes[last]
                self._pos[moved] = pos
            self._n = last

    def search(
        self,
        query: np.ndarray,
        collection: str,
        domain: str | None,
        entity: str | None,
        limit: int,
        tenant: str | None = None,
    ) -> dict[int, float]:
        """The `limit` most similar rows within the filter: {row id: cosine}. `tenant`:
        that tenant's rows and shared ones (None: every row)."""
        if not self._n or limit <= 0:
            return {}
        idx = self._positions(collection, domain, entity, tenant)
        if not idx.size:
            return {}
        scores = self._m[: self._n] @ query.astype(np.float32, copy=False)
        sel = scores[idx]
        best = np.argpartition(-sel, limit - 1)[:limit] if sel.size > limit else range(sel.size)
        ids = self._ids[idx]
        return {int(ids[j]): float(sel[j]) for j in best}

    def _positions(
        self, collection: str, domain: str | None, entity: str | None, tenant: str | None
    ) -> np.ndarray:
        key = (collection, domain, entity, tenant)
        if (idx := self._selected.get(key)) is None:
            codes = [
                code
                for (c, d, e, t), code in self._scopes.items()
                if c == collection
                and domain in (None, d)
                and entity in (None, e)
                and (tenant is None or t in ("", tenant))
            ]
            idx = np.flatnonzero(np.isin(self._codes[: self._n], codes))
            self._selected[key] = idx
        return idx
