"""Attack: releasing a live bridge's lease from a Kafka client.

A bridge leases its reply topic through the control topic (kit/control.py): generators
abandon the requests of a bridge whose lease ran out, and bridges delete its reply topic.
Seen, with leases unsigned: one forged release (`until_ms` 0) on a live bridge's topic made
the generators abandon its streams ("its bridge is gone"). Leases are now signed with the
services' key; a forged one is ignored and counted."""

from __future__ import annotations

import time

import grpc

from services.kit.ops import metrics
from services.kit.wire.headers import AVRO, CONTENT_TYPE
from services.kit.wire.messages import Control
from services.proto.testdata.v1 import test_data_pb2 as pb
from tests.support import HANG_GUARD_S, wait_until

from .conftest import rid


async def test_a_forged_lease_release_abandons_nothing(stub, stack, agent_producer, codec):
    topic = stack.servicer.inbox.topic
    ignored = metrics.FORGED_RECORDS.labels("lease")._value.get()

    async def release() -> None:
        now = int(time.time() * 1000)
        forged = Control(
            request_id="", action="lease", reply_to=topic, since_ms=now, until_ms=0, at_ms=now
        )
        await agent_producer.send_and_wait(
            stack.rt.topics.control,
            codec.encode_control(forged),
            key=f"lease:{topic}".encode(),
            headers=[(CONTENT_TYPE, AVRO.encode())],
        )

    count = 200_000  # seconds of work: the forgery reaches the generator long before its end
    call = stub.GenerateDataStream(
        pb.GenerateRequest(request_id=rid("leased"), entity="cart", count=count),
        timeout=HANG_GUARD_S,
    )
    chunks = [await call.read()]
    await release()
    while (chunk := await call.read()) is not grpc.aio.EOF:
        chunks.append(chunk)
    assert chunks[-1].is_final and chunks[-1].success
    assert sum(c.record_count for c in chunks) == count
    await wait_until(
        lambda: metrics.FORGED_RECORDS.labels("lease")._value.get() > ignored, "the forgery ignored"
    )
