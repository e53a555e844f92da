"""Reading the logs datasets come from: the requests topic (what was asked, exactly as
logged, and whose request it was) and the results topic (what was delivered: every chunk
of a path whose output a request alone cannot rebuild, and the final chunk with its
metadata and digest for all).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

from aiokafka import TopicPartition

from services.core.models import GenerateRequest
from services.core.reproducible import derive_request_id, pin_logged
from services.kit.runtime.kafka import (
    end_positions,
    make_consumer,
    partitions_of,
    positions_at,
    stop_quietly,
)
from services.kit.wire.assembler import Assembler, State, Verdict
from services.kit.wire.codec import get_codec
from services.kit.wire.errors import DecodeError
from services.kit.wire.headers import (
    CONTENT_TYPE,
    LOG_COPY,
    TENANT,
    correlation_of,
    header_text,
    key_text,
    run_of,
)
from services.kit.wire.messages import ResultChunk
from services.kit.wire.tenancy import LOCAL, origin


@dataclass(frozen=True)
class LoggedRequest:
    request: GenerateRequest  # as the router pinned it: id, seed and anchor set
    partition: int
    offset: int
    timestamp_ms: int
    #: whose request it is, as `tenancy.origin` decides it under the key the log was read
    #: with: the tenant a bridge vouched for, else `local` (without a key: as written)
    tenant: str = LOCAL


@dataclass(frozen=True)
class Selection:
    """Which logged requests replay and export take (each filter empty: any). One place,
    so both commands select alike."""

    request_ids: frozenset[str] = frozenset()
    #: the domain a request was served as: its own, else its entity's (lower case)
    domain: str = ""
    entity: str = ""
    #: whose requests (LoggedRequest.tenant: vouched for, when the log is read with a key)
    tenants: frozenset[str] = frozenset()
    _served: dict[str, str] = field(default_factory=dict, compare=False, repr=False)

    @classmethod
    def of(
        cls,
        request_ids: Sequence[str] = (),
        domain: str | None = None,
        entity: str | None = None,
        tenants: Sequence[str] = (),
    ) -> Selection:
        return cls(
            frozenset(request_ids),
            (domain or "").strip().lower(),
            entity or "",
            frozenset(tenants),
        )

    def served_as(self, req: GenerateRequest) -> str:
        """The domain a request was served as: its own, else its entity's (as the
        outcomes say), so a request that left `domain` empty matches `--domain ecommerce`."""
        if req.domain.strip():
            return req.domain.strip().lower()
        if req.schema_.fields:
            return "custom"
        if not self._served:
            from services.core.registry import SchemaRegistry

            self._served.update(
                {s.name: s.domain.strip().lower() for s in SchemaRegistry.load().list()}
            )
        return self._served.get((req.schema_.predefined_schema or req.entity).strip().lower(), "")

    def keep(self, logged: LoggedRequest) -> bool:
        req = logged.request
        return (
            (not self.request_ids or req.request_id in self.request_ids)
            and (not self.tenants or logged.tenant in self.tenants)
            and (not self.domain or self.served_as(req) == self.domain)
            and (not self.entity or (req.entity or req.schema_.predefined_schema) == self.entity)
        )


@dataclass
class LoggedRun:
    """One run of one attempt of a request, as its chunks are on the results log."""

    asm: Assembler
    #: whose run it is: the `tenant` its generator put on its chunks (none: before tenants)
    tenant: str = LOCAL
    chunks: dict[int, ResultChunk] = field(default_factory=dict)  # each index once
    final: ResultChunk | None = None  # its final chunk, or only that chunk's metadata copy
    last: int = 0  # when its latest chunk came, among the request's

    @property
    def whole(self) -> bool:
        """Every chunk up to the final one is on the log, each once, of this run only."""
        return self.asm.state is State.COMPLETE


@dataclass
class LoggedDataset:
    """What the results topic holds of one request.

    A request may be on the log more than once: attempts (`correlation-id`) and, for a
    redelivered llm/rag/hybrid request, runs (`run-id`) whose data differ. Each run is
    assembled apart (kit/assembler.py: duplicates dropped, order, what is missing), and
    the dataset is one run whole, never a splice: the newest run complete and successful
    on the log; failing that, the newest with a final chunk (a failure, or a deterministic
    run's metadata to rebuild from); failing that, the newest run, reported incomplete."""

    request_id: str
    runs: dict[tuple[str | None, str, str], LoggedRun] = field(default_factory=dict)
    _added: int = 0
    #: The JSON copy of a CSV or SQL dataset's chunks (marked LOG_COPY): how records a
    #: request alone cannot rebuild are read back, whatever format they were delivered in.
    copy: LoggedDataset | None = None

    def add(
        self, c: ResultChunk, correlation: str | None = None, run: str = "", tenant: str = LOCAL
    ) -> None:
        self._added += 1
        key = (correlation, run, tenant)
        if (logged := self.runs.get(key)) is None:
            asm = Assembler(self.request_id, correlation, window=None)  # the whole log
            logged = self.runs[key] = LoggedRun(asm, tenant)
        logged.last = self._added
        if c.is_final and (logged.final is None or c.data or not logged.final.data):
            logged.final = c
        if c.is_final and not c.data and c.record_count:
            return  # the metadata copy of a deterministic path's final chunk: no data
        if logged.asm.offer(c, correlation, run).verdict in (Verdict.DELIVER, Verdict.WAIT):
            logged.chunks[c.chunk_index] = c

    def of(self, tenant: str) -> LoggedDataset:
        """Only `tenant`'s runs: two tenants may use one request id."""
        mine = LoggedDataset(self.request_id, _added=self._added)
        mine.runs = {k: r for k, r in self.runs.items() if r.tenant == tenant}
        mine.copy = self.copy.of(tenant) if self.copy is not None else None
        return mine

    @property
    def chosen(self) -> LoggedRun | None:
        """The run this dataset is (see the class docstring)."""
        runs = list(self.runs.values())
        ok = [r for r in runs if r.whole and r.final is not None and r.final.success]
        finals = [r for r in runs if r.final is not None]
        return max(ok or finals or runs, key=lambda r: r.last, default=None)

    @property
    def final(self) -> ResultChunk | None:
        return self.chosen.final if self.chosen else None

    @property
    def chunks(self) -> dict[int, ResultChunk]:
        return self.chosen.chunks if self.chosen else {}

    @property
    def path(self) -> str:
        md = self.final.metadata if self.final else None
        return md.generation_path if md else ""

    def gaps(self) -> list[int]:
        """Missing chunk indexes before the final one (all of them if there is no final)."""
        if self.final is None:
            return [-1]
        return [i for i in range(self.final.chunk_index) if i not in self.chunks]

    def kept(self) -> bool:
        """Every chunk is on the log (not only the final chunk's metadata)."""
        return self.chosen is not None and self.chosen.whole


@dataclass
class Window:
    """Which records of a topic to read: by offsets per partition or by time."""

    since_ms: int | None = None
    until_ms: int | None = None
    from_offset: int | None = None  # the same on every partition (or the one asked)
    to_offset: int | None = None  # exclusive
    partition: int | None = None


async def _read(
    bootstrap: str,
    topic: str,
    window: Window,
    on_record: Callable[[Any], None],
    progress: Callable[[int], None] | None = None,
) -> None:
    consumer = make_consumer(
        bootstrap, None, max_partition_fetch_bytes=1024 * 1024, fetch_max_bytes=4 * 1024 * 1024
    )
    await consumer.start()
    try:
        parts = await partitions_of(consumer, topic)
        if window.partition is not None:
            parts = [p for p in parts if p == window.partition]
        tps = [TopicPartition(topic, p) for p in parts]
        consumer.assign(tps)
        ends = await end_positions(consumer, tps)
        starts = await consumer.beginning_offsets(tps)
        if window.since_ms is not None:
            starts = await positions_at(consumer, tps, window.since_ms)
        if window.from_offset is not None:
            starts = {tp: max(starts[tp], window.from_offset) for tp in tps}
        if window.to_offset is not None:
            ends = {tp: min(ends[tp], window.to_offset) for tp in tps}
        todo = {tp for tp in tps if starts[tp] < ends[tp]}
        for tp in tps:
            consumer.seek(tp, starts[tp])
        while todo:
            batch = await consumer.getmany(*todo, timeout_ms=1000, max_records=16)
            for tp, records in batch.items():
                for r in records:
                    if r.offset >= ends[tp]:
                        todo.discard(tp)
                        break
                    if window.until_ms is not None and r.timestamp > window.until_ms:
                        todo.discard(tp)
                        break
                    on_record(r)
                    if progress:
                        progress(1)
                if records and records[-1].offset + 1 >= ends[tp]:
                    todo.discard(tp)
    finally:
        await stop_quietly(consumer, "log reader")


async def read_requests(
    bootstrap: str,
    topic: str,
    window: Window,
    *,
    key: bytes | None = None,
    keep: Callable[[LoggedRequest], bool] = lambda r: True,
    progress: Callable[[int], None] | None = None,
) -> tuple[list[LoggedRequest], int]:
    """The requests in the window that `keep` accepts, pinned as the router pins them,
    each with its tenant as `key` (the services' CHUNK_SIGNING_KEY) proves it; and how
    many records were not requests at all (undecodable)."""
    codec = get_codec()
    out: list[LoggedRequest] = []
    bad = 0

    def on_record(r: Any) -> None:
        nonlocal bad
        headers = {k: v.decode("utf-8", "replace") for k, v in (r.headers or ())}
        try:
            req = codec.decode_request(r.value or b"", headers.get(CONTENT_TYPE))
        except (DecodeError, ValueError):
            bad += 1
            return
        rid = req.request_id or key_text(r.key) or derive_request_id(r.value or b"", r.timestamp)
        req = pin_logged(req, rid, r.timestamp)
        whose = origin(key, rid, r.headers)
        logged = LoggedRequest(req, r.partition, r.offset, r.timestamp, whose.tenant)
        if keep(logged):
            out.append(logged)

    await _read(bootstrap, topic, window, on_record, progress)
    return out, bad


async def read_results(
    bootstrap: str,
    topic: str,
    window: Window,
    wanted: set[str] | None = None,
    progress: Callable[[int], None] | None = None,
    *,
    data: bool = True,
) -> dict[str, LoggedDataset]:
    """Every request's chunks and final metadata on the results log, by run. Without
    `data`, each chunk's data stays on the log and `position(chunk.data)` says where:
    memory grows with the chunks, not with the records (export reads them back)."""
    codec = get_codec()
    out: dict[str, LoggedDataset] = {}

    def on_record(r: Any) -> None:
        rid = key_text(r.key)
        if wanted is not None and rid not in wanted:
            return
        try:
            chunk = codec.decode_chunk(r.value or b"")
        except DecodeError:
            return
        if not data and chunk.data:
            chunk = chunk.model_copy(update={"data": f"{_AT}{r.partition}:{r.offset}"})
        file_chunk(out, chunk, r.headers)

    await _read(bootstrap, topic, window, on_record, progress)
    return out


def file_chunk(out: dict[str, LoggedDataset], chunk: ResultChunk, headers: Any = None) -> None:
    """A chunk read from the results log into its dataset, or, marked LOG_COPY, into the
    dataset's JSON copy."""
    ds = out.setdefault(chunk.request_id, LoggedDataset(chunk.request_id))
    if any(k == LOG_COPY for k, _ in headers or ()):
        if ds.copy is None:
            ds.copy = LoggedDataset(chunk.request_id)
        ds = ds.copy
    whose = header_text(headers, TENANT) or LOCAL
    ds.add(chunk, correlation_of(headers), run_of(headers), whose)


def dataset_of(results: dict[str, LoggedDataset], logged: LoggedRequest) -> LoggedDataset | None:
    """What the results log holds of this logged request: its tenant's runs only (seen
    possible: two tenants' requests with one id, and export taking the other's run)."""
    ds = results.get(logged.request.request_id)
    return ds.of(logged.tenant) if ds is not None else None


_AT = "\x00@"  # no chunk's data starts with NUL: JSON, CSV and SQL text never do


def position(data: str) -> tuple[int, int] | None:
    """(partition, offset) of a chunk whose data `read_results(data=False)` left on the
    log; None for data that is there."""
    if not data.startswith(_AT):
        return None
    partition, _, offset = data[len(_AT) :].partition(":")
    return int(partition), int(offset)
