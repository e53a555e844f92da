"""Handler-level tests: router, path base and bridge inbox against a runtime test double.

No broker: `FakeRuntime` records what a handler publishes and dead-letters, so each
rule of a handler is checked directly (the end-to-end tests cover the wiring).
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import AsyncIterator
from typing import Any

import pytest

from services.core.errors import ConstraintUnsatisfiable, GenerationStopped
from services.core.generate import generate_records
from services.core.models import GenerateRequest, GenerationPath
from services.core.plan import Plan
from services.core.registry import SchemaRegistry
from services.core.report import INTERNAL_ERROR, Batch, ErrorKind, Fallback
from services.core.routing import RoutingDecision
from services.kit.ops import metrics
from services.kit.path.generation import Budget, PathService
from services.kit.path.outcomes import request_fingerprint
from services.kit.runtime.deliveries import Delivery, Position
from services.kit.runtime.stream import Message
from services.kit.wire.codec import get_codec
from services.kit.wire.headers import CORRELATION, DEADLINE, REPLY_TO
from services.kit.wire.messages import Control, Outcome, ResultChunk, RoutedRequest
from services.kit.wire.topics import Topics
from services.router.service import RouterService
from services.traditional.service import TraditionalService
from tests.support import make_settings

REGISTRY = SchemaRegistry.load()
REPLIES = "testdata.replies.unit"
OUTCOMES = Topics().outcomes


class FakeRuntime:
    """The part of `Runtime` handlers use, recording instead of producing."""

    def __init__(self, **settings: Any) -> None:
        self.settings = make_settings("unused:9092", **settings)
        self.topics = Topics()
        self.codec = get_codec()
        self.signing_key = self.settings.signing_key()
        self.sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []
        self.dead: list[dict[str, Any]] = []

    async def send(self, topic: str, value: bytes, key: Any = None, headers: Any = None):
        k = key.encode() if isinstance(key, str) else key
        self.sent.append((topic, value, k, list(headers or [])))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def publish(self, topic: str, value: bytes, key: Any = None, headers: Any = None):
        await self.send(topic, value, key, headers)

    async def topic_exists(self, topic: str) -> bool:
        return True

    async def dead_letter(self, msg, consumer, kind, reason, errors=None, request_id=None):
        self.dead.append(
            {"consumer": consumer, "kind": kind, "reason": reason, "request_id": request_id}
        )

    def chunks(self, topic: str = REPLIES) -> list[ResultChunk]:
        return [self.codec.decode_chunk(v) for t, v, _, _ in self.sent if t == topic]

    def outcomes(self) -> list[Outcome]:
        return [self.codec.decode_outcome(v) for t, v, _, _ in self.sent if t == OUTCOMES]


def message(
    value: bytes, key: bytes | None = b"r-1", topic: str = "t", deadline_ms: int | None = None
) -> Message:
    headers = ((REPLY_TO, REPLIES.encode()), (CORRELATION, b"c-1"))
    if deadline_ms is not None:
        headers += ((DEADLINE, str(deadline_ms).encode()),)
    return Message(topic, 0, 5, key, value, headers, 1_700_000_000_000)


def routed(request: GenerateRequest) -> bytes:
    decision = RoutingDecision(
        path=GenerationPath.TRADITIONAL,
        reason="unit",
        confidence=1.0,
        requested_path=GenerationPath.LLM,
        fallbacks=[Fallback(source="llm", target="traditional", reason="down")],
    )
    return get_codec().encode_routed(
        RoutedRequest(request=request, routing=decision, received_at_ms=1)
    )


def now_ms() -> int:
    return int(time.time() * 1000)


def request(count: int = 10, **kw: Any) -> GenerateRequest:
    return GenerateRequest(request_id="r-1", entity="cart", count=count, seed=3, **kw)


class ScriptedPath(PathService):
    """A path whose batches the test decides."""

    path = GenerationPath.TRADITIONAL
    script: list[Any]

    async def generate(self, plan: Plan, budget: Budget) -> AsyncIterator[Batch]:
        for step in self.script:
            if isinstance(step, Exception):
                raise step
            if callable(step):
                step()
                continue
            lo, hi = step
            yield Batch(
                records=generate_records(plan, lo, hi),
                backend="claude",
                model="m",
                tokens=10,
                fallbacks=[Fallback(source="claude", target="traditional", reason="x")],
            )


def scripted(rt: FakeRuntime, *script: Any) -> ScriptedPath:
    svc = ScriptedPath(rt, REGISTRY)  # type: ignore[arg-type]
    svc.script = list(script)
    return svc


# ---- path base -----------------------------------------------------------------------
async def test_batches_become_ordered_chunks_with_one_final_and_the_report():
    rt = FakeRuntime(chunk_size=4)
    await scripted(rt, (0, 3), (3, 10)).handle(message(routed(request())))
    chunks = rt.chunks()
    assert [c.chunk_index for c in chunks] == [0, 1, 2]
    assert [c.record_count for c in chunks] == [3, 4, 3]  # batches split at chunk_size
    assert [c.is_final for c in chunks] == [False, False, True]
    assert chunks[-1].success and chunks[-1].metadata is not None
    md = chunks[-1].metadata
    assert md.llm_tokens_used == 20 and md.backend == "claude:m" and md.record_count == 10
    assert [str(f) for f in md.fallbacks] == [
        "llm -> traditional: down",
        "claude -> traditional: x",
    ]
    assert rt.dead == []


async def test_a_path_that_stops_early_fails_the_request_loudly():
    rt = FakeRuntime()
    await scripted(rt, (0, 4)).handle(message(routed(request())))
    last = rt.chunks()[-1]
    assert last.is_final and not last.success
    assert last.error_kind == ErrorKind.PROCESSING
    assert "ended after 4 of 10 records" in last.error
    assert rt.dead[0]["kind"] == ErrorKind.PROCESSING


async def test_a_path_that_produces_too_much_fails_the_request():
    rt = FakeRuntime()
    await scripted(rt, (0, 5), (0, 10)).handle(message(routed(request())))
    last = rt.chunks()[-1]
    assert not last.success and "more than the 10 planned" in last.error


async def test_nothing_follows_a_final_chunk_that_was_sent():
    rt = FakeRuntime()
    await scripted(rt, (0, 10), (0, 1)).handle(message(routed(request())))
    (chunk,) = rt.chunks()  # delivered in full; the extra records are logged, not sent
    assert chunk.is_final and chunk.success and rt.dead == []


async def test_unsatisfiable_constraints_are_a_generation_failure():
    rt = FakeRuntime()
    await scripted(rt, ConstraintUnsatisfiable("no total fits")).handle(message(routed(request())))
    (chunk,) = rt.chunks()
    assert chunk.error_kind == ErrorKind.GENERATION and "no total fits" in chunk.error


async def test_undecodable_path_message_is_dead_lettered_and_its_caller_answered():
    rt = FakeRuntime()
    await scripted(rt, (0, 10)).handle(message(b"garbage"))
    (chunk,) = rt.chunks()  # the key names the request: its caller does not wait in vain
    assert chunk.request_id == "r-1" and chunk.error_kind == ErrorKind.DECODE
    assert rt.dead[0]["kind"] == ErrorKind.DECODE
    await scripted(rt, (0, 10)).handle(message(b"garbage", key=None))
    assert len(rt.chunks()) == 1  # no key, nobody to answer


async def test_a_handler_that_raises_is_parked_and_its_caller_answered():
    from services.kit.runtime.stream import Subscriber

    rt = FakeRuntime()

    async def broken(msg):
        raise RuntimeError("bug")

    svc = scripted(rt, (0, 10))
    sub = svc.subscriber()
    sub.handler = broken
    await sub._work(None, _Done(), message(routed(request())))  # type: ignore[arg-type]
    assert rt.dead[0]["kind"] == ErrorKind.PROCESSING
    (chunk,) = rt.chunks()
    assert chunk.is_final and not chunk.success and chunk.error == INTERNAL_ERROR
    assert "RuntimeError: bug" in rt.dead[0]["reason"]  # the operator's account keeps it
    assert isinstance(sub, Subscriber)


async def test_a_path_that_raises_tells_its_caller_no_exception_class():
    """Seen: INTERNAL "... KafkaTimeoutError" reached callers. The caller hears that the
    service failed; the dead letter (and the log) keep which exception it was."""
    rt = FakeRuntime()
    await scripted(rt, (0, 3), KeyError("slot")).handle(message(routed(request())))
    last = rt.chunks()[-1]
    assert last.is_final and not last.success and last.error == INTERNAL_ERROR
    assert "KeyError" not in last.error
    assert rt.dead[0]["reason"] == "internal error: KeyError: 'slot'"


class StallingPath(PathService):
    """Produces three records, then waits for something that never comes (a model call
    that hangs, a lock never released): only the budget can end it."""

    path = GenerationPath.LLM

    async def generate(self, plan: Plan, budget: Budget) -> AsyncIterator[Batch]:
        yield Batch(records=generate_records(plan, 0, 3))
        await asyncio.Event().wait()


def over_budget(path: str) -> float:
    return metrics.REGISTRY.get_sample_value("testdata_over_budget_total", {"path": path}) or 0.0


async def test_a_path_past_its_budget_is_stopped_dead_lettered_and_its_caller_told():
    rt = FakeRuntime(chunk_size=2, generation_budget_seconds=0.2)
    before = over_budget("llm")
    await StallingPath(rt, REGISTRY).handle(message(routed(request())))  # type: ignore[arg-type]
    *sent, last = rt.chunks()
    assert [c.chunk_index for c in sent] == list(range(len(sent))) and len(sent) <= 2
    assert last.is_final and not last.success and last.error_kind == ErrorKind.OVER_BUDGET
    assert last.chunk_index == len(sent)  # follows what the caller already has
    assert "generation budget of 0.2 s spent after" in last.error and "of 10 records" in last.error
    assert last.metadata is not None and last.metadata.record_count == 10
    assert [(d["kind"], d["request_id"]) for d in rt.dead] == [(ErrorKind.OVER_BUDGET, "r-1")]
    assert over_budget("llm") == before + 1


async def test_the_callers_deadline_stops_a_path_mid_batch_without_a_dead_letter():
    rt = FakeRuntime(generation_budget_seconds=300)
    soon = int(time.time() * 1000) + 200
    await StallingPath(rt, REGISTRY).handle(message(routed(request()), deadline_ms=soon))  # type: ignore[arg-type]
    last = rt.chunks()[-1]
    assert last.is_final and last.error_kind == ErrorKind.EXPIRED
    assert "deadline passed after 3 of 10 records" in last.error
    assert rt.dead == []  # the caller left: nothing to park


async def test_a_path_told_to_stop_inside_synchronous_work_is_over_budget():
    rt = FakeRuntime()
    await scripted(rt, (0, 4), GenerationStopped("stopped before record 4")).handle(
        message(routed(request()))
    )
    last = rt.chunks()[-1]
    assert last.error_kind == ErrorKind.OVER_BUDGET and "after 4 of 10 records" in last.error
    assert rt.dead[0]["kind"] == ErrorKind.OVER_BUDGET


async def test_the_traditional_path_stops_within_its_budget_on_a_huge_request():
    rt = FakeRuntime(generation_budget_seconds=0.3)
    svc = TraditionalService(rt, REGISTRY)  # type: ignore[arg-type]
    huge = GenerateRequest(request_id="r-1", entity="cart", count=1_000_000, seed=3)
    await svc.handle(message(routed(huge)))
    chunks = rt.chunks()
    assert chunks[-1].error_kind == ErrorKind.OVER_BUDGET
    assert sum(c.record_count for c in chunks) < 1_000_000
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))


class Counted:
    """A delivery counter whose markers say the message was started `started` times."""

    def __init__(self, started: int, limit: int = 3) -> None:
        self.started, self.limit = started, limit
        self.begun: list[tuple[str, str]] = []

    async def begin(self, group: str, consumer: str, msg: Message) -> Delivery:
        self.begun.append((group, consumer))
        pos = Position(group, msg.topic, msg.partition, msg.offset)
        return Delivery(pos, self.started + 1, 1_700_000_000_000, self.limit)


async def test_a_message_started_max_deliveries_times_is_parked_and_answered_unstarted():
    rt = FakeRuntime()
    started: list[Message] = []

    async def handler(msg: Message) -> None:
        started.append(msg)

    sub = scripted(rt, (0, 10)).subscriber()
    sub.handler = handler
    sub.deliveries = Counted(started=3)
    await sub._work(None, _Done(), message(routed(request())))  # type: ignore[arg-type]
    assert started == []  # never started a fourth time
    ((kind, reason, rid),) = [(d["kind"], d["reason"], d["request_id"]) for d in rt.dead]
    assert kind == ErrorKind.POISON and rid == "r-1"
    assert reason.startswith("delivered 4 times: 3 attempts were started and none finished")
    (chunk,) = rt.chunks()  # the chunks of earlier attempts cannot be read back here: index 0
    assert chunk.is_final and chunk.error_kind == ErrorKind.POISON and chunk.chunk_index == 0
    assert sub.deliveries.begun == [(sub.group, sub.name)]


async def test_a_delivery_within_the_limit_is_handled():
    rt = FakeRuntime()
    sub = scripted(rt, (0, 10)).subscriber()
    sub.deliveries = Counted(started=2)
    await sub._work(None, _Done(), message(routed(request())))  # type: ignore[arg-type]
    assert rt.dead == [] and rt.chunks()[-1].success


class _Done:
    """A partition state that accepts the finish of anything."""

    def finish(self, offset):
        return None

    def held_back(self, offset):
        return False

    def take_ready(self):
        return []


# ---- outcomes for the learner --------------------------------------------------------
async def test_a_dataset_delivered_in_full_is_offered_to_the_learner_after_its_chunks():
    rt = FakeRuntime(chunk_size=4, learn_sample_records=6)
    req = request(
        domain=" Running ",
        context="runners",
        scenarios=[{"name": "race", "description": "race week"}],
    )
    await scripted(rt, (0, 3), (3, 10)).handle(message(routed(req)))
    (outcome,) = rt.outcomes()
    topics = [t for t, _, _, _ in rt.sent]
    assert topics.index(OUTCOMES) == len(topics) - 1  # after the final chunk
    assert rt.sent[-1][2] == b"r-1"  # keyed by request id
    assert (outcome.request_id, outcome.path, outcome.entity) == ("r-1", "traditional", "cart")
    assert outcome.domain == "running" and outcome.context == "runners"  # as retrieval scopes
    assert [(s.name, s.description, s.count) for s in outcome.scenarios] == [
        ("race", "race week", 10)
    ]
    assert outcome.record_count == 10 and outcome.invalid_count == 0
    delivered = [r for c in rt.chunks() for r in json.loads(c.data)]
    assert outcome.sample() == delivered[:6]
    assert outcome.fingerprint == request_fingerprint(req) and len(outcome.fingerprint) == 64
    # a dataset these settings do not learn is offered unchecked: no validation cost
    await scripted(rt, (0, 10)).handle(message(routed(request())))
    assert rt.outcomes()[-1].invalid_count is None


@pytest.mark.parametrize(
    "script",
    [
        [(0, 4)],  # stopped early
        [(0, 5), (0, 10)],  # too many
        [(0, 10), (0, 1)],  # failed after its final chunk
        [ConstraintUnsatisfiable("no total fits")],
    ],
    ids=["partial", "too-many", "failed-after-final", "unsatisfiable"],
)
async def test_no_outcome_for_a_run_that_did_not_succeed_in_full(script):
    rt = FakeRuntime()
    await scripted(rt, *script).handle(message(routed(request())))
    assert rt.outcomes() == []


async def test_no_outcome_for_a_cancelled_run_nor_for_a_request_that_opts_out():
    rt = FakeRuntime(chunk_size=4)
    svc = scripted(rt, (0, 5))
    svc.script += [
        lambda: svc.cancellations.add(
            Control(request_id="r-1", correlation_id="c-1", reason="enough", at_ms=now_ms())
        ),
        (5, 10),
    ]
    await svc.handle(message(routed(request())))
    assert rt.chunks()[-1].error_kind == ErrorKind.CANCELLED and rt.outcomes() == []
    await scripted(rt, (0, 10)).handle(message(routed(request(hints=["No-Learn"]))))
    assert rt.chunks()[-1].success and rt.outcomes() == []


async def test_an_outcome_that_cannot_be_published_never_fails_the_dataset():
    class NoOutcomes(FakeRuntime):
        async def publish(self, topic, value, key=None, headers=None):
            if topic == OUTCOMES:
                raise ConnectionError("broker gone")
            await super().publish(topic, value, key, headers)

    rt = NoOutcomes()
    await scripted(rt, (0, 10)).handle(message(routed(request())))
    assert rt.chunks()[-1].success and rt.dead == [] and rt.outcomes() == []


# ---- router --------------------------------------------------------------------------
def router(rt: FakeRuntime, llm_down: str | None = "no backend") -> RouterService:
    def availability():
        return {p: (llm_down if p == GenerationPath.LLM else None) for p in GenerationPath}

    return RouterService(rt, REGISTRY, availability)  # type: ignore[arg-type]


async def test_router_forwards_with_typed_fallbacks_and_reply_headers():
    rt = FakeRuntime()
    value = rt.codec.encode_request(request(hints=["coherent"]))
    await router(rt).handle(message(value, topic=rt.topics.requests))
    ((topic, out, key, headers),) = rt.sent
    assert topic == rt.topics.path(GenerationPath.TRADITIONAL) and key == b"r-1"
    assert (REPLY_TO, REPLIES.encode()) in headers and (CORRELATION, b"c-1") in headers
    decision = rt.codec.decode_routed(out).routing
    assert decision.requested_path == GenerationPath.LLM
    assert decision.fallbacks == [Fallback(source="llm", target="traditional", reason="no backend")]


async def test_router_answers_an_invalid_request_and_dead_letters_it():
    rt = FakeRuntime()
    value = rt.codec.encode_request(GenerateRequest(request_id="r-1", entity="spaceship"))
    await router(rt).handle(message(value, topic=rt.topics.requests))
    (chunk,) = rt.chunks()
    assert chunk.error_kind == ErrorKind.INVALID_REQUEST and chunk.error_details
    assert rt.dead[0]["kind"] == ErrorKind.INVALID_REQUEST


async def test_router_dead_letters_garbage_and_answers_by_key():
    rt = FakeRuntime()
    await router(rt).handle(message(b"\x00\x01 not a request", topic=rt.topics.requests))
    (chunk,) = rt.chunks()
    assert chunk.request_id == "r-1" and chunk.error_kind == ErrorKind.DECODE
    assert rt.dead[0]["kind"] == ErrorKind.DECODE


# ---- bridge inbox ----------------------------------------------------------------------
@pytest.fixture
def inbox():
    from services.bridge.inbox import Inbox

    # unsigned chunks: what these judge is order and attempts (signatures: test_signing.py)
    return Inbox(FakeRuntime(chunk_signing_key=None), "unit")  # type: ignore[arg-type]


def chunk_bytes(index: int, final: bool = False, rid: str = "r-1") -> bytes:
    return get_codec().encode_chunk(
        ResultChunk(request_id=rid, chunk_index=index, is_final=final, data="[]")
    )


async def test_inbox_delivers_in_order_and_drops_duplicates_and_other_attempts(inbox):
    p = inbox.open("r-1")
    mine = [(CORRELATION, p.correlation.encode())]
    inbox._dispatch(chunk_bytes(0), mine, 0, 10)
    inbox._dispatch(chunk_bytes(0), mine, 0, 11)  # redelivered duplicate
    inbox._dispatch(chunk_bytes(1), [(CORRELATION, b"an-earlier-attempt")], 0, 12)
    inbox._dispatch(chunk_bytes(1, final=True), mine, 0, 13)
    assert [(await p.get()).chunk_index for _ in range(2)] == [0, 1]
    assert inbox.dropped == 2


async def test_inbox_fails_a_request_whose_chunks_have_a_gap(inbox):
    from services.bridge.errors import ChunkGap

    p = inbox.open("r-1")
    inbox._dispatch(chunk_bytes(1), [(CORRELATION, p.correlation.encode())], 0, 10)
    with pytest.raises(ChunkGap):
        await p.get()


async def test_a_full_caller_is_passed_by_and_served_from_the_log(inbox):
    """The shared reader never waits: past QUEUE_CHUNKS it notes where the caller's next
    chunk is and delivers nothing more to it; other callers are not held up."""
    from services.bridge.inbox import QUEUE_CHUNKS

    slow, other = inbox.open("r-1"), inbox.open("r-2")
    mine = [(CORRELATION, slow.correlation.encode())]
    for i in range(QUEUE_CHUNKS + 5):
        inbox._dispatch(chunk_bytes(i), mine, 2, 100 + i)
    inbox._dispatch(chunk_bytes(0, True, "r-2"), [(CORRELATION, other.correlation.encode())], 1, 7)
    assert (await other.get()).is_final  # not stuck behind the full queue
    assert slow.spill == (2, 100 + QUEUE_CHUNKS) and slow.log is not None
    assert slow.next_index == QUEUE_CHUNKS and slow.queue.full()
    assert inbox.dropped == 0  # passed by, not lost: the log reader reads them


def test_failed_chunks_map_to_status_codes_by_kind():
    import grpc

    from services.bridge.server import status_for

    assert status_for(ErrorKind.GENERATION) == grpc.StatusCode.FAILED_PRECONDITION
    assert status_for(ErrorKind.INVALID_REQUEST) == grpc.StatusCode.INVALID_ARGUMENT
    assert status_for(ErrorKind.PROCESSING) == grpc.StatusCode.INTERNAL
    assert status_for("") == grpc.StatusCode.INTERNAL


def test_a_lease_run_out_or_a_restarted_bridge_means_nobody_waits():
    from services.kit.runtime.control import Cancellations
    from services.kit.wire.messages import Control

    def lease(topic: str, since_ms: int, until_ms: int) -> Control:
        return Control(
            request_id="",
            action="lease",
            reply_to=topic,
            since_ms=since_ms,
            until_ms=until_ms,
            at_ms=0,
        )

    c = Cancellations()
    topic = "testdata.replies.b1"
    assert c.orphaned(topic, sent_ms=1000, now_ms=2000) is None  # no lease seen: not judged
    c.add(
        Control(
            request_id="", action="lease", reply_to=topic, since_ms=500, until_ms=10_000, at_ms=0
        )
    )
    assert c.orphaned(topic, sent_ms=1000, now_ms=9_000) is None
    assert "lease on testdata.replies.b1 ran out 1000 ms ago" in (
        c.orphaned(topic, sent_ms=1000, now_ms=11_000) or ""
    )
    c.add(
        Control(
            request_id="", action="lease", reply_to=topic, since_ms=5000, until_ms=20_000, at_ms=0
        )
    )
    assert "restarted" in (c.orphaned(topic, sent_ms=1000, now_ms=12_000) or "")  # the old one's
    assert c.orphaned(topic, sent_ms=6000, now_ms=12_000) is None
    assert c.reason("", None) is None  # a lease is no cancellation


def test_a_cancel_stops_only_the_attempt_it_names_and_never_from_the_future():
    """Seen: any Kafka client cancelled any request, ahead of time and for good, with a
    far-future `at_ms` and no correlation."""
    from services.kit.runtime.control import Cancellations
    from services.kit.wire.messages import Control

    c = Cancellations(ttl_s=60)
    now = now_ms()
    c.add(Control(request_id="r", reason="mine", at_ms=now + 10**12))
    assert c.reason("r", "secret") is None  # the request's attempt carries a secret
    assert c.reason("r", None) == "mine"  # one without a correlation: anyone's to cancel
    assert c.reason("r", None, now_ms=now + 61_000) is None  # clamped: expired as any other
    c.add(Control(request_id="r", correlation_id="secret", reason="owner", at_ms=now))
    assert c.reason("r", "secret") == "owner" and c.reason("r", "other") is None


def test_one_attempts_cancel_never_displaces_anothers_with_the_same_id():
    """Two tenants may have one request id in flight at once: each cancel stays its own."""
    from services.kit.runtime.control import Cancellations
    from services.kit.wire.messages import Control

    c = Cancellations(ttl_s=60)
    c.add(Control(request_id="r", correlation_id="a", reason="a left", at_ms=now_ms()))
    c.add(Control(request_id="r", correlation_id="b", reason="b left", at_ms=now_ms()))
    assert c.reason("r", "a") == "a left" and c.reason("r", "b") == "b left"


def test_the_newest_lease_wins_not_the_last_read():
    """Seen: a replayed genuine release of a bridge's earlier life abandoned the streams of
    the bridge now on that topic."""
    from services.kit.runtime.control import Cancellations
    from services.kit.wire.messages import Control

    def lease(since: int, at: int, until: int) -> Control:
        return Control(
            request_id="", action="lease", reply_to="t", since_ms=since, at_ms=at, until_ms=until
        )

    c = Cancellations()
    c.add(lease(since=2000, at=2000, until=9_000))  # the bridge now on the topic
    c.add(lease(since=1000, at=1500, until=0))  # its predecessor's release, replayed
    assert c.lease("t").since_ms == 2000
    c.add(lease(since=2000, at=1000, until=3000))  # an older renewal of this life
    assert c.lease("t").until_ms == 9_000
    c.add(lease(since=2000, at=5000, until=0))  # this life's own release
    assert c.lease("t").until_ms == 0
