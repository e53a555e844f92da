"""Agents on Kafka: publishing requests, bad input, several bridges, redelivery."""

from __future__ import annotations

import asyncio
import json
import uuid

import pytest

from services.app import App
from services.core.models import GenerateRequest
from services.core.routing import RoutingDecision
from services.kit.wire.codec import AVRO, JSON
from services.kit.wire.messages import RoutedRequest
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, as_bridge, wait_until

from .conftest import rid

pytestmark = pytest.mark.usefixtures("stack")


def chunks_for(records, codec, request_id):
    out = [codec.decode_chunk(r.value) for r in records]
    return [c for c in out if c.request_id == request_id]


def final_for(codec, request_id):
    return lambda recs: any(c.is_final for c in chunks_for(recs, codec, request_id))


async def publish(producer, topic, value, key, ctype):
    headers = [("content-type", ctype.encode())] if ctype else []
    await producer.send_and_wait(topic, value, key=key.encode() if key else None, headers=headers)


@pytest.mark.parametrize("fmt", ["avro", "json"])
async def test_agent_publishes_and_reads_results(stack, agent_producer, tail, codec, fmt):
    topics = stack.rt.topics
    request_id = rid(f"agent-{fmt}")
    body = {
        "request_id": request_id,
        "entity": "payment",
        "count": 30,
        "seed": 4,
        "output_format": "CSV",
    }
    value = (
        codec.encode_request(GenerateRequest.model_validate(body))
        if fmt == "avro"
        else json.dumps(body).encode()
    )
    async with tail(topics.results) as results:
        await publish(
            agent_producer, topics.requests, value, request_id, AVRO if fmt == "avro" else JSON
        )
        recs = await results.until(final_for(codec, request_id))
    chunks = chunks_for(recs, codec, request_id)
    assert all(c.success for c in chunks)
    text = "".join(c.data for c in chunks)
    assert text.count("\r\n") == 31  # header + 30 rows
    md = chunks[-1].metadata
    assert md.generation_path == "traditional" and md.seed == 4


async def test_agent_request_without_seed_is_reproducible_from_the_log(
    stack, agent_producer, tail, codec
):
    """Router derives seed from request_id and anchor from the record timestamp."""
    topics = stack.rt.topics
    request_id = rid("replay")
    value = json.dumps({"request_id": request_id, "entity": "user", "count": 5}).encode()
    async with tail(topics.results) as results, tail(topics.requests) as log:
        await publish(agent_producer, topics.requests, value, request_id, JSON)
        first = await results.until(final_for(codec, request_id))
        logged = next(
            r for r in await log.until(lambda rs: len(rs) >= 1) if r.key == request_id.encode()
        )
    # replay: the same record (bytes, key, timestamp) put on the requests topic again
    async with tail(topics.results) as results:
        await agent_producer.send_and_wait(
            topics.requests,
            logged.value,
            key=logged.key,
            headers=list(logged.headers),
            timestamp_ms=logged.timestamp,
        )
        second = await results.until(final_for(codec, request_id))
    data = lambda recs: "".join(c.data for c in chunks_for(recs, codec, request_id))  # noqa: E731
    assert data(first) == data(second) and data(first).startswith("[")


BAD = [
    ("garbage", b"\x00\xff\x13 not a request", None, "decode"),
    ("unknown-schema", b"\xc3\x01" + b"\x01" * 8 + b"\x02\x00", AVRO, "unknown_schema"),
    (
        "bad-fields",
        json.dumps({"entity": "cart", "count": "many", "output_format": "XML"}).encode(),
        JSON,
        "invalid_request",
    ),
    (
        "oversized",
        json.dumps({"entity": "cart", "count": 2_000_000_000}).encode(),
        JSON,
        "invalid_request",
    ),
    ("unknown-entity", json.dumps({"entity": "spaceship"}).encode(), JSON, "invalid_request"),
]


@pytest.mark.parametrize(("name", "value", "ctype", "kind"), BAD, ids=[b[0] for b in BAD])
async def test_bad_input_dead_lettered_caller_answered_and_service_goes_on(
    stack, agent_producer, tail, codec, name, value, ctype, kind
):
    topics = stack.rt.topics
    request_id = rid(name)
    good_id = rid("after-" + name)
    good = json.dumps({"request_id": good_id, "entity": "cart", "count": 3}).encode()
    async with tail(topics.deadletter) as dlq, tail(topics.results) as results:
        await publish(agent_producer, topics.requests, value, request_id, ctype)
        await publish(agent_producer, topics.requests, good, good_id, JSON)
        dead = await dlq.until(lambda rs: any(r.key == request_id.encode() for r in rs))
        recs = await results.until(
            lambda rs: final_for(codec, request_id)(rs) and final_for(codec, good_id)(rs)
        )
    letter = codec.decode_dead_letter(next(r for r in dead if r.key == request_id.encode()).value)
    assert letter.error_type == kind
    assert letter.original_value == value  # nothing lost
    assert letter.original_topic == topics.requests and letter.consumer == "router"
    assert letter.reason
    failed = chunks_for(recs, codec, request_id)
    assert len(failed) == 1 and not failed[0].success and failed[0].is_final
    assert failed[0].error == letter.reason
    if kind == "invalid_request":
        assert failed[0].error_details
    served = chunks_for(recs, codec, good_id)
    assert served[-1].success and sum(len(json.loads(c.data)) for c in served) == 3


async def test_bad_field_values_listed_per_field(stack, agent_producer, tail, codec):
    topics = stack.rt.topics
    request_id = rid("fields")
    value = json.dumps(
        {"request_id": request_id, "entity": "cart", "count": "many", "output_format": "XML"}
    ).encode()
    async with tail(topics.results) as results:
        await publish(agent_producer, topics.requests, value, request_id, JSON)
        recs = await results.until(final_for(codec, request_id))
    paths = {e.path for e in chunks_for(recs, codec, request_id)[0].error_details}
    assert paths == {"count", "output_format"}


async def test_bad_routed_message_dead_lettered_by_generator(stack, agent_producer, tail, codec):
    topics = stack.rt.topics
    async with tail(topics.deadletter) as dlq:
        await publish(agent_producer, topics.specs["traditional"].name, b"junk", "x-junk", AVRO)
        dead = await dlq.until(lambda rs: any(r.key == b"x-junk" for r in rs))
    letter = codec.decode_dead_letter(next(r for r in dead if r.key == b"x-junk").value)
    assert letter.consumer == "generator-traditional" and letter.original_value == b"junk"


async def test_two_bridges_each_get_only_their_replies(stack, settings, stub, tail, codec):
    from services.kit.runtime.kafka import assign_all, end_positions, make_consumer

    other = App(
        settings.model_copy(update={"instance_id": "test-b"}), settings.kafka_bootstrap_servers
    )
    await other.start(["bridge"], grpc_port=0)
    readers = []
    try:
        # each instance's reply topic, read from before the calls (not what others left)
        for app in (stack, other):
            readers.append(make_consumer(settings.kafka_bootstrap_servers, None))
            await readers[-1].start()
            await assign_all(readers[-1], app.servicer.inbox.topic, at_end=True)
        import grpc

        async with grpc.aio.insecure_channel(f"127.0.0.1:{other.grpc_port}") as ch:
            stub_b = pb_grpc.TestDataServiceStub(ch)
            ids_a = [rid("a") for _ in range(15)]
            ids_b = [rid("b") for _ in range(15)]

            async def call(s, request_id, n):
                r = await s.GenerateData(
                    pb.GenerateRequest(request_id=request_id, entity="cart", count=n, seed=n),
                    timeout=HANG_GUARD_S,
                )
                return r.request_id, len(json.loads(r.data)), r.success

            results = await asyncio.gather(
                *[call(stub, i, 1 + k) for k, i in enumerate(ids_a)],
                *[call(stub_b, i, 1 + k) for k, i in enumerate(ids_b)],
            )
        assert all(ok for _, _, ok in results)
        assert [n for _, n, _ in results] == list(range(1, 16)) * 2
        # each instance's reply topic carried only its own requests
        for c, ids in zip(readers, (ids_a, ids_b), strict=True):
            tps = list(c.assignment())
            end = await end_positions(c, tps)  # every reply is there: the calls were answered
            seen = set()
            while [tp for tp in tps if await c.position(tp) < end[tp]]:
                for recs in (await c.getmany(timeout_ms=200)).values():
                    seen.update(codec.decode_chunk(r.value).request_id for r in recs)
            assert set(ids) <= seen
            assert not (seen & set(ids_a if ids is ids_b else ids_b))
    finally:
        for c in readers:
            await c.stop()
        await other.stop()


def routed_value(codec, request_id, count=2500, entity="order"):
    req = GenerateRequest(
        request_id=request_id, entity=entity, count=count, seed=8, anchor="2026-01-01T00:00:00Z"
    )
    return codec.encode_routed(
        RoutedRequest(
            request=req,
            routing=RoutingDecision(
                path="traditional", reason="test", confidence=1.0, requested_path="traditional"
            ),
            received_at_ms=0,
        )
    )


async def test_redelivered_request_gives_caller_no_duplicates(stack, agent_producer, codec):
    """A request processed twice (what redelivery after a crash before the commit does)
    yields identical chunks twice; the bridge hands the caller each chunk once."""
    inbox = stack.servicer.inbox
    request_id = rid("redeliver")
    req = GenerateRequest(
        request_id=request_id, entity="order", count=2500, seed=8, anchor="2026-01-01T00:00:00Z"
    )
    routed = RoutedRequest(
        request=req,
        routing=RoutingDecision(
            path="traditional", reason="test", confidence=1.0, requested_path="traditional"
        ),
        received_at_ms=0,
    )
    pending = inbox.open(request_id)
    dropped_before = inbox.dropped  # the reader may drop copies before we read the final
    try:
        value = codec.encode_routed(routed)
        headers = as_bridge(request_id, inbox.topic, pending.correlation)
        for _ in range(2):
            await agent_producer.send_and_wait(
                stack.rt.topics.specs["traditional"].name,
                value,
                key=request_id.encode(),
                headers=headers,
            )
        chunks = []
        while True:
            c = await asyncio.wait_for(pending.get(), HANG_GUARD_S)
            chunks.append(c)
            if c.is_final:
                break
        # the second copy regenerates the same chunks; every one reaches us and is dropped
        await wait_until(
            lambda: inbox.dropped - dropped_before >= len(chunks), "the copies dropped"
        )
        duplicates_dropped = inbox.dropped - dropped_before
    finally:
        inbox.close(pending)
    records = [r for c in chunks for r in json.loads(c.data)]  # each chunk is an array
    assert [r["_index"] for r in records] == list(range(2500))
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert duplicates_dropped >= len(chunks) > 1


async def test_chunks_of_an_earlier_attempt_with_the_same_id_are_ignored(
    stack, agent_producer, codec
):
    inbox = stack.servicer.inbox
    request_id = rid("reused")
    topic = stack.rt.topics.specs["traditional"].name
    value = routed_value(codec, request_id, count=10, entity="user")
    pending = inbox.open(request_id)
    try:
        dropped = inbox.dropped
        old = as_bridge(request_id, inbox.topic, "an-earlier-attempt", avro=False)
        await agent_producer.send_and_wait(topic, value, key=request_id.encode(), headers=old)
        await wait_until(lambda: inbox.dropped > dropped, "the earlier attempt's chunk dropped")
        assert pending.queue.empty()
        new = as_bridge(request_id, inbox.topic, pending.correlation, avro=False)
        await agent_producer.send_and_wait(topic, value, key=request_id.encode(), headers=new)
        chunk = await asyncio.wait_for(pending.get(), HANG_GUARD_S)
        assert chunk.is_final and chunk.record_count == 10
    finally:
        inbox.close(pending)


async def test_a_retriable_refusal_of_the_publish_is_retried_not_failed(stack, stub, monkeypatch):
    """Seen: NotLeaderForPartition for a moment, on a loaded broker after topics changed,
    failed a call UNAVAILABLE; the broker takes the request a moment later."""
    from aiokafka.errors import NotLeaderForPartitionError

    publish, refused = stack.rt.publish, []

    async def refuse_twice(topic, *args, **kwargs):
        if topic == stack.rt.topics.requests and len(refused) < 2:
            refused.append(topic)
            raise NotLeaderForPartitionError()
        return await publish(topic, *args, **kwargs)

    monkeypatch.setattr(stack.rt, "publish", refuse_twice)
    resp = await stub.GenerateData(pb.GenerateRequest(entity="user", count=2), timeout=HANG_GUARD_S)
    assert resp.success and len(refused) == 2


async def test_unpublished_request_is_not_left_pending(stack, monkeypatch):
    async def broker_down(*args, **kwargs):
        raise ConnectionError("broker unreachable")

    monkeypatch.setattr(stack.rt, "publish", broker_down)
    req = GenerateRequest(request_id=rid("unpublished"), entity="cart", count=1)

    class NoDeadline:
        def time_remaining(self):
            return None

    with pytest.raises(ConnectionError):
        await stack.servicer.submit(req, context=NoDeadline())
    assert not stack.servicer.inbox.in_progress(req.request_id)


async def test_a_caller_who_left_does_not_hold_up_other_callers(stack, stub, agent_producer, codec):
    """A stream nobody reads fills its bounded queue; once its caller is gone, replies to
    everyone else flow again at once (not after the slow-client timeout)."""
    inbox = stack.servicer.inbox
    stuck = rid("stuck")
    pending = inbox.open(stuck)
    headers = as_bridge(stuck, inbox.topic, pending.correlation, avro=False)
    await agent_producer.send_and_wait(
        stack.rt.topics.specs["traditional"].name,
        routed_value(codec, stuck, count=60_000, entity="cart"),
        key=stuck.encode(),
        headers=headers,
    )
    await wait_until(pending.queue.full, "the stuck stream's queue full")
    inbox.close(pending)  # the caller went away
    t = asyncio.get_running_loop().time()
    resp = await stub.GenerateData(pb.GenerateRequest(entity="user", count=2), timeout=HANG_GUARD_S)
    assert resp.success
    # not after the slow-client timeout (what a reader blocked on the full queue waited)
    assert asyncio.get_running_loop().time() - t < stack.settings.stream_idle_timeout_seconds


async def test_a_reply_to_naming_no_existing_topic_creates_none(stack, agent_producer, tail, codec):
    """Seen: `reply-to: testdata.replies.<anything>` made a topic per name (300 in a
    test), never deleted. A reply topic that no bridge created is not created by a
    generator's send: the answer goes to the results topic, with a warning."""
    topics = stack.rt.topics
    bogus = topics.replies(f"nobody-{uuid.uuid4().hex[:8]}")
    request_id = rid("bogus-reply")
    req = GenerateRequest(request_id=request_id, entity="user", count=3, seed=1)
    async with tail(topics.results) as results:
        await agent_producer.send_and_wait(
            topics.requests,
            codec.encode_request(req),
            key=request_id.encode(),
            headers=[("content-type", b"application/avro"), ("reply-to", bogus.encode())],
        )
        got = await results.until(
            lambda rs: any(
                r.key == request_id.encode() and codec.decode_chunk(r.value).is_final for r in rs
            ),
            timeout=HANG_GUARD_S,
        )
    mine = [codec.decode_chunk(r.value) for r in got if r.key == request_id.encode()]
    final = mine[-1]
    assert final.success and final.record_count == 3 and final.metadata.data_sha256
    # what the log keeps of a traditional dataset (its final chunk, data aside), as when
    # the reply topic exists: a redelivery after the bridge went must not log it twice
    assert [c.data for c in mine] == [""]
    cluster = await stack.rt.producer.client.fetch_all_metadata()
    assert bogus not in cluster.topics()
