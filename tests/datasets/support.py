"""Datasets delivered by the real path services (no broker), and what the results log
then holds of them: export tests compare files with exactly what a caller received."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import orjson

from services.core.formats import join_chunks
from services.core.generate import generate_records
from services.core.models import GenerateRequest, GenerationPath
from services.core.plan import Plan
from services.core.registry import SchemaRegistry
from services.core.report import Batch
from services.core.routing import RoutingDecision
from services.datasets.log import LoggedDataset, LoggedRequest, file_chunk
from services.kit.path.generation import Budget, PathService
from services.kit.runtime.stream import Message
from services.kit.wire.codec import get_codec
from services.kit.wire.headers import CORRELATION, LOG_COPY, REPLY_TO
from services.kit.wire.messages import ResultChunk, RoutedRequest
from services.kit.wire.topics import Topics
from services.traditional.service import TraditionalService
from tests.support import make_settings

REGISTRY = SchemaRegistry.load()
REPLIES = "testdata.replies.unit"
RESULTS = Topics().results
ANCHOR = datetime(2026, 3, 1, tzinfo=UTC)


class FakeRuntime:
    """The part of `Runtime` a path service uses, recording what it publishes."""

    def __init__(self, **settings: Any) -> None:
        self.settings = make_settings("unused:9092", **settings)
        self.topics = Topics()
        self.codec = get_codec()
        self.signing_key = self.settings.signing_key()
        self.sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]] = []

    async def topic_exists(self, topic: str) -> bool:
        return True

    async def send(self, topic: str, value: bytes, key: Any = None, headers: Any = None):
        k = key.encode() if isinstance(key, str) else key
        self.sent.append((topic, value, k, list(headers or [])))
        fut: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        fut.set_result(None)
        return fut

    async def publish(self, topic: str, value: bytes, key: Any = None, headers: Any = None):
        await self.send(topic, value, key, headers)

    async def dead_letter(self, *a: Any, **kw: Any) -> None:
        raise AssertionError(f"dead-lettered: {a} {kw}")


class ModelLike(PathService):
    """A non-deterministic path (as llm, rag, hybrid are): its chunks are kept on the
    results log, since its request alone cannot rebuild them."""

    path = GenerationPath.LLM

    async def generate(self, plan: Plan, budget: Budget) -> AsyncIterator[Batch]:
        for lo in range(0, plan.count, 7):
            yield Batch(records=generate_records(plan, lo, min(lo + 7, plan.count)))


@dataclass
class Delivered:
    logged: LoggedRequest
    dataset: LoggedDataset  # what the results log holds of it
    data: str  # the one document the caller received
    records: list[dict[str, Any]]  # its records, as JSON gives them

    @property
    def request_id(self) -> str:
        return self.logged.request.request_id


def _message(req: GenerateRequest, path: GenerationPath, reply: bool) -> Message:
    decision = RoutingDecision(path=path, reason="unit", confidence=1.0, requested_path=path)
    value = get_codec().encode_routed(
        RoutedRequest(request=req, routing=decision, received_at_ms=1)
    )
    headers: tuple[tuple[str, bytes], ...] = ((CORRELATION, b"c-1"),)
    if reply:
        headers += ((REPLY_TO, REPLIES.encode()),)
    return Message("t", 0, 5, req.request_id.encode(), value, headers, 1_700_000_000_000)


def log_of(sent: list[tuple[str, bytes, bytes | None, list[tuple[str, bytes]]]]) -> LoggedDataset:
    """What reading the results log gives for one request's records there (as
    `read_results` files them: a chunk marked LOG_COPY goes to the dataset's copy)."""
    codec = get_codec()
    out: dict[str, LoggedDataset] = {}
    for t, v, _, headers in sent:
        if t == RESULTS:
            file_chunk(out, codec.decode_chunk(v), headers)
    (ds,) = out.values()
    return ds


async def deliver(
    req: GenerateRequest,
    *,
    model: bool = False,
    reply: bool = True,
    chunk_size: int = 16,
) -> Delivered:
    """Run `req` (pinned: id, seed and anchor set) through a path service: traditional,
    or a model-like one (`model`); answered on a reply topic (`reply`, as the bridge and
    the Python client are) or on the results topic itself (an agent)."""
    assert req.request_id and req.seed is not None and req.anchor is not None
    rt = FakeRuntime(chunk_size=chunk_size)
    svc_cls: type[PathService] = ModelLike if model else TraditionalService
    svc = svc_cls(rt, REGISTRY)  # type: ignore[arg-type]
    await svc.handle(_message(req, svc.path, reply))
    codec = get_codec()
    topic = REPLIES if reply else RESULTS
    got = [
        codec.decode_chunk(v)
        for t, v, _, h in rt.sent
        if t == topic and not any(k == LOG_COPY for k, _ in h)  # a caller skips copies
    ]
    assert got and got[-1].is_final and got[-1].success, got[-1:]
    data = join_chunks(req.output_format, [c.data for c in got])
    from services.core.plan import build_plan

    plan = build_plan(req, REGISTRY)
    records = orjson.loads(orjson.dumps(generate_records(plan, 0, plan.count)))
    logged = LoggedRequest(req, 0, 0, 0)
    return Delivered(logged, log_of(rt.sent), data, records)


def request(
    n: int, entity: str, count: int, fmt: str = "JSON", *, defects: bool = False, **kw: Any
) -> GenerateRequest:
    return GenerateRequest(
        request_id=f"{entity}-{n}{'-defects' if defects else ''}-{fmt.lower()}",
        entity=entity,
        count=count,
        seed=n,
        anchor=ANCHOR,
        output_format=fmt,
        defect_triggering=defects,
        **kw,
    )


def final_only(ds: LoggedDataset) -> LoggedDataset:
    """What the log holds of a traditional dataset delivered on a reply topic."""
    assert ds.final is not None
    out = LoggedDataset(ds.request_id)
    out.add(ds.final.model_copy(update={"data": ""}))
    return out


__all__ = ["ResultChunk"]
