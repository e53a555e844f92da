"""Redis behind the bridge (a real server over a socket): the use_cache result cache,
idempotency keys, resumed streams, the per-client rate limit, and serving on when Redis
goes away. Each app here has a topic prefix of its own on the session broker."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.app import App
from services.kit import metrics
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.redis_support import OwnRedis
from tests.support import make_settings

from .conftest import rid

SERVICES = ["router", "traditional", "bridge"]


async def start_app(bootstrap: str, prefix: str, **over) -> App:
    settings = make_settings(bootstrap, topic_prefix=prefix, instance_id=prefix.strip("."), **over)
    return await App(settings, bootstrap).start(SERVICES, grpc_port=0)


@pytest.fixture(scope="module")
async def redis_app(embedded_broker, redis_url):
    url, key_prefix = redis_url
    app = await start_app(
        embedded_broker.bootstrap_servers, "rcache.", redis_url=url, redis_key_prefix=key_prefix
    )
    yield app
    await app.stop()


@pytest.fixture(scope="module")
async def rstub(redis_app):
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{redis_app.grpc_port}")
    yield pb_grpc.TestDataServiceStub(ch)
    await ch.close()


def hits() -> float:
    return metrics.CACHE_LOOKUPS.labels("hit")._value.get()


async def test_repeated_use_cache_request_is_answered_from_the_cache(rstub):
    req = pb.GenerateRequest(entity="cart", count=30, use_cache=True)  # no seed: random
    first = await rstub.GenerateData(req, timeout=30)
    assert not first.metadata.cache_hit
    before = hits()
    again = pb.GenerateRequest()
    again.CopyFrom(req)
    again.request_id = rid("again")
    second = await rstub.GenerateData(again, timeout=30)
    assert second.metadata.cache_hit and hits() == before + 1
    assert second.request_id == again.request_id
    # a new generation would have drawn another seed: the same data means none ran
    assert second.data == first.data and second.metadata.seed == first.metadata.seed
    assert second.metadata.generation_time_ms == first.metadata.generation_time_ms

    streamed = [c async for c in rstub.GenerateDataStream(again, timeout=30)]
    assert streamed[-1].metadata.cache_hit
    assert [r for c in streamed for r in json.loads(c.data)] == json.loads(first.data)


@pytest.mark.parametrize(
    "change",
    [
        {"count": 31},
        {"seed": 9},
        {"output_format": pb.CSV},
        {"entity": "order"},
        {"context": "black friday"},
    ],
)
async def test_anything_but_the_request_id_differing_is_a_miss(rstub, change):
    base = dict(entity="cart", count=30, seed=4, use_cache=True)
    await rstub.GenerateData(pb.GenerateRequest(**base), timeout=30)
    assert (await rstub.GenerateData(pb.GenerateRequest(**base), timeout=30)).metadata.cache_hit
    other = await rstub.GenerateData(pb.GenerateRequest(**{**base, **change}), timeout=30)
    assert not other.metadata.cache_hit


async def test_without_use_cache_nothing_is_answered_from_the_cache(rstub):
    req = pb.GenerateRequest(entity="user", count=5, seed=3)
    await rstub.GenerateData(req, timeout=30)
    assert not (await rstub.GenerateData(req, timeout=30)).metadata.cache_hit


async def test_a_dataset_above_the_cache_bound_is_not_cached(rstub, redis_app):
    bound = redis_app.settings.cache_max_records
    req = pb.GenerateRequest(entity="user", count=bound + 1, seed=3, use_cache=True)
    chunks = [c async for c in rstub.GenerateDataStream(req, timeout=60)]
    again = [c async for c in rstub.GenerateDataStream(req, timeout=60)]
    assert not chunks[-1].metadata.cache_hit and not again[-1].metadata.cache_hit


def idem(key: str, client: str = "tester") -> tuple[tuple[str, str], ...]:
    return (("idempotency-key", key), ("x-client-id", client))


@pytest.mark.parametrize("with_redis", [True, False])
async def test_a_retry_with_the_same_idempotency_key_is_not_generated_again(
    rstub, stub, with_redis
):
    s = rstub if with_redis else stub  # the session stack has no Redis: in-process map
    key = rid("key")
    req = pb.GenerateRequest(entity="order", count=12)  # no seed: a rerun would differ
    before = metrics.IDEMPOTENT_REPLAYS._value.get()
    first, concurrent = await asyncio.gather(
        s.GenerateData(req, metadata=idem(key), timeout=30),
        s.GenerateData(req, metadata=idem(key), timeout=30),
    )
    retry = await s.GenerateData(req, metadata=idem(key), timeout=30)
    assert first == concurrent == retry
    assert metrics.IDEMPOTENT_REPLAYS._value.get() == before + 2
    other_client = await s.GenerateData(req, metadata=idem(key, "someone-else"), timeout=30)
    assert other_client.data != first.data

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await s.GenerateData(
            pb.GenerateRequest(entity="order", count=13), metadata=idem(key), timeout=30
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "different request" in err.value.details()


@pytest.mark.parametrize("k", [0, 2])
async def test_a_cut_stream_resumed_from_chunk_k_gets_the_rest_exactly_once(rstub, k):
    request_id = rid("resume")
    req = pb.GenerateRequest(request_id=request_id, entity="cart", count=6000)  # no seed
    call = rstub.GenerateDataStream(req, timeout=60)
    got: list[pb.DataChunk] = []
    async for chunk in call:
        got.append(chunk)
        if chunk.chunk_index == k:
            break
    call.cancel()  # the connection is cut after chunk k
    rest = [
        c
        async for c in rstub.GenerateDataStream(
            pb.GenerateRequest(request_id=request_id),
            metadata=(("resume-from-chunk", str(k)),),
            timeout=60,
        )
    ]
    assert [c.chunk_index for c in rest] == list(range(k + 1, k + 1 + len(rest)))
    assert rest[-1].is_final and all(c.request_id == request_id for c in rest)
    records = [r for c in [*got, *rest] for r in json.loads(c.data)]
    assert [r["_index"] for r in records] == list(range(6000))
    md = rest[-1].metadata  # the same request generated whole, uncut, is the same data
    ref = pb.GenerateRequest(entity="cart", count=6000, seed=md.seed, anchor=md.anchor)
    whole = [r async for c in rstub.GenerateDataStream(ref, timeout=60) for r in json.loads(c.data)]
    assert whole == records


async def test_resuming_a_stream_this_service_never_started_is_refused(rstub):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in rstub.GenerateDataStream(
            pb.GenerateRequest(request_id=rid("never")),
            metadata=(("resume-from-chunk", "3"),),
            timeout=30,
        ):
            pass
    assert err.value.code() == grpc.StatusCode.FAILED_PRECONDITION


async def test_rate_limit_answers_resource_exhausted_with_a_retry_delay(rstub, redis_app):
    servicer = redis_app.servicer
    servicer.rate, servicer.burst = 0.2, 2  # a token every 5 s
    try:
        req = pb.GenerateRequest(entity="user", count=1)
        me = (("x-client-id", rid("client")),)
        for _ in range(2):
            await rstub.GenerateData(req, metadata=me, timeout=30)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await rstub.GenerateData(req, metadata=me, timeout=30)
        await rstub.GenerateData(req, metadata=(("x-client-id", rid("other")),), timeout=30)
    finally:
        servicer.rate = 0.0
    exc = err.value
    assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    retry = error_details_pb2.RetryInfo()
    status = rpc_status.from_call(exc)
    assert status is not None
    assert any(d.Unpack(retry) for d in status.details if d.Is(retry.DESCRIPTOR))
    assert 0 < retry.retry_delay.ToMilliseconds() <= 5000
    trailers = dict(exc.trailing_metadata() or ())
    assert 1 <= int(trailers["retry-after"]) <= 5


async def test_health_without_redis_says_not_configured(stub):
    resp = await stub.HealthCheck(pb.HealthCheckRequest(), timeout=10)
    assert resp.components["redis"] == "not configured"


async def test_redis_stopped_mid_test_requests_still_succeed_and_health_says_degraded(
    embedded_broker,
):
    own = OwnRedis()
    app = await start_app(embedded_broker.bootstrap_servers, "rdown.", redis_url=own.url)
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    stub = pb_grpc.TestDataServiceStub(ch)
    try:
        health = await stub.HealthCheck(pb.HealthCheckRequest(), timeout=10)
        assert health.components["redis"] == "healthy"
        req = pb.GenerateRequest(entity="cart", count=10, seed=1, use_cache=True)
        await stub.GenerateData(req, timeout=30)
        assert (await stub.GenerateData(req, timeout=30)).metadata.cache_hit

        own.stop()

        served = await stub.GenerateData(req, timeout=30)
        assert served.success and served.record_count == 10 and not served.metadata.cache_hit
        chunks = [c async for c in stub.GenerateDataStream(req, timeout=30)]
        assert chunks[-1].is_final and sum(c.record_count for c in chunks) == 10
        key = (("idempotency-key", "k1"),)
        once = await stub.GenerateData(pb.GenerateRequest(entity="user", count=3), metadata=key)
        twice = await stub.GenerateData(pb.GenerateRequest(entity="user", count=3), metadata=key)
        assert once == twice
        health = await stub.HealthCheck(pb.HealthCheckRequest(), timeout=10)
        assert health.components["redis"].startswith("degraded")
        assert health.status == "degraded"
    finally:
        own.stop()
        await ch.close()
        await app.stop()
