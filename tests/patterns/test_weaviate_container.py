"""The Weaviate backend against a real Weaviate in Docker: what the wire-format fake can
only imitate (the server's own schema validation, filters, BM25, fusion, group-by).

Needs a Docker engine; skipped with the reason where there is none.
"""

from __future__ import annotations

import pytest

from services.patterns.errors import StoreUnavailable
from services.patterns.store import Collection
from services.patterns.weaviate import WeaviateStore
from tests.patterns.backends import (
    container_settings,
    docker_reason,
    drop_collections,
    weaviate_container,
)
from tests.patterns.test_weaviate import GIFTS, GROCERIES, MIDNIGHT, SAMPLE, WIRE

REASON = docker_reason()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


async def test_the_backend_on_a_real_server() -> None:
    settings = container_settings(weaviate_container())
    await drop_collections(settings)
    first, second = WeaviateStore(settings), WeaviateStore(settings)
    await first.start()
    await second.start()  # the collections exist now: nothing to create, no error
    try:
        assert (await first.health()).startswith("healthy: 0 patterns")
        assert await first.upsert([GROCERIES, GIFTS, WIRE, MIDNIGHT, SAMPLE]) == 5
        assert await second.upsert([GROCERIES]) == 0
        assert await second.count(Collection.PATTERNS) == 3
        assert await second.count(Collection.PATTERNS, domain="ecommerce", entity="cart") == 2

        hits = await first.search(
            Collection.PATTERNS,
            "food shopping for the household",
            domain="ecommerce",
            entity="cart",
            alpha=0.75,
        )
        assert [h.pattern.description for h in hits] == [GROCERIES.description, GIFTS.description]
        assert all(0.0 <= h.score <= 1.0 for h in hits)
        defects = await first.search(Collection.DEFECTS, "orders at midnight booked a day early")
        assert [h.pattern.defect_type for h in defects] == ["timezone"]

        g = GROCERIES.with_id()
        await first.mark_used(Collection.PATTERNS, [g.id])
        (stored,) = await second.get(Collection.PATTERNS, [g.id])
        assert stored.usage_count == 1 and stored.records == GROCERIES.records
        assert stored.created_at == g.created_at

        newest = await first.list_patterns(Collection.PATTERNS, limit=2)
        assert [p.description for p in newest] == [WIRE.description, GIFTS.description]
        stats = await first.stats()
        assert stats.counts == {
            "defects/ecommerce/order": 1,
            "patterns/banking/transfer": 1,
            "patterns/ecommerce/cart": 2,
            "production/ecommerce/order": 1,
        }
        assert await first.prune(Collection.PATTERNS, "ecommerce", "cart", keep=1) == 1
        assert [p.id for p in await first.list_patterns(Collection.PATTERNS, entity="cart")] == [
            g.id
        ]  # the gift cart had the lower quality
        assert await first.delete(Collection.PATTERNS, [g.id, "no-such-id"]) == 1
        assert await first.count(Collection.PATTERNS) == 1
    finally:
        await first.aclose()
        await second.aclose()


async def test_a_stopped_server_is_unavailable() -> None:
    settings = container_settings(weaviate_container(), weaviate_grpc_port=1)  # nothing there
    store = WeaviateStore(settings)
    await store.start()
    try:
        assert (await store.health()).startswith("unavailable: ")
        with pytest.raises(StoreUnavailable):
            await store.count(Collection.PATTERNS)
    finally:
        await store.aclose()
