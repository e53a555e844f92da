from __future__ import annotations

import asyncio
import uuid

import grpc
import pytest

from services.app import SERVICES, App
from services.kit.runtime.kafka import assign_all, make_consumer, make_producer
from services.kit.wire.codec import get_codec
from services.patterns import open_store
from services.patterns.seeds import seed_store
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, make_settings, temp_store_path

ALL = list(SERVICES)


@pytest.fixture(scope="session")
async def seeded_store_path():
    """An embedded pattern store in a temporary directory holding the seed patterns."""
    path = temp_store_path()
    # seeding embeds and writes every seed pattern: on a loaded machine longer than a
    # request's store timeout, so only the hang guard bounds it
    store = open_store(
        make_settings(pattern_store_path=path, pattern_store_timeout_seconds=HANG_GUARD_S)
    )
    await store.start()
    try:
        await seed_store(store)
    finally:
        await store.aclose()
    return path


@pytest.fixture(scope="session")
def settings(embedded_broker, seeded_store_path):
    return make_settings(embedded_broker.bootstrap_servers, pattern_store_path=seeded_store_path)


@pytest.fixture(scope="session")
async def stack(settings):
    app = App(settings, settings.kafka_bootstrap_servers)
    await app.start(ALL, grpc_port=0, http_port=0)
    yield app
    await app.stop()


@pytest.fixture(scope="session")
async def channel(stack):
    ch = grpc.aio.insecure_channel(
        f"127.0.0.1:{stack.grpc_port}",
        options=[("grpc.max_receive_message_length", 64 * 1024 * 1024)],
    )
    yield ch
    await ch.close()


@pytest.fixture(scope="session")
def stub(channel):
    return pb_grpc.TestDataServiceStub(channel)


class Tail:
    """Reads a topic from its current end: what arrives after the test starts."""

    def __init__(self, bootstrap: str, topic: str):
        self.bootstrap, self.topic, self.consumer = bootstrap, topic, None

    async def __aenter__(self) -> Tail:
        self.consumer = make_consumer(self.bootstrap, None)
        await self.consumer.start()
        await assign_all(self.consumer, self.topic, at_end=True)
        return self

    async def __aexit__(self, *exc) -> None:
        await self.consumer.stop()

    async def until(self, predicate, timeout: float = HANG_GUARD_S) -> list:
        """Records (ConsumerRecord) until `predicate(records_so_far)` holds; `timeout`
        only guards against a hang."""
        got: list = []
        deadline = asyncio.get_running_loop().time() + timeout
        while not predicate(got):
            left = deadline - asyncio.get_running_loop().time()
            if left <= 0:
                raise TimeoutError(f"{self.topic}: condition not met; got {len(got)} records")
            batch = await self.consumer.getmany(timeout_ms=int(min(left, 0.2) * 1000))
            for recs in batch.values():
                got.extend(recs)
        return got


@pytest.fixture
def tail(settings):
    return lambda topic: Tail(settings.kafka_bootstrap_servers, topic)


@pytest.fixture(scope="session")
async def agent_producer(settings):
    p = make_producer(settings.kafka_bootstrap_servers)
    await p.start()
    yield p
    await p.stop()


@pytest.fixture
def codec():
    return get_codec()


def rid(prefix: str = "t") -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


@pytest.fixture(scope="session")
def redis_url():
    """(url, key prefix): a redis-server of our own on a free port (never the machine's)."""
    from tests.redis_support import OwnRedis, session_prefix

    own = OwnRedis()
    yield own.url, session_prefix()
    own.stop()
