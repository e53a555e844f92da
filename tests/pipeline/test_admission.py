"""What a bridge admits: calls within its limits, a bounded queue, answers it can carry.

Seen: 200 concurrent unary callers all taken at once (p99 14.5x the idle one), and a
400 MB unary answer accepted, generated, buffered at 3.6x its size in the bridge, then
failed. A bridge now runs MAX_RUNNING_* calls of a kind, queues MAX_QUEUED_* more and
refuses the rest at once with RESOURCE_EXHAUSTED and a RetryInfo; a unary answer
estimated past the send limit is refused before anything is generated."""

from __future__ import annotations

import asyncio
import contextlib
import uuid

import grpc
import pytest
from google.rpc import error_details_pb2
from grpc_status import rpc_status

from services.app import App
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, make_settings, wait_until


def details_of(exc: grpc.aio.AioRpcError) -> tuple[str, float | None, list[str]]:
    """(ErrorInfo reason, RetryInfo delay in seconds, field paths) of a failed call."""
    status = rpc_status.from_call(exc)
    assert status is not None
    reason, delay, paths = "", None, []
    for d in status.details:
        info, retry = error_details_pb2.ErrorInfo(), error_details_pb2.RetryInfo()
        bad = error_details_pb2.BadRequest()
        if d.Unpack(info):
            reason = info.reason
        elif d.Unpack(retry):
            delay = retry.retry_delay.ToMilliseconds() / 1000
        elif d.Unpack(bad):
            paths = [v.field for v in bad.field_violations]
    return reason, delay, paths


@pytest.fixture
async def narrow(embedded_broker):
    """A bridge alone (nothing answers its requests, so its calls stay running) that runs
    one call of each kind and queues one unary call."""
    tag = uuid.uuid4().hex[:8]
    settings = make_settings(
        embedded_broker.bootstrap_servers,
        topic_prefix=f"adm{tag}.",
        instance_id=f"adm-{tag}",
        max_running_unary=1,
        max_queued_unary=1,
        max_running_streams=1,
        max_queued_streams=0,
    )
    app = await App(settings, embedded_broker.bootstrap_servers).start(["bridge"], grpc_port=0)
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    yield app, pb_grpc.TestDataServiceStub(channel)
    await channel.close()
    await app.stop()


async def test_calls_beyond_the_limit_and_queue_are_refused_with_a_retry_hint(narrow):
    app, stub = narrow
    req = pb.GenerateRequest(entity="cart", count=2)
    gate = app.servicer.unary
    running = asyncio.ensure_future(stub.GenerateData(req, timeout=HANG_GUARD_S))
    await wait_until(lambda: gate.running == 1)
    queued = asyncio.ensure_future(stub.GenerateData(req, timeout=HANG_GUARD_S))
    await wait_until(lambda: gate.waiting == 1)
    try:
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GenerateData(req, timeout=HANG_GUARD_S)
        exc = refused.value
        assert exc.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        reason, delay, _ = details_of(exc)
        assert reason == "OVERLOADED" and delay is not None and delay > 0
        assert "limit of 1 unary calls" in exc.details()
        assert not running.done() and not queued.done()

        stream = stub.GenerateDataStream(req, timeout=HANG_GUARD_S)  # streams: their own limit
        await wait_until(lambda: app.servicer.streams.running == 1)
        with pytest.raises(grpc.aio.AioRpcError) as refused:
            await stub.GenerateDataStream(req, timeout=HANG_GUARD_S).read()
        assert refused.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        stream.cancel()

        running.cancel()  # its slot goes to the queued call
        await wait_until(lambda: gate.running == 1 and gate.waiting == 0)
    finally:
        for call in (running, queued):
            call.cancel()
            with contextlib.suppress(BaseException):
                await call
    await wait_until(lambda: gate.running == 0)


async def test_a_unary_answer_too_large_to_send_is_refused_before_any_work(stub):
    """~90 MB of notes: within MAX_SYNC_RECORDS, above the 64 MiB a unary answer carries."""
    names = [f"part{i}" for i in range(10)]  # ~95 KB a record: 10 texts of 9,000-10,000
    req = pb.GenerateRequest(
        entity="note",
        count=1000,
        schema=pb.Schema(fields=[pb.Field(name=n, type=pb.STRING, required=True) for n in names]),
        constraints=pb.Constraints(
            field_constraints={
                n: pb.FieldConstraint(min_length=9_000, max_length=10_000) for n in names
            }
        ),
    )
    with pytest.raises(grpc.aio.AioRpcError) as refused:
        await stub.GenerateData(req, timeout=HANG_GUARD_S)
    exc = refused.value
    assert exc.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "GenerateDataStream" in exc.details()
    reason, _, paths = details_of(exc)
    assert reason == "SYNC_LIMIT" and paths == ["count"]
