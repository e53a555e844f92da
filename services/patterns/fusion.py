"""Pure ranking helpers shared by the pattern-store backends (no I/O, unit-tested alone).

Hybrid ranking is Weaviate's `relativeScoreFusion` (its server default since 1.24), so
the embedded store ranks as a Weaviate server would: each leg keeps its best
`CANDIDATES`, scores are min-max normalised within the leg (all equal: 1), and the fused
score is `alpha * vector + (1 - alpha) * keyword`, a leg where an object is missing
adding 0. Keyword queries follow Weaviate's BM25 defaults: an OR of the words, with its
`en` stopword list (SQLite FTS5 has no stopwords and a strict query grammar).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import TypeVar

K = TypeVar("K", int, str)

# Per-leg candidates before fusion: Weaviate's hybrid sub-search default limit.
CANDIDATES = 100

_WORD = re.compile(r"\w+", re.UNICODE)
# Weaviate's BM25 stopword preset "en".
STOPWORDS = frozenset(
    "a an and are as at be but by for if in into is it no not of on or such that the their "  # noqa: SIM905
    "then there these they this to was will with".split()
)


def keywords(text: str) -> list[str]:
    """The query's distinct words, lower case, stopwords dropped, in order of appearance."""
    return list(dict.fromkeys(t for t in _WORD.findall(text.lower()) if t not in STOPWORDS))


def fts_query(text: str) -> str | None:
    """Any user text as a safe FTS5 MATCH expression: an OR of quoted words (quotes,
    `-`, `:`, AND/NOT/NEAR in the text are then plain words, never syntax). None when
    nothing searchable is left."""
    words = [w.replace('"', '""') for w in keywords(text)]
    return " OR ".join(f'"{w}"' for w in words) or None


def relative_fusion(
    keyword: Mapping[K, float], vector: Mapping[K, float], alpha: float
) -> dict[K, float]:
    """Weaviate's relativeScoreFusion of two legs' raw scores (higher is better).

    `alpha` weighs the vector leg, `1 - alpha` the keyword leg; a leg with weight 0 is
    ignored. Scores land in [0, 1]."""
    out: dict[K, float] = {}
    for weight, leg in ((1.0 - alpha, keyword), (alpha, vector)):
        if not leg or weight <= 0:
            continue
        lo, hi = min(leg.values()), max(leg.values())
        span = hi - lo
        for key, score in leg.items():
            norm = 1.0 if span == 0 else (score - lo) / span
            out[key] = out.get(key, 0.0) + weight * norm
    return out


def ranked_fusion(keyword: list[K], vector: list[K], alpha: float, k: int = 60) -> dict[K, float]:
    """Weaviate's rankedFusion (reciprocal rank, rank from 0), for comparison and tests."""
    out: dict[K, float] = {}
    for weight, leg in ((1.0 - alpha, keyword), (alpha, vector)):
        if weight <= 0:
            continue
        for rank, key in enumerate(leg):
            out[key] = out.get(key, 0.0) + weight / (rank + k)
    return out


def top(scores: Mapping[K, float], n: int) -> list[tuple[K, float]]:
    """The n best (key, score), highest first; equal scores in key order, so the same
    data always ranks the same way."""
    return sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))[: max(0, n)]
