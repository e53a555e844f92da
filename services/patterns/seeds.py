"""The seed patterns shipped with the repository (schemas/patterns/*.json).

A new store starts with them so the RAG and hybrid paths have examples before anything
was learned: coherent records per shopping occasion, order status, payment method and
review sentiment, the classic defects, and a few production-like samples. Seeding is
idempotent (content ids), so running it again adds nothing.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict

from services.core.pools import SCHEMAS_DIR
from services.patterns.store import Collection, Pattern, PatternStore

SEEDS_DIR = SCHEMAS_DIR / "patterns"


class SeedFile(BaseModel):
    """One file: the collection its patterns go to, and the patterns without ids."""

    model_config = ConfigDict(extra="forbid")

    collection: Collection
    description: str
    patterns: list[dict[str, Any]]


def load_seeds(directory: Path | None = None) -> list[Pattern]:
    """Every seed pattern, with its content id."""
    out: list[Pattern] = []
    for path in sorted((directory or SEEDS_DIR).glob("*.json")):
        seed = SeedFile.model_validate(json.loads(path.read_text(encoding="utf-8")))
        for raw in seed.patterns:
            out.append(Pattern.model_validate({**raw, "collection": seed.collection}).with_id())
    return out


async def seed_store(store: PatternStore, patterns: list[Pattern] | None = None) -> tuple[int, int]:
    """Upsert the seeds; returns (new, total patterns in the seeds' collections)."""
    patterns = load_seeds() if patterns is None else patterns
    new = await store.upsert(patterns)
    total = 0
    for collection in Collection:
        total += await store.count(collection)
    return new, total
