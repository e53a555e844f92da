"""Work for nobody stops: a stream whose bridge died is abandoned within LEASE_SECONDS.

Seen: streams orphaned by a bridge crash ran to the 300 s budget (7.6 M records made for
nobody). Each bridge renews a lease on its reply topic through the control topic; the
generators abandon a request once its reply topic's lease runs out. Here the test is the
bridge: it leases a reply topic of its own, sends a large request, reads the first chunk,
and stops renewing, as a killed bridge does."""

from __future__ import annotations

import asyncio
import time
import uuid

from services.core.models import GenerateRequest
from services.core.report import ErrorKind
from services.kit.runtime.control import LEASE_SECONDS, publish_lease
from services.kit.runtime.kafka import ensure_topics_exist
from services.kit.wire.tenancy import LOCAL, vouch
from tests.support import HANG_GUARD_S, SIGNING_KEY

from .conftest import rid

COUNT = 1_000_000  # a minute of work or more: only the lease can end it this soon


async def test_a_stream_whose_bridge_stopped_renewing_its_lease_is_abandoned(
    stack, agent_producer, tail, codec
):
    topics, rt = stack.rt.topics, stack.rt
    reply = topics.replies(f"orphan-{uuid.uuid4().hex[:8]}")
    await ensure_topics_exist(rt.bootstrap, {reply: 1})
    started = int(time.time() * 1000)
    await publish_lease(rt, reply, started)

    async def renew() -> None:
        while True:
            await asyncio.sleep(1)
            await publish_lease(rt, reply, started)

    renewing = asyncio.create_task(renew())
    request_id = rid("orphan")
    req = GenerateRequest(request_id=request_id, entity="cart", count=COUNT)
    async with tail(reply) as replies:
        await agent_producer.send_and_wait(
            topics.requests,
            codec.encode_request(req),
            key=request_id.encode(),
            # the test plays a bridge (it holds the lease): its request is vouched for
            headers=vouch(
                SIGNING_KEY.encode(),
                request_id,
                LOCAL,
                [("content-type", b"application/avro"), ("reply-to", reply.encode())],
            ),
        )
        got = await replies.until(lambda rs: len(rs) > 0, timeout=HANG_GUARD_S)
        renewing.cancel()  # the bridge dies
        died = time.monotonic()
        assert not codec.decode_chunk(got[-1].value).is_final
        got += await replies.until(
            lambda rs: any(codec.decode_chunk(r.value).is_final for r in rs),
            timeout=HANG_GUARD_S,
        )
        stopped_after = time.monotonic() - died
    final = codec.decode_chunk(got[-1].value)
    records = sum(codec.decode_chunk(r.value).record_count for r in got)
    assert not final.success and final.error_kind == ErrorKind.CANCELLED, final.error
    assert "its bridge is gone" in final.error
    assert records < COUNT
    print(f"stopped {stopped_after:.1f} s after the last renewal (lease {LEASE_SECONDS:g} s)")
