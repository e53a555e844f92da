"""Publishing one request's output as ordered chunks, with bounded in-flight acks."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson

from services.core.formats import ChunkEncoder, DatasetDigest
from services.core.models import EntitySchema, GenerationPath, OutputFormat
from services.core.report import ErrorKind
from services.kit.ops import metrics
from services.kit.runtime.replies import reply_headers
from services.kit.runtime.stream import Message, Runtime
from services.kit.wire.headers import LOG_COPY, TENANT
from services.kit.wire.messages import GenerationMetadata, ResultChunk
from services.kit.wire.signing import signed

MAX_IN_FLIGHT = 8


class ChunkEmitter:
    """Chunks of one request, keyed by request_id so they stay in order on one partition.

    `close()` returns only when every chunk is acknowledged by the broker: the caller
    commits the request's offset after that (at-least-once). A redelivered request
    regenerates the same chunks; the bridge drops duplicates by (request_id, chunk_index).
    """

    def __init__(
        self,
        runtime: Runtime,
        msg: Message,
        request_id: str,
        schema: EntitySchema,
        fmt: OutputFormat,
        path: str,
        topic: str | None,
        tenant: str,
    ):
        """`topic`: where the chunks go (replies.resolve_reply_topic); None: a reply topic
        that is gone, so only the results log gets its share of them. `tenant`: whose
        request it is (tenancy.origin, as the generator decided it)."""
        self.rt = runtime
        self.topic = topic
        #: whose request it is: on every chunk, so the results log says whose data it is
        self.tenant = tenant
        self.headers = [*reply_headers(msg), (TENANT, self.tenant.encode())]
        self.request_id = request_id
        self.encoder = ChunkEncoder(schema, fmt)
        self.fmt = fmt
        self.path = path
        self.index = 0
        self.records = 0
        self.finished = False  # the final chunk has been sent
        self.digest = DatasetDigest(fmt)
        # The results topic is the log of datasets (export, replay --verify). A caller's own
        # reply topic is not: it goes when its bridge stops. So where the chunks go to a
        # reply topic, the results log gets a copy of every chunk of a path whose output a
        # request alone cannot rebuild (llm, rag, hybrid), and of the final chunk (its
        # metadata and digest, data aside) of a deterministic one.
        rebuildable = GenerationPath(path).traits.rebuildable
        self.log_all = self.topic != runtime.topics.results and not rebuildable
        self.log_final = self.topic != runtime.topics.results
        # CSV and SQL cannot be read back into records (every CSV cell is text; SQL would
        # need parsing), so for those paths the log keeps a JSON copy of each chunk instead
        # of the chunk itself (as well as it, where the chunks go to the results log): any
        # dataset then exports to any format. A copy is marked LOG_COPY; callers skip it.
        self.copy_json = not rebuildable and fmt != OutputFormat.JSON
        # What was sent, for the result cache, while within (records, bytes); else None.
        self.kept: list[ResultChunk] | None = None
        self.keep_within = (0, 0)
        self._pending: list[asyncio.Future[Any]] = []

    async def emit(
        self, records: list[dict[str, Any]], last: bool, metadata: GenerationMetadata | None = None
    ) -> None:
        data = self.encoder.encode(records)
        copy = orjson.dumps(records).decode() if self.copy_json else None
        self.digest.update(data)
        if last and metadata is not None:
            metadata = metadata.model_copy(update={"data_sha256": self.digest.hexdigest()})
        chunk = ResultChunk(
            request_id=self.request_id,
            chunk_index=self.index,
            is_final=last,
            data=data,
            record_count=len(records),
            output_format=self.fmt,
            metadata=metadata,
        )
        await self._send(chunk, copy)
        self.records += len(records)
        self.finished = self.finished or last

    async def fail(
        self, error: str, kind: ErrorKind, metadata: GenerationMetadata | None = None
    ) -> None:
        """End the request with a failed final chunk (after whatever was already sent)."""
        await self._send(
            ResultChunk(
                request_id=self.request_id,
                chunk_index=self.index,
                is_final=True,
                success=False,
                error=error,
                error_kind=kind,
                output_format=self.fmt,
                metadata=metadata,
            )
        )

    def keep(self, records: int, size: int) -> None:
        """Keep the chunks sent (for the result cache) while they stay within bounds."""
        self.kept, self.keep_within = [], (records, size)

    async def resend(self, chunk: ResultChunk) -> None:
        """A chunk made elsewhere (the result cache), sent as this request's next."""
        await self._send(chunk)
        self.finished = self.finished or chunk.is_final

    async def _send(self, chunk: ResultChunk, copy: str | None = None) -> None:
        """`chunk` to the caller, and to the results log what it keeps of it: the chunk, a
        data-less final chunk, and/or `copy` (its records as JSON)."""
        if self.kept is not None:
            self.kept.append(chunk)
            records = sum(c.record_count for c in self.kept)
            size = sum(len(c.data) for c in self.kept)
            if records > self.keep_within[0] or size > self.keep_within[1]:
                self.kept = None
        value = self.rt.codec.encode_chunk(chunk)
        if self.topic is not None:
            headers = signed(self.rt.signing_key, value, self.headers)
            fut = await self.rt.send(self.topic, value, self.request_id, headers)
            self._pending.append(fut)
        if copy is not None:
            await self._log(
                chunk.model_copy(update={"data": copy, "output_format": OutputFormat.JSON}),
                [*self.headers, (LOG_COPY, b"json")],
            )
        if self.log_all and copy is None:
            await self._log(chunk, self.headers, value)
        elif self.log_final and chunk.is_final:
            await self._log(chunk.model_copy(update={"data": ""}), self.headers)
        self.index += 1
        metrics.CHUNKS.labels(self.path).inc()
        while len(self._pending) >= MAX_IN_FLIGHT:  # a chunk may send three records
            await self._pending.pop(0)

    async def _log(
        self, chunk: ResultChunk, headers: list[tuple[str, bytes]], value: bytes | None = None
    ) -> None:
        value = value if value is not None else self.rt.codec.encode_chunk(chunk)
        fut = await self.rt.send(self.rt.topics.results, value, self.request_id, headers)
        self._pending.append(fut)

    async def close(self) -> None:
        await asyncio.gather(*self._pending)
        self._pending.clear()
