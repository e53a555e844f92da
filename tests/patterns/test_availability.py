"""The router's view of the pattern store: cached per-scope counts, re-read in the
background, a slow or dead store turned into a reason (real weaviate-client against the
wire-format fake, whose ports can be closed or left unanswered)."""

from __future__ import annotations

import asyncio

import pytest

from services.patterns import Collection, Pattern, open_store
from services.patterns.availability import StoreAvailability
from services.patterns.scope import Scope
from tests.fakes.weaviate_server import FakeWeaviate
from tests.support import HANG_GUARD_S, eventually, make_settings, wait_until

CART = Scope(Collection.PATTERNS, "ecommerce", "cart")
USER = Scope(Collection.PATTERNS, "ecommerce", "user")


def pattern(entity: str, text: str) -> Pattern:
    return Pattern(domain="ecommerce", entity=entity, description=text, records=[{"x": text}])


@pytest.fixture
def server():
    with FakeWeaviate(vector_dim=384) as s:
        yield s


def settings_for(server: FakeWeaviate, **over):
    return make_settings(
        weaviate_url=server.url,
        weaviate_grpc_port=server.grpc_port,
        pattern_store_timeout_seconds=over.pop("timeout", 1.0),
        pattern_store_refresh_seconds=over.pop("refresh", 0.3),
        **over,
    )


async def test_gap_answers_from_cached_counts_and_refreshes_in_the_background(server):
    settings = settings_for(server, timeout=HANG_GUARD_S)  # nothing here is meant to time out
    writer = open_store(settings)
    await writer.start()
    await writer.upsert([pattern("cart", "weekly groceries for a family")])
    avail = StoreAvailability(settings)
    try:
        before = len(server.calls)
        await avail.refresh(force=True)
        per_refresh = len(server.calls) - before
        assert avail.reason is None
        assert avail.gap(CART) is None
        assert avail.gap(USER) == "no patterns for ecommerce/user in the pattern store"
        assert avail.gap(Scope(Collection.DEFECTS, "ecommerce", "cart")) == (
            "no defect patterns for ecommerce/cart in the pattern store"
        )
        await writer.upsert([pattern("user", "loyal shoppers")])
        searches = len(server.calls)
        for _ in range(100):  # many requests, no store call each: the cache answers
            assert avail.gap(USER) is not None
        # at most one background refresh (if the counts went stale meanwhile on a slow
        # machine), never a store call per request
        assert len(server.calls) - searches <= per_refresh
        await wait_until(lambda: avail.gap(USER) is None, "the new user pattern is seen")
    finally:
        await avail.aclose()
        await writer.aclose()


async def test_a_stalled_store_becomes_unavailable_without_blocking_requests(server):
    avail = StoreAvailability(settings_for(server, timeout=0.5))
    try:
        await avail.refresh(force=True)
        assert avail.reason is None
        with server.stalled():
            await asyncio.sleep(0.35)  # the cached counts are stale now
            # gap() is synchronous: whatever the store does, a request only reads the cache
            assert avail.gap(CART) == "no patterns for ecommerce/cart in the pattern store"
            await wait_until(lambda: avail.reason is not None, "the stalled store is noticed")
            assert avail.gap(CART).startswith("pattern store unavailable: ")
            assert (await avail.components())["pattern_store"].startswith("unavailable")
        await wait_until(lambda: avail.gap(CART) == CART.missing(), "recovery")
    finally:
        await avail.aclose()


async def test_a_store_that_is_down_says_why_and_recovers(server):
    avail = StoreAvailability(settings_for(server))
    try:
        with server.down():
            await avail.refresh(force=True)
            assert avail.reason is not None
            assert avail.reason.startswith("pattern store unavailable: ")
            assert avail.gap(CART) == avail.reason

        async def answers() -> bool:  # the backend retries a down server on a fresh client
            await avail.refresh(force=True)
            return avail.reason is None

        await eventually(answers, "the store answering again")
        assert avail.gap(CART) == CART.missing()
    finally:
        await avail.aclose()


async def test_one_store_per_location_per_process():
    settings = make_settings()
    a = StoreAvailability.shared(settings)
    b = StoreAvailability.shared(settings)
    other = StoreAvailability.shared(make_settings())
    assert a is b and a is not other
    await a.aclose()
    assert StoreAvailability.shared(settings) is a  # one user left: still shared
    await b.aclose()
    await a.aclose()
    fresh = StoreAvailability.shared(settings)
    assert fresh is not a  # closed by its last user
    await fresh.aclose()
    await other.aclose()
