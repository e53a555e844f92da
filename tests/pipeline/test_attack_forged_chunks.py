"""Attack: a Kafka client writes chunks into a caller's reply topic.

Seen: a 300,000-record stream ended OK with 41,000 records (358 chunks forged); a unary
caller got the attacker's error text. The correlation id the forger needs travels in the
request, which any reader of the requests topic sees; what it cannot have is the key the
services sign chunks with (kit/signing.py). Here the forger copies the correlation id from
the requests topic, then answers first with a short, final, "successful" chunk."""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from services.app import App
from services.kit.ops import metrics
from services.kit.wire.messages import ResultChunk
from services.kit.wire.signing import signed
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, make_settings, wait_until


@pytest.fixture
async def bridge(embedded_broker):
    """A bridge alone: the test plays the forger, then the real generator."""
    settings = make_settings(
        embedded_broker.bootstrap_servers, topic_prefix="forge.", instance_id="forge"
    )
    app = await App(settings, embedded_broker.bootstrap_servers).start(["bridge"], grpc_port=0)
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    yield app, pb_grpc.TestDataServiceStub(ch)
    await ch.close()
    await app.stop()


async def test_chunks_without_the_services_key_are_dropped(bridge, tail, agent_producer, codec):
    app, stub = bridge
    async with tail(app.rt.topics.requests) as requests:
        call = asyncio.ensure_future(
            stub.GenerateData(pb.GenerateRequest(entity="user", count=2), timeout=HANG_GUARD_S)
        )
        (request,) = await requests.until(lambda got: got, timeout=HANG_GUARD_S)
    headers = dict(request.headers)
    request_id, reply_to = request.key.decode(), headers["reply-to"].decode()
    plain = [("content-type", b"application/avro"), ("correlation-id", headers["correlation-id"])]

    async def answer(records: list[dict], key: bytes | None, error: str = "") -> None:
        chunk = ResultChunk(
            request_id=request_id,
            chunk_index=0,
            is_final=True,
            success=not error,
            error=error,
            data=json.dumps(records),
            record_count=len(records),
        )
        value = codec.encode_chunk(chunk)
        await agent_producer.send_and_wait(
            reply_to, value, key=request_id.encode(), headers=signed(key, value, plain)
        )

    forged = metrics.FORGED_RECORDS.labels("chunk")._value.get()
    await answer([{"forged": True}], None)  # unsigned
    await answer([], b"a guessed key", error="attacker-written text")  # signed wrongly
    await wait_until(
        lambda: metrics.FORGED_RECORDS.labels("chunk")._value.get() >= forged + 2, "both dropped"
    )
    assert not call.done()  # neither was taken as the answer
    await answer([{"i": 0}, {"i": 1}], app.rt.signing_key)  # the real generator's
    resp = await call
    assert json.loads(resp.data) == [{"i": 0}, {"i": 1}] and resp.success
