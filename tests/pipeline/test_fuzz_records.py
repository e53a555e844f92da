"""Attack: a second Kafka client floods the control topic and a bridge's reply topic.

The attacker holds no key (docs/security.md): it reads what the requests and control
topics carry (a request's id, `reply-to` and `correlation-id`, the correlation ids of other
attempts, the bridges' signed leases, other requests' signed chunks) and writes anything
to any topic. While a stream of a few thousand records is in flight (and again with
nothing in flight) it writes a few hundred hostile records to each of the two topics the
services trust most: random bytes, empty and null values, truncated and bit-flipped copies
of genuine records, well-formed cancels and leases with forged fields, unsigned, wrongly
signed or misplaced chunks for the running request, odd headers (huge, not UTF-8, null,
duplicated, hundreds). The stream must end OK with exactly the records of a clean run of
the same request, every forgery that reaches a signature check must be counted, and every
service task must live on: a record that kills a reader silently ends cancellations,
leases or replies for its whole process. Every record comes from `random.Random(FUZZ_SEED)`.

The last three tests are the smallest cases of what the flood found (see each)."""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
import uuid
from dataclasses import dataclass

import grpc
import pytest
from aiokafka import ConsumerRecord
from aiokafka.errors import KafkaError

from services.app import App
from services.bridge.inbox import QUEUE_CHUNKS
from services.kit.ops import metrics
from services.kit.runtime.kafka import assign_all, make_consumer, make_producer
from services.kit.wire.codec import MAGIC, Codec
from services.kit.wire.headers import AVRO, CONTENT_TYPE, CORRELATION, REPLY_TO, RUN, SIGNATURE
from services.kit.wire.messages import Control, ResultChunk
from services.kit.wire.signing import genuine, signed
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, SIGNING_KEY, eventually, make_settings, wait_until

from .conftest import rid

pytestmark = pytest.mark.slow  # an App of its own per test, and a clean run to compare with

FUZZ_SEED = 0x5EED_F022
DATA_SEED = 4242
COUNT = 3000  # records in the fuzzed stream
CHUNK_RECORDS = 25  # many chunks: the flood lands between them, and a paused caller spills
PER_TARGET = 300  # hostile records per topic
KEY = SIGNING_KEY.encode()
AVRO_HEADERS: list[tuple[str, bytes | None]] = [(CONTENT_TYPE, AVRO.encode())]

Headers = list[tuple[str, bytes | None]]
Record = tuple[bytes | None, bytes | None, Headers]  # key, value, headers


def forged(kind: str) -> float:
    return metrics.FORGED_RECORDS.labels(kind)._value.get()


def now_ms() -> int:
    return int(time.time() * 1000)


async def started(
    broker, names: list[str], tag: str | None = None, chunk_size: int = CHUNK_RECORDS
) -> tuple[App, grpc.aio.Channel]:
    """An App on topics of its own (the flood reaches no other test's services)."""
    tag = tag or uuid.uuid4().hex[:8]
    settings = make_settings(
        broker.bootstrap_servers,
        topic_prefix=f"fuzz{tag}.",
        instance_id=f"fuzz-{tag}",
        chunk_size=chunk_size,
    )
    app = await App(settings, broker.bootstrap_servers).start(names, grpc_port=0)
    channel = grpc.aio.insecure_channel(
        f"127.0.0.1:{app.grpc_port}", options=[("grpc.max_receive_message_length", 64 << 20)]
    )
    return app, channel


@pytest.fixture
async def pipeline(embedded_broker):
    """Bridge, router and traditional generator."""
    app, channel = await started(embedded_broker, ["router", "traditional", "bridge"])
    yield app, pb_grpc.TestDataServiceStub(channel)
    await channel.close()
    await app.stop()


@pytest.fixture
async def bridge_alone(embedded_broker):
    """A bridge alone: the test plays the generator where it must (it has the key)."""
    app, channel = await started(embedded_broker, ["bridge"])
    yield app, pb_grpc.TestDataServiceStub(channel)
    await channel.close()
    await app.stop()


def request(request_id: str, count: int = COUNT) -> pb.GenerateRequest:
    return pb.GenerateRequest(request_id=request_id, entity="cart", count=count, seed=DATA_SEED)


async def stream(call) -> list[pb.DataChunk]:
    chunks = []
    while (chunk := await call.read()) is not grpc.aio.EOF:
        chunks.append(chunk)
    return chunks


def dataset(chunks: list[pb.DataChunk]) -> list[tuple[int, int, bool, bool, str]]:
    """What a stream delivered, its request id aside."""
    return [(c.chunk_index, c.record_count, c.is_final, c.success, c.data) for c in chunks]


def dead(app: App) -> list[str]:
    """The service tasks and readers of `app` that ended, and how (none may)."""
    out = [
        f"{sub.name}: {t.exception()!r}"
        for sub, t in zip(app.subscribers, app.tasks, strict=True)
        if t.done()
    ]
    if app.control is not None and not app.control.healthy:
        out += [f"control reader: {t.exception()!r}" for t in app.control._tasks if t.done()]
    if app.servicer is not None and not app.servicer.inbox.healthy:
        out.append(f"reply reader: {app.servicer.inbox.task}")
    return out


async def control_read(app: App) -> None:
    """Until the control reader has read all the control topic holds, or has died."""
    assert app.control is not None
    control = app.control

    async def read() -> bool:
        return not control.healthy or await control.control_current()

    await eventually(read, "the control topic read")


async def still_serving(app: App, stub) -> None:
    assert dead(app) == []
    health = await stub.HealthCheck(pb.HealthCheckRequest(), timeout=HANG_GUARD_S)
    assert health.status == "healthy", dict(health.components)
    resp = await stub.GenerateData(request(rid("after"), 5), timeout=HANG_GUARD_S)
    assert resp.success and resp.record_count == 5


# ---- what the attacker reads -------------------------------------------------------------
async def newest(bootstrap: str, topic: str, wanted) -> ConsumerRecord:
    """The newest record of `topic` (as it ends now) for which `wanted(record)` holds."""
    consumer = make_consumer(bootstrap, None)
    await consumer.start()
    try:
        tps = await assign_all(consumer, topic, at_end=False)
        ends = await consumer.end_offsets(tps)
        found: list[ConsumerRecord] = []

        async def behind() -> bool:
            return any([await consumer.position(tp) < end for tp, end in ends.items()])

        deadline = time.monotonic() + HANG_GUARD_S
        while await behind():
            if time.monotonic() > deadline:
                raise AssertionError(f"{topic} not read within {HANG_GUARD_S:g} s")
            for records in (await consumer.getmany(timeout_ms=200)).values():
                found += [r for r in records if wanted(r)]
        assert found, f"no such record on {topic}"
        return max(found, key=lambda r: r.timestamp)
    finally:
        await consumer.stop()


@dataclass
class Seen:
    """What the attacker read off the topics before the flood."""

    control: str  # the control topic
    reply_to: str  # the bridge's reply topic (the `reply-to` header of a request)
    request_id: str  # the running request's (or the next one's) id
    correlation: bytes  # the running attempt's (on the requests topic for any reader)
    other_correlations: list[str]  # other attempts' (of earlier requests)
    lease: ConsumerRecord  # the bridge's newest genuine, signed lease
    chunks: list[ConsumerRecord]  # genuine, signed chunks of another request


async def clean_run(app: App, stub, tail) -> tuple[list[pb.DataChunk], Seen]:
    """The request once, untouched; and what the attacker reads meanwhile."""
    assert app.servicer is not None
    async with tail(app.rt.topics.requests) as requests, tail(app.servicer.inbox.topic) as replies:
        clean = await stream(stub.GenerateDataStream(request(rid("clean")), timeout=HANG_GUARD_S))
        (asked,) = await requests.until(lambda got: got)
        chunks = await replies.until(lambda got: len(got) >= len(clean))
    headers = dict(asked.headers)
    reply_to = headers[REPLY_TO].decode()
    lease = await newest(
        app.rt.bootstrap, app.rt.topics.control, lambda r: r.key == f"lease:{reply_to}".encode()
    )
    seen = Seen(
        control=app.rt.topics.control,
        reply_to=reply_to,
        request_id="",
        correlation=b"",
        other_correlations=[headers[CORRELATION].decode()],
        lease=lease,
        chunks=chunks,
    )
    return clean, seen


# ---- mutations ---------------------------------------------------------------------------
def noise(rng: random.Random, most: int = 600) -> bytes:
    return rng.randbytes(rng.randrange(most))


def mangled(rng: random.Random, value: bytes) -> bytes:
    """A copy of `value` truncated, bit-flipped, cut short inside, or with bytes inserted."""
    b = bytearray(value)
    how = rng.randrange(4)
    if how == 0 or not b:
        return bytes(b[: rng.randrange(len(b) + 1)])
    if how == 1:
        for _ in range(rng.randint(1, 8)):
            i = rng.randrange(len(b))
            b[i] ^= 1 << rng.randrange(8)
        return bytes(b)
    i = rng.randrange(len(b))
    if how == 2:
        del b[i : i + rng.randint(1, 16)]
        return bytes(b)
    return bytes(b[:i] + rng.randbytes(rng.randint(1, 16)) + b[i:])


def odd_headers(rng: random.Random, base: Headers) -> Headers:
    """`base` with something odd about its headers."""
    how = rng.randrange(7)
    headers = list(base)
    if how == 0:  # huge
        headers.append((rng.choice([CORRELATION, RUN, "x-huge"]), rng.randbytes(64 * 1024)))
    elif how == 1:  # not UTF-8 where text is expected
        headers.append((rng.choice([CONTENT_TYPE, CORRELATION, RUN]), b"\xff\xfe\xc3\x28"))
    elif how == 2:  # duplicated
        headers = [*headers, *headers, (CONTENT_TYPE, b"application/json")]
    elif how == 3:  # hundreds
        headers += [(f"h{i}", rng.randbytes(8)) for i in range(500)]
    elif how == 4:  # empty names and values
        headers += [("", b""), (CONTENT_TYPE, b""), (CORRELATION, b"")]
    elif how == 5:  # a signature that is nothing like one
        headers.append((SIGNATURE, rng.choice([b"", rng.randbytes(64), b"0" * 64])))
    else:  # null values (Kafka header values are nullable)
        headers = [*((k, None) for k, _ in headers), (SIGNATURE, None), (CORRELATION, None)]
    return headers


def stamp(rng: random.Random) -> int:
    now = now_ms()
    return rng.choice(
        [now, now + 10 * 365 * 86_400_000, 0, -1, 2**63 - 1, -(2**63), rng.randrange(2**40)]
    )


def text(rng: random.Random) -> str:
    return rng.choice(["", "x" * 10_000, "\x00\n\r\u202e", "forged", "é" * 100])


# ---- the control topic -------------------------------------------------------------------
def control_flood(rng: random.Random, codec: Codec, seen: Seen, n: int) -> list[Record]:
    lease_key = f"lease:{seen.reply_to}".encode()
    lease = seen.lease
    genuine_lease = codec.decode_control(lease.value)
    out: list[Record] = []
    for _ in range(n):
        how = rng.randrange(11)
        # never None: the broker refuses keyless records on a compacted topic (keyless())
        key: bytes | None = rng.choice([seen.request_id.encode(), lease_key, noise(rng, 64)])
        headers = list(AVRO_HEADERS)
        value: bytes | None
        if how == 0:
            value = noise(rng)
        elif how == 1:
            value = b""
        elif how == 2:  # a tombstone (the topic is compacted)
            value, key = None, rng.choice([seen.request_id.encode(), lease_key])
        elif how == 3:  # framed as a Control, any body
            value = MAGIC + codec.fingerprints["control"] + noise(rng, 200)
        elif how == 4:  # framed as any message, any body
            value = MAGIC + codec.fingerprints[rng.choice(sorted(codec.fingerprints))] + noise(rng)
        elif how == 5:  # the bridge's genuine lease, damaged, its headers (signature) kept
            value, key, headers = mangled(rng, lease.value), lease.key, list(lease.headers)
        elif how == 6:  # a cancel of the running request, without its attempt's secret
            cancel = Control(
                request_id=seen.request_id,
                correlation_id=rng.choice([*seen.other_correlations, uuid.uuid4().hex, ""]),
                reason=text(rng),
                at_ms=stamp(rng),
            )
            value, key = codec.encode_control(cancel), seen.request_id.encode()
        elif how in (7, 8):  # the bridge's lease released, moved, or its bridge "restarted"
            now = now_ms()
            release = Control(
                request_id=rng.choice(["", seen.request_id]),
                action="lease",
                reply_to=rng.choice([seen.reply_to, seen.reply_to + ".x", ""]),
                since_ms=rng.choice([now + 3_600_000, now, 0, stamp(rng)]),
                until_ms=rng.choice([0, now - 60_000, -(2**63), stamp(rng)]),
                at_ms=stamp(rng),
            )
            value, key = codec.encode_control(release), lease_key
            signer = rng.choice([None, rng.randbytes(32), b"test-chunk-signing-kez"])
            headers = signed(signer, value, AVRO_HEADERS)
            if how == 8:  # with the genuine lease's signature on it
                headers = [*AVRO_HEADERS, *((k, v) for k, v in lease.headers if k == SIGNATURE)]
        elif how == 9:  # the genuine lease with a field changed, its headers kept
            changed = genuine_lease.model_copy(
                update=rng.choice([{"until_ms": 0}, {"since_ms": now_ms() + 3_600_000}])
            )
            value, key, headers = codec.encode_control(changed), lease.key, list(lease.headers)
        else:  # a well-formed cancel (no attempt named)
            cancel = Control(request_id=seen.request_id, reason="odd", at_ms=stamp(rng))
            value = codec.encode_control(cancel)
        if rng.random() < 0.15:
            headers = odd_headers(rng, headers)
        out.append((key, value, headers))
    return out


async def keyless(bootstrap: str, seen: Seen, rng: random.Random) -> None:
    """Keyless records on the (compacted) control topic: the broker refuses each one, so
    no reader ever gets one. Sent by a producer of their own: a refused record must not
    upset the idempotent producer the flood shares with other tests."""
    producer = make_producer(bootstrap, enable_idempotence=False)
    await producer.start()
    try:
        for value in (noise(rng), b"", seen.lease.value):
            with pytest.raises(KafkaError):
                await producer.send_and_wait(seen.control, value, key=None)
    finally:
        await producer.stop()


# ---- the bridge's reply topic ------------------------------------------------------------
def chunk_flood(rng: random.Random, codec: Codec, seen: Seen, n: int) -> list[Record]:
    key = seen.request_id.encode()
    mine: Headers = [*AVRO_HEADERS, (CORRELATION, seen.correlation)]
    out: list[Record] = []
    for _ in range(n):
        how = rng.randrange(10)
        headers = list(mine)
        genuine_chunk = rng.choice(seen.chunks)
        value: bytes | None
        if how == 0:
            value = noise(rng)
        elif how == 1:
            value = rng.choice([b"", None])
        elif how == 2:  # framed as a chunk, any body
            value = MAGIC + codec.fingerprints["result_chunk"] + noise(rng)
        elif how == 3:  # another request's genuine chunk, damaged, its signature kept
            value, headers = mangled(rng, genuine_chunk.value), list(genuine_chunk.headers)
        elif how == 4:  # another request's genuine chunk as it was: signed, and not ours
            value, headers = genuine_chunk.value, list(genuine_chunk.headers)
        elif how == 5:  # another request's genuine chunk moved to the running one
            chunk = codec.decode_chunk(genuine_chunk.value)
            value = codec.encode_chunk(chunk.model_copy(update={"request_id": seen.request_id}))
            headers = [*mine, *((k, v) for k, v in genuine_chunk.headers if k == SIGNATURE)]
        else:  # a chunk of the running request, made up
            chunk = ResultChunk(
                request_id=seen.request_id,
                chunk_index=rng.choice([0, 1, 2, rng.randrange(COUNT), 2**31 - 1, -1, -(2**31)]),
                is_final=rng.random() < 0.5,
                success=rng.random() < 0.5,
                error=text(rng),
                data=rng.choice(['[{"forged": true}]', "[]", "not json", text(rng)]),
                record_count=rng.choice([0, 1, COUNT, 2**31 - 1, -1]),
            )
            value = codec.encode_chunk(chunk)
            if how == 7:  # signed with a guessed key
                headers = signed(rng.choice([rng.randbytes(32), b"x"]), value, mine)
            elif how == 8:  # signed with the services' key, for another attempt of it
                other = rng.choice([*seen.other_correlations, uuid.uuid4().hex]).encode()
                headers = signed(KEY, value, [*AVRO_HEADERS, (CORRELATION, other)])
            elif how == 9:  # a run of its own, signed with a guessed key
                run: Headers = [*mine, (RUN, uuid.uuid4().hex.encode())]
                headers = signed(rng.randbytes(16), value, run)
            # how == 6: unsigned
        if rng.random() < 0.15:
            headers = odd_headers(rng, headers)
        out.append((rng.choice([key, key, None, noise(rng, 32)]), value, headers))
    return out


# ---- flooding ----------------------------------------------------------------------------
async def send_all(producer, topic: str, records: list[Record]) -> None:
    """In batches (so the flood lands between the services' own records), each acknowledged."""
    for i in range(0, len(records), 20):
        futures = [
            await producer.send(
                topic, value, key=b"" if key is None and value is None else key, headers=headers
            )
            for key, value, headers in records[i : i + 20]
        ]
        await asyncio.gather(*futures)


def counted(records: list[Record], kind: str, codec: Codec) -> int:
    """How many of `records` a reader must count as forged (the oracle: it has the key)."""
    n = 0
    for _, value, headers in records:
        try:
            if kind == "lease" and codec.decode_control(value or b"").action != "lease":
                continue
            n += not genuine(KEY, value or b"", headers)
        except (ValueError, TypeError):
            continue  # unreadable before its signature is checked: dropped, not counted
    return n


@dataclass
class Counts:
    """The forged-records metric before a flood, plus what the flood must add to it."""

    lease: float
    chunk: float

    @classmethod
    def now(cls) -> Counts:
        return cls(forged("lease"), forged("chunk"))


async def flood(
    app: App,
    producer,
    codec: Codec,
    seen: Seen,
    rng,
    to_control: int,
    to_replies: int,
    expected: Counts,
) -> None:
    """`to_control` and `to_replies` hostile records at once; `expected` grows by the
    forgeries among them."""
    control = control_flood(rng, codec, seen, to_control)
    replies = chunk_flood(rng, codec, seen, to_replies)
    expected.lease += counted(control, "lease", codec)
    expected.chunk += counted(replies, "chunk", codec)
    await asyncio.gather(
        send_all(producer, seen.control, control), send_all(producer, seen.reply_to, replies)
    )


async def all_read(app: App, expected: Counts) -> None:
    """Until the readers have counted every forgery sent (or one of them died)."""
    await wait_until(
        lambda: (
            (forged("lease") >= expected.lease and forged("chunk") >= expected.chunk)
            or bool(dead(app))
        ),
        "every forgery counted",
    )
    await control_read(app)


# ---- the floods --------------------------------------------------------------------------
async def test_a_flood_during_a_stream_changes_nothing(pipeline, tail, agent_producer, codec):
    """Before the request, as it starts, and while its caller is served from the log."""
    app, stub = pipeline
    clean, seen = await clean_run(app, stub, tail)
    assert clean[-1].is_final and sum(c.record_count for c in clean) == COUNT
    rng = random.Random(FUZZ_SEED)
    seen.request_id = rid("fuzzed")
    before, expected = Counts.now(), Counts.now()

    # Before the request: what it must not find when it starts.
    await keyless(app.rt.bootstrap, seen, rng)
    await flood(app, agent_producer, codec, seen, rng, PER_TARGET // 3, 0, expected)
    await control_read(app)
    async with tail(app.rt.topics.requests) as requests:
        call = stub.GenerateDataStream(request(seen.request_id), timeout=HANG_GUARD_S)
        (asked,) = await requests.until(lambda got: got)
    seen.correlation = dict(asked.headers)[CORRELATION]  # the attacker reads it there too
    # As it starts: chunks the bridge reads beside the genuine ones.
    await flood(app, agent_producer, codec, seen, rng, 0, PER_TARGET // 3, expected)
    # Its caller reading nothing meanwhile, the bridge serves it from the log (the reply
    # topic) once it is some chunks behind: the rest of the flood lands in what it reads.
    inbox = app.servicer.inbox
    await wait_until(
        lambda: (p := inbox.pending.get(seen.request_id)) is None or p.spill is not None or p.done,
        "the caller served from the log",
    )
    await flood(
        app, agent_producer, codec, seen, rng, PER_TARGET * 2 // 3, PER_TARGET * 2 // 3, expected
    )
    await all_read(app, expected)
    chunks = await stream(call)

    assert dataset(chunks) == dataset(clean)
    assert chunks[-1].is_final and chunks[-1].success
    assert chunks[-1].metadata.data_sha256 == clean[-1].metadata.data_sha256
    assert dead(app) == []
    assert forged("lease") >= expected.lease > before.lease
    assert forged("chunk") >= expected.chunk > before.chunk
    await still_serving(app, stub)


async def test_a_flood_with_nothing_in_flight_changes_nothing(
    pipeline, tail, agent_producer, codec
):
    """Nothing running: the flood waits in the topics for whatever comes next."""
    app, stub = pipeline
    _, seen = await clean_run(app, stub, tail)
    seen.request_id = rid("next")  # the id of the call that comes next
    before, expected = Counts.now(), Counts.now()
    rng = random.Random(FUZZ_SEED + 1)
    await keyless(app.rt.bootstrap, seen, rng)
    await flood(app, agent_producer, codec, seen, rng, PER_TARGET, PER_TARGET, expected)
    await all_read(app, expected)
    assert dead(app) == []
    assert forged("lease") >= expected.lease > before.lease
    assert forged("chunk") >= expected.chunk > before.chunk
    resp = await stub.GenerateData(request(seen.request_id, 20), timeout=HANG_GUARD_S)
    assert resp.success and resp.record_count == 20
    await still_serving(app, stub)


# ---- what the flood found, each at its smallest --------------------------------------------
async def test_a_lease_with_a_null_signature_header_stops_no_reader(
    bridge_alone, agent_producer, codec
):
    """Found by the flood: one lease record whose `signature` header has a null value
    (Kafka header values are nullable) ends the process's control reader with a TypeError
    from `hmac.compare_digest(None, ...)` (kit/signing.py `genuine`, called from
    kit/control.py `_cancel`, which catches only DecodeError and ValueError). From then on
    the process sees no cancel and no lease: its generators work on for callers that left,
    its janitor never sweeps, and the bridge's HealthCheck does not say so."""
    app, _ = bridge_alone
    topic = app.servicer.inbox.topic
    now = now_ms()
    release = Control(
        request_id="", action="lease", reply_to=topic, since_ms=now, until_ms=0, at_ms=now
    )
    before = forged("lease")
    await agent_producer.send_and_wait(
        app.rt.topics.control,
        codec.encode_control(release),
        key=f"lease:{topic}".encode(),
        headers=[*AVRO_HEADERS, (SIGNATURE, None)],
    )
    await control_read(app)
    assert dead(app) == []
    assert forged("lease") > before


@pytest.mark.parametrize(
    "odd",
    [[(RUN, b"\xff")], [(CORRELATION, b"\xff")], [(SIGNATURE, None)]],
    ids=["run-id not UTF-8", "correlation-id not UTF-8", "null signature"],
)
async def test_a_hostile_reply_spoils_no_slow_caller(
    bridge_alone, tail, agent_producer, codec, caplog, odd
):
    """Found by the flood: a caller that fell QUEUE_CHUNKS behind is served from the log
    (bridge/inbox.py LogReader), whose `_fetch` calls `genuine()` on every record with no
    guard. One unsigned record on the reply topic, with a header `genuine()` cannot read
    (a `run-id` or `correlation-id` not in UTF-8: UnicodeDecodeError; a null `signature`:
    TypeError), then fails that caller's call with INTERNAL. (The shared reader survives
    the same record: `_run` catches everything, so it is dropped there, uncounted.)

    The test is the generator (it holds the key): it writes the caller's chunks in one
    batch, so the bridge queues QUEUE_CHUNKS of them and serves the rest from the log, and
    puts the hostile record among those (its odd header first: the first of a name counts)."""
    app, stub = bridge_alone
    n = QUEUE_CHUNKS + 4
    caplog.set_level(logging.INFO, logger="testdata.bridge.inbox")
    async with tail(app.rt.topics.requests) as requests:
        call = asyncio.ensure_future(
            stub.GenerateData(pb.GenerateRequest(entity="user", count=n), timeout=HANG_GUARD_S)
        )
        (asked,) = await requests.until(lambda got: got)
    headers = dict(asked.headers)
    request_id, reply_to = asked.key.decode(), headers[REPLY_TO].decode()
    mine: Headers = [*AVRO_HEADERS, (CORRELATION, headers[CORRELATION])]
    for i in range(n):
        if i == QUEUE_CHUNKS + 2:  # after the chunk the log is read from
            await agent_producer.send(reply_to, b"hostile", key=asked.key, headers=odd + mine)
        value = codec.encode_chunk(
            ResultChunk(
                request_id=request_id,
                chunk_index=i,
                is_final=i == n - 1,
                data=json.dumps([{"i": i}]),
                record_count=1,
            )
        )
        await agent_producer.send(
            reply_to, value, key=asked.key, headers=signed(app.rt.signing_key, value, mine)
        )
    await agent_producer.flush()
    resp = await call
    assert resp.success and json.loads(resp.data) == [{"i": i} for i in range(n)]
    assert "serving it from the log" in caplog.text  # the path this test is about


async def test_a_replayed_lease_release_abandons_nothing(
    embedded_broker, tail, agent_producer, codec
):
    """Found by replaying genuine control records verbatim: leases are signed, but nothing
    says which of two genuine leases is newer, so a control reader takes the last one it
    reads (kit/control.py `Cancellations.add`). Replaying any genuine lease older than
    LEASE_SECONDS (here the release a bridge wrote when it stopped: `testdata run` restarts
    a bridge with the same INSTANCE_ID, hence the same reply topic) makes the generators
    abandon that bridge's streams: "nobody waits: its bridge is gone". No key needed; done
    every LEASE_RENEW_SECONDS it stops the bridge's every stream for good."""
    tag = uuid.uuid4().hex[:8]
    first, channel = await started(embedded_broker, ["bridge"], tag)
    await channel.close()
    topic, control = first.servicer.inbox.topic, first.rt.topics.control
    lease_key = f"lease:{topic}".encode()

    def released(r: ConsumerRecord) -> bool:  # a lease valid until it was written
        lease = codec.decode_control(r.value)
        return r.key == lease_key and lease.until_ms <= lease.at_ms

    async with tail(control) as reader:
        await first.stop()  # releases its lease, deletes its reply topic
        got = await reader.until(lambda rs: any(released(r) for r in rs))
    release = next(r for r in got if released(r))
    probe = make_consumer(embedded_broker.bootstrap_servers, None)
    await probe.start()
    try:

        async def deleted() -> bool:
            return topic not in await probe.topics()

        await eventually(deleted, "the stopped bridge's reply topic deleted")
    finally:
        await probe.stop()

    app, channel = await started(
        embedded_broker, ["router", "traditional", "bridge"], tag, chunk_size=1000
    )
    try:
        assert app.servicer.inbox.topic == topic  # the same bridge, restarted
        stub = pb_grpc.TestDataServiceStub(channel)
        count = 50_000  # 50 chunks, a second of work: the replay reaches the generator long before
        call = stub.GenerateDataStream(request(rid("replayed"), count), timeout=HANG_GUARD_S)
        chunks = [await call.read()]
        await agent_producer.send_and_wait(
            control, release.value, key=release.key, headers=list(release.headers)
        )
        chunks += await stream(call)
        assert chunks[-1].is_final and chunks[-1].success
        assert sum(c.record_count for c in chunks) == count
    finally:
        await channel.close()
        await app.stop()
