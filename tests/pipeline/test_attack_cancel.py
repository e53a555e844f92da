"""Attack: cancelling someone else's request from a Kafka client.

Seen: any Kafka client could cancel any request, ahead of time and for good, with a cancel
record stamped far in the future. A cancel now stops only the attempt whose correlation
secret it carries (the bridge's requests always have one), and its stamp is clamped to the
present."""

from __future__ import annotations

import time

import grpc

from services.kit.wire.headers import AVRO, CONTENT_TYPE
from services.kit.wire.messages import Control
from services.proto.testdata.v1 import test_data_pb2 as pb
from tests.support import HANG_GUARD_S

from .conftest import rid


async def test_a_forged_cancel_stops_nobody(stub, stack, agent_producer, codec):
    request_id = rid("target")
    forged = Control(
        request_id=request_id,
        reason="forged",
        at_ms=int(time.time() * 1000) + 10 * 365 * 86_400_000,  # "for good"
    )
    # Ahead of time and during the call: neither stops it.
    await agent_producer.send_and_wait(
        stack.rt.topics.control,
        codec.encode_control(forged),
        key=request_id.encode(),
        headers=[(CONTENT_TYPE, AVRO.encode())],
    )
    call = stub.GenerateDataStream(
        pb.GenerateRequest(request_id=request_id, entity="cart", count=20_000),
        timeout=HANG_GUARD_S,
    )
    chunks = [await call.read()]
    await agent_producer.send_and_wait(
        stack.rt.topics.control,
        codec.encode_control(forged.model_copy(update={"correlation_id": "guess"})),
        key=request_id.encode(),
        headers=[(CONTENT_TYPE, AVRO.encode())],
    )
    while (chunk := await call.read()) is not grpc.aio.EOF:
        chunks.append(chunk)
    assert chunks[-1].is_final and chunks[-1].success
    assert sum(c.record_count for c in chunks) == 20_000
