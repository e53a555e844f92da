"""KeyStore against a real Redis (a redis-server of our own), and without one: every
operation answers None instead of failing."""

from __future__ import annotations

import pytest

from services.core.models import GenerateRequest, OutputFormat
from services.kit.ops import metrics
from services.kit.path.resultcache import cache_key
from services.kit.redis.breaker import Breaker, Circuit
from services.kit.redis.keystore import KeyStore
from tests.redis_support import OwnRedis, free_port, session_prefix


@pytest.fixture(scope="module")
def url():
    own = OwnRedis()
    yield own.url
    own.stop()


async def test_token_bucket_allows_the_burst_then_says_how_long_to_wait(url):
    store = KeyStore(url, session_prefix())
    try:
        bucket = store.key("rate", "client")
        assert [await store.take(bucket, 1.0, 3) for _ in range(3)] == [0.0, 0.0, 0.0]
        wait = await store.take(bucket, 1.0, 3)
        assert wait is not None and 0 < wait <= 1.0
        await store.delete(bucket)
    finally:
        await store.aclose()


async def test_set_nx_and_get(url):
    store = KeyStore(url, session_prefix())
    try:
        key = store.key("lease", "x")
        assert await store.set(key, b"1", 10, nx=True) is True
        assert await store.set(key, b"2", 10, nx=True) is False
        assert await store.get(key) == b"1"
        await store.delete(key)
        assert await store.get(key) is None
        assert await store.component() == "healthy"
    finally:
        await store.aclose()


async def test_an_unreachable_redis_answers_none_and_reports_degraded():
    store = KeyStore(f"redis://127.0.0.1:{free_port()}/0", "p:", timeout=0.2)
    try:
        assert await store.get("k") is None
        assert await store.set("k", b"v", 5, nx=True) is None
        assert await store.take("b", 1.0, 1) is None
        assert (await store.component()).startswith("degraded")
    finally:
        await store.aclose()


async def test_a_failing_redis_is_skipped_after_a_few_failures_then_tried_again():
    """A hung Redis cost every call its timeouts (throughput 130x down). After
    `failures` in a row, calls skip it; after the cool-off one call tries it again."""
    store = KeyStore(
        f"redis://127.0.0.1:{free_port()}/0", "p:", timeout=0.2, breaker=Breaker(2, 3600.0)
    )
    try:
        errors, skipped = metrics.REDIS_ERRORS._value.get(), metrics.REDIS_SKIPPED._value.get()
        for _ in range(10):
            assert await store.get("k") is None
        assert metrics.REDIS_ERRORS._value.get() == errors + 2
        assert metrics.REDIS_SKIPPED._value.get() == skipped + 8
        assert store.breaker.state == Circuit.OPEN
        assert "circuit open" in await store.component()
        store.breaker.opened_at -= 3600  # the cool-off is over
        assert await store.get("k") is None  # the trial: tried, failed
        assert metrics.REDIS_ERRORS._value.get() == errors + 3
        assert store.breaker.state == Circuit.OPEN
    finally:
        await store.aclose()


async def test_without_url_nothing_is_configured():
    store = KeyStore(None)
    assert await store.get("k") is None and await store.component() == "not configured"


def test_cache_key_ignores_only_the_request_id():
    base = GenerateRequest(entity="cart", count=5, seed=1, use_cache=True)
    assert cache_key(base) == cache_key(base.model_copy(update={"request_id": "other"}))
    for change in (
        {"seed": 2},
        {"count": 6},
        {"output_format": OutputFormat.CSV},
        {"context": "x"},
    ):
        assert cache_key(base) != cache_key(base.model_copy(update=change))
