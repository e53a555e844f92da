"""Delivery: slow readers, neighbours on one partition, cancellation, deadlines and the
generation budget."""

from __future__ import annotations

import asyncio
import json
import time

import grpc
import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.core.models import GenerateRequest, GenerationPath
from services.core.report import ErrorKind
from services.kit.ops import metrics
from services.kit.runtime.control import publish_cancel
from services.kit.wire.codec import AVRO
from services.kit.wire.headers import CONTENT_TYPE, DEADLINE
from services.proto.testdata.v1 import test_data_pb2 as pb
from tests.support import HANG_GUARD_S, wait_until

from .conftest import rid

pytestmark = pytest.mark.usefixtures("stack")


def sample(name: str, **labels: str) -> float:
    return metrics.REGISTRY.get_sample_value(name, labels) or 0.0


def same_partition_id(other: str, partitions: int, prefix: str) -> str:
    """A request id that Kafka's default partitioner puts on `other`'s partition."""
    part = DefaultPartitioner()
    all_parts = list(range(partitions))
    target = part(other.encode(), all_parts, all_parts)
    for i in range(10_000):
        candidate = f"{prefix}-{i}"
        if part(candidate.encode(), all_parts, all_parts) == target:
            return candidate
    raise AssertionError("no id found")


async def test_a_slow_reader_gets_everything_once_and_stalls_no_one(stack, stub):
    """A caller reading slower than the generator writes is served from the reply topic
    at its own pace: every record exactly once, while others' unary calls stay fast."""
    count = 100_000
    req = pb.GenerateRequest(entity="cart", count=count, seed=11)
    call = stub.GenerateDataStream(req, timeout=HANG_GUARD_S)
    seen: list[int] = []
    unary_ms: list[float] = []

    async def read_slowly() -> None:
        async for chunk in call:
            seen.extend(r["_index"] for r in json.loads(chunk.data))
            await asyncio.sleep(0.03)

    async def others() -> None:
        while len(seen) < count:
            t0 = time.perf_counter()
            resp = await stub.GenerateData(
                pb.GenerateRequest(entity="user", count=5), timeout=HANG_GUARD_S
            )
            assert resp.success
            unary_ms.append((time.perf_counter() - t0) * 1000)
            await asyncio.sleep(0.05)

    started = time.perf_counter()
    await asyncio.gather(read_slowly(), others())
    whole_read_ms = (time.perf_counter() - started) * 1000
    assert seen == list(range(count))
    assert stack.servicer.inbox.pending == {}
    # The shared reader never waits on the slow caller: a stalled reader would hold each
    # other call for the rest of the slow one's read, so one or two would fit in it. Load
    # slows the read and the calls alike: a count, not a time (latency: `make bench delivery`).
    assert len(unary_ms) >= 4, (unary_ms, whole_read_ms)


async def test_a_small_request_does_not_wait_behind_a_large_one_on_its_partition(stack, stub):
    partitions = stack.rt.topics.specs["traditional"].partitions
    big_id = rid("big")
    small_id = same_partition_id(big_id, partitions, rid("small"))
    big = stub.GenerateDataStream(
        pb.GenerateRequest(request_id=big_id, entity="cart", count=300_000), timeout=HANG_GUARD_S
    )
    first = await big.read()  # the large request is being generated now
    assert first.chunk_index == 0
    before = sample("testdata_records_generated_total", domain="", entity="cart")
    resp = await stub.GenerateData(
        pb.GenerateRequest(request_id=small_id, entity="cart", count=5), timeout=HANG_GUARD_S
    )
    assert resp.success and resp.record_count == 5

    def generated() -> float:  # counted as each request's run ends
        return sample("testdata_records_generated_total", domain="", entity="cart") - before

    await wait_until(lambda: generated() >= 5, "the small request counted")
    # No clock (a loaded machine is slow either way): the small request was done while the
    # large one was still being generated, not after it.
    assert generated() < 300_000, "the small request waited for the large one"
    big.cancel()


async def test_a_cancelled_stream_stops_the_generator_within_a_chunk(stack, stub):
    before = sample("testdata_records_generated_total", domain="", entity="cart")
    abandoned = sample("testdata_abandoned_total", stage="generator-traditional", why="cancelled")
    call = stub.GenerateDataStream(
        pb.GenerateRequest(entity="cart", count=1_000_000, seed=5), timeout=HANG_GUARD_S
    )
    await call.read()
    call.cancel()
    await wait_until(
        lambda: (
            sample("testdata_abandoned_total", stage="generator-traditional", why="cancelled")
            > abandoned
        ),
        "the generator stopping",
    )
    generated = sample("testdata_records_generated_total", domain="", entity="cart") - before
    assert 0 < generated < 200_000, generated  # 1,000,000 took ~15 s of CPU for nobody


async def test_an_agent_cancels_its_own_request_through_the_control_topic(
    stack, agent_producer, tail, codec
):
    request_id = rid("agent-cancel")
    topics = stack.rt.topics
    async with tail(topics.results) as results:
        await agent_producer.send_and_wait(
            topics.requests,
            codec.encode_request(
                GenerateRequest(request_id=request_id, entity="order", count=500_000)
            ),
            key=request_id.encode(),
            headers=[(CONTENT_TYPE, AVRO.encode())],
        )
        await results.until(
            lambda recs: any(codec.decode_chunk(r.value).request_id == request_id for r in recs)
        )
        await publish_cancel(stack.rt, request_id, reason="agent changed its mind")
        recs = await results.until(
            lambda recs: any(
                (c := codec.decode_chunk(r.value)).request_id == request_id and c.is_final
                for r in recs
            )
        )
    final = next(
        c
        for c in (codec.decode_chunk(r.value) for r in recs)
        if c.request_id == request_id and c.is_final
    )
    assert not final.success and final.error_kind == ErrorKind.CANCELLED
    assert "agent changed its mind" in final.error
    assert final.metadata is not None and final.metadata.record_count == 500_000


async def test_a_request_past_its_deadline_is_skipped_and_counted(
    stack, agent_producer, tail, codec
):
    request_id = rid("expired")
    topics = stack.rt.topics
    skipped = sample("testdata_abandoned_total", stage="router", why="expired")
    async with tail(topics.results) as results:
        await agent_producer.send_and_wait(
            topics.requests,
            codec.encode_request(GenerateRequest(request_id=request_id, entity="cart", count=50)),
            key=request_id.encode(),
            headers=[
                (CONTENT_TYPE, AVRO.encode()),
                (DEADLINE, str(int(time.time() * 1000) - 1000).encode()),
            ],
        )
        recs = await results.until(
            lambda recs: any(codec.decode_chunk(r.value).request_id == request_id for r in recs)
        )
    (chunk,) = [
        c for c in map(codec.decode_chunk, (r.value for r in recs)) if c.request_id == request_id
    ]
    assert chunk.is_final and chunk.error_kind == ErrorKind.EXPIRED and chunk.record_count == 0
    assert sample("testdata_abandoned_total", stage="router", why="expired") == skipped + 1


async def test_a_caller_that_reads_nothing_is_failed_after_the_idle_timeout(
    stack, stub, monkeypatch
):
    monkeypatch.setattr(stack.servicer, "idle_timeout", 1.0)
    request_id = rid("idle")
    call = stub.GenerateDataStream(
        pb.GenerateRequest(request_id=request_id, entity="cart", count=200_000),
        timeout=HANG_GUARD_S,
    )
    await call.read()
    # flow control fills; the bridge's write waits, then gives the request up
    await wait_until(lambda: not stack.servicer.inbox.in_progress(request_id), "the release")
    with pytest.raises(grpc.aio.AioRpcError) as err:
        while await call.read() != grpc.aio.EOF:
            pass
    assert err.value.code() == grpc.StatusCode.DEADLINE_EXCEEDED
    assert "read nothing" in err.value.details()


async def test_a_request_past_the_generation_budget_is_stopped_parked_and_answered(
    stack, stub, tail, codec, monkeypatch
):
    """A million carts take ~30 s; with a 0.5 s budget the generator stops, parks the
    request with its reason and the caller gets RESOURCE_EXHAUSTED after what it had."""
    (traditional,) = [p for p in stack.paths if p.path == GenerationPath.TRADITIONAL]
    monkeypatch.setattr(traditional, "budget_seconds", 0.5)
    request_id = rid("budget")
    async with tail(stack.rt.topics.deadletter) as dead:
        call = stub.GenerateDataStream(
            pb.GenerateRequest(request_id=request_id, entity="cart", count=1_000_000),
            timeout=HANG_GUARD_S,
        )
        received = 0
        with pytest.raises(grpc.aio.AioRpcError) as err:
            async for chunk in call:
                received += chunk.record_count
        recs = await dead.until(
            lambda recs: any(
                codec.decode_dead_letter(r.value).request_id == request_id for r in recs
            )
        )
    assert err.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "generation budget of 0.5 s spent after" in err.value.details()
    assert 0 < received < 1_000_000
    (parked,) = [
        d
        for d in map(codec.decode_dead_letter, (r.value for r in recs))
        if d.request_id == request_id
    ]
    assert parked.error_type == ErrorKind.OVER_BUDGET and parked.consumer == "generator-traditional"
    assert codec.decode_routed(parked.original_value).request.request_id == request_id
