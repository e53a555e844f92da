"""A typed client for agents: one request in, its dataset out, over Kafka or over gRPC.

    async with KafkaTestDataClient() as client:  # finds `make run` (or pass a bootstrap)
        result = await client.generate(GenerateRequest(entity="cart", count=50, seed=7))
        async for chunk in client.stream(GenerateRequest(entity="order", count=100_000)):
            ...

Over Kafka the client publishes to the requests topic with a `reply-to` header naming a
reply topic of its own (created on enter, deleted on exit), reads its chunks from there in
order, drops duplicates (a redelivered request regenerates them), and raises
`GenerationFailed` with the error kind and field details when the final chunk says so.
Which chunks make the dataset is `kit.wire.assembler`'s rule, as for the bridge: never two runs
of a redelivered llm/rag/hybrid request spliced (`generate` takes the newest run whole, a
`stream` that already yielded another run's chunks fails: `generation_restarted`), and a
missing chunk fails the request (`chunk_gap`).
`GrpcTestDataClient` offers the same methods over the bridge.
"""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from typing import Any

import orjson
from pydantic import BaseModel, ConfigDict

from services.client.errors import GenerationFailed
from services.core.formats import join_chunks
from services.core.models import GenerateRequest, OutputFormat
from services.kit.ops.runfile import locate_bootstrap, locate_grpc, run_file_path
from services.kit.runtime.kafka import (
    assign_all,
    delete_topics,
    ensure_topics_exist,
    make_consumer,
    make_producer,
    stop_quietly,
    use_security,
)
from services.kit.settings import get_settings
from services.kit.wire.assembler import Assembler, Verdict
from services.kit.wire.codec import get_codec
from services.kit.wire.headers import AVRO, CONTENT_TYPE, REPLY_TO, correlation_of, run_of
from services.kit.wire.messages import ErrorDetail, GenerationMetadata, ResultChunk
from services.kit.wire.tenancy import vouch
from services.kit.wire.topics import Topics

#: Chunks held out of order before a missing one counts as lost (Kafka keeps a run's
#: order, so this is a safety margin, not a working set).
REORDER_WINDOW = 64


class Dataset(BaseModel):
    """A whole dataset: `data` is one document; `records` are parsed for JSON."""

    model_config = ConfigDict(frozen=True)

    request_id: str
    output_format: OutputFormat
    data: str
    record_count: int
    chunks: int
    metadata: GenerationMetadata | None

    @property
    def records(self) -> list[dict[str, Any]]:
        if self.output_format != OutputFormat.JSON:
            raise ValueError(f"records are parsed for JSON only, this is {self.output_format}")
        return list(orjson.loads(self.data))


def _with_id(req: GenerateRequest) -> GenerateRequest:
    return (
        req
        if req.request_id
        else req.model_copy(update={"request_id": f"agent-{uuid.uuid4().hex}"})
    )


async def _collect(
    request_id: str, fmt: OutputFormat, chunks: AsyncIterator[ResultChunk | None]
) -> Dataset:
    """One dataset from its chunks; None among them: a newer run follows, start over."""
    parts: list[str] = []
    n, last = 0, None
    async for c in chunks:
        if c is None:
            parts, n, last = [], 0, None
            continue
        parts.append(c.data)
        n += c.record_count
        last = c
    return Dataset(
        request_id=request_id,
        output_format=fmt,
        data=join_chunks(fmt, parts),
        record_count=n,
        chunks=len(parts),
        metadata=last.metadata if last else None,
    )


class KafkaTestDataClient:
    """Publishes requests to Kafka and reads their chunks from its own reply topic."""

    def __init__(
        self,
        bootstrap: str | None = None,
        *,
        topic_prefix: str | None = None,
        timeout_s: float = 120.0,
        instance: str | None = None,
        signing_key: bytes | None = None,
    ):
        """`bootstrap` None: KAFKA_BOOTSTRAP_SERVERS, else the running `testdata run`
        (its run file); `topic_prefix` None: TOPIC_PREFIX. `signing_key`: the services'
        CHUNK_SIGNING_KEY, to publish a request as a tenant's (`publish(tenant=...)`)."""
        settings = get_settings()
        found = locate_bootstrap(settings, bootstrap)
        if found is None:
            raise LookupError(
                "no Kafka bootstrap given, KAFKA_BOOTSTRAP_SERVERS unset and no testdata run "
                f"is up ({run_file_path(settings.data_dir)} absent)"
            )
        self.bootstrap = use_security(found.value, settings.kafka)
        prefix = settings.topic_prefix if topic_prefix is None else topic_prefix
        self.topics = Topics(prefix)
        self.timeout_s = timeout_s
        self.signing_key = signing_key
        self.reply_topic = self.topics.replies(instance or f"agent-{uuid.uuid4().hex[:12]}")
        self.codec = get_codec()
        self._queues: dict[str, asyncio.Queue[tuple[ResultChunk, str | None, str]]] = {}
        self._producer: Any = None
        self._consumer: Any = None
        self._reader: asyncio.Task[None] | None = None

    async def __aenter__(self) -> KafkaTestDataClient:
        spec = self.topics.specs["replies"]
        await ensure_topics_exist(
            self.bootstrap,
            {self.reply_topic: spec.partitions},
            replication_factor=spec.replication,
            configs={self.reply_topic: spec.configs()},
        )
        self._producer = make_producer(self.bootstrap)
        await self._producer.start()
        self._consumer = make_consumer(self.bootstrap, None)
        await self._consumer.start()
        await assign_all(self._consumer, self.reply_topic, at_end=True)
        self._reader = asyncio.create_task(self._read())
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._reader is not None:
            self._reader.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._reader
        if self._consumer is not None:
            await stop_quietly(self._consumer, "agent reply reader")
        if self._producer is not None:
            await stop_quietly(self._producer, "agent producer")
        await delete_topics(self.bootstrap, [self.reply_topic])  # it has no reader left

    async def _read(self) -> None:
        while True:
            batch = await self._consumer.getmany(timeout_ms=500)
            for records in batch.values():
                for r in records:
                    try:
                        chunk = self.codec.decode_chunk(r.value or b"")
                    except Exception:  # noqa: BLE001 - not ours to judge; skip it
                        continue
                    q = self._queues.get(chunk.request_id)
                    if q is not None:
                        q.put_nowait((chunk, correlation_of(r.headers), run_of(r.headers)))

    async def publish(self, req: GenerateRequest, *, tenant: str | None = None) -> str:
        """Put a request on the requests topic (answers go to this client's reply topic).
        With a `tenant`, the request is that tenant's: vouched for with the client's
        signing key (kit/tenancy.py), as a bridge does; without the key the generators
        take it as `local` (and, with no key anywhere, as written)."""
        req = _with_id(req)
        self._queues.setdefault(req.request_id, asyncio.Queue())
        headers = [(CONTENT_TYPE, AVRO.encode()), (REPLY_TO, self.reply_topic.encode())]
        if tenant is not None:
            headers = vouch(self.signing_key, req.request_id, tenant, headers)
        await self._producer.send_and_wait(
            self.topics.requests,
            self.codec.encode_request(req),
            key=req.request_id.encode(),
            headers=headers,
        )
        return req.request_id

    async def chunks(self, request_id: str) -> AsyncIterator[ResultChunk]:
        """The chunks of a published request, in order, each once, of one run; raises on
        failure."""
        async for c in self._assembled(request_id, restartable=False):
            assert c is not None  # not restartable: a newer run fails instead
            yield c

    async def _assembled(
        self, request_id: str, restartable: bool
    ) -> AsyncIterator[ResultChunk | None]:
        """The chunks the assembler delivers; None: forget them, a newer run follows."""
        q = self._queues.setdefault(request_id, asyncio.Queue())
        asm = Assembler(request_id, restartable=restartable, window=REORDER_WINDOW)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + self.timeout_s
        try:
            while not asm.done:
                left = deadline - loop.time()
                if left <= 0:
                    raise GenerationFailed(
                        request_id,
                        "timeout",
                        f"no final chunk in {self.timeout_s:g} s: {asm.finish()}",
                        [],
                    )
                try:
                    item = await asyncio.wait_for(q.get(), left)
                except TimeoutError:
                    continue
                step = asm.offer(*item)
                if step.problem is not None:
                    kind = "chunk_gap" if step.verdict is Verdict.GAP else "generation_restarted"
                    raise GenerationFailed(request_id, kind, step.problem, [])
                if step.restarted:
                    yield None
                for c in step.chunks:
                    if not c.success:
                        raise GenerationFailed(
                            request_id, c.error_kind or "failed", c.error, c.error_details
                        )
                    yield c
        finally:
            self._queues.pop(request_id, None)

    async def stream(
        self, req: GenerateRequest, *, tenant: str | None = None
    ) -> AsyncIterator[ResultChunk]:
        req = _with_id(req)
        self._queues.setdefault(req.request_id, asyncio.Queue())
        await self.publish(req, tenant=tenant)
        async for c in self.chunks(req.request_id):
            yield c

    async def generate(self, req: GenerateRequest) -> Dataset:
        """The whole dataset; a redelivery's newer run replaces an earlier one's chunks."""
        req = _with_id(req)
        self._queues.setdefault(req.request_id, asyncio.Queue())
        await self.publish(req)
        return await _collect(
            req.request_id, req.output_format, self._assembled(req.request_id, restartable=True)
        )


class GrpcTestDataClient:
    """The same over the gRPC bridge (`TestDataService`)."""

    def __init__(self, target: str | None = None, *, timeout_s: float = 120.0):
        """`target` None: GRPC_PORT if set, else the running `testdata run`'s bridge."""
        self.settings = get_settings()
        self.target = locate_grpc(self.settings, target).value
        self.timeout_s = timeout_s
        self._channel: Any = None
        self._stub: Any = None
        self._auth: tuple[tuple[str, str], ...] = ()

    async def __aenter__(self) -> GrpcTestDataClient:
        from services.client.channel import call_metadata, open_channel
        from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc

        self._auth = call_metadata(self.settings.client)
        self._channel = open_channel(self.target, self.settings.client, aio=True)
        self._stub = pb_grpc.TestDataServiceStub(self._channel)
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self._channel is not None:
            await self._channel.close()

    def _proto(self, req: GenerateRequest) -> Any:
        from google.protobuf import json_format

        from services.proto.testdata.v1 import test_data_pb2 as pb

        body = req.model_dump(mode="json", by_alias=True, exclude_none=True, exclude={"replay_of"})
        return json_format.ParseDict(body, pb.GenerateRequest(), ignore_unknown_fields=True)

    async def stream(self, req: GenerateRequest) -> AsyncIterator[ResultChunk]:
        import grpc

        req = _with_id(req)
        try:
            async for c in self._stub.GenerateDataStream(
                self._proto(req), timeout=self.timeout_s, metadata=self._auth
            ):
                yield ResultChunk(
                    request_id=c.request_id,
                    chunk_index=c.chunk_index,
                    is_final=c.is_final,
                    data=c.data,
                    record_count=c.record_count,
                    output_format=req.output_format,
                    metadata=_metadata(c.metadata) if c.is_final else None,
                )
        except grpc.aio.AioRpcError as exc:
            raise _failed(req.request_id, exc) from exc

    async def generate(self, req: GenerateRequest) -> Dataset:
        req = _with_id(req)
        return await _collect(req.request_id, req.output_format, self.stream(req))


def _metadata(md: Any) -> GenerationMetadata:
    from google.protobuf import json_format

    d = json_format.MessageToDict(md, preserving_proto_field_name=True)
    d["fallback_steps"] = []  # strings over gRPC; typed on Kafka
    d.pop("fallbacks", None)
    return GenerationMetadata.model_validate(d)


def _failed(request_id: str, exc: Any) -> GenerationFailed:
    from google.rpc import error_details_pb2
    from grpc_status import rpc_status

    details, kind = [], exc.code().name.lower()
    status = rpc_status.from_call(exc)
    for d in status.details if status else []:
        if d.Is(error_details_pb2.BadRequest.DESCRIPTOR):
            br = error_details_pb2.BadRequest()
            d.Unpack(br)
            details += [
                ErrorDetail(path=v.field, message=v.description) for v in br.field_violations
            ]
        elif d.Is(error_details_pb2.ErrorInfo.DESCRIPTOR):
            info = error_details_pb2.ErrorInfo()
            d.Unpack(info)
            kind = info.reason.lower() or kind
    return GenerationFailed(request_id, kind, exc.details() or "", details)
