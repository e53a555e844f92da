"""`testdata export`: datasets from the logs to files, in any format, streamed.

Where a dataset's records come from, first that applies:
- its chunks on the results log, when they are JSON and all there, all of one run (llm,
  rag and hybrid datasets delivered as JSON; any dataset whose caller read the results
  topic itself): a redelivered request's runs differ, and `LoggedDataset` picks one whole,
  never a splice;
- the JSON copy the results log keeps of a CSV or SQL dataset of those paths;
- a traditional dataset is rebuilt from its logged request (the same request, seed and
  anchor give the same records), generated once.
While a dataset is written, its records are also encoded as they were delivered and
checked against the digest the delivery logged. A dataset that does not match, or has no
final chunk, a gap in its chunks, another generator_version, is reported incomplete and
nothing of it is written: files are written under a `.partial` name and renamed when
complete (a combined file appends each dataset once complete).

Memory does not grow with the records: a dataset is read (or rebuilt) and written one
chunk at a time (at most `chunk_size` records, about 2 MiB). What grows with the
selection is a few hundred bytes per chunk and per dataset of metadata.
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from itertools import islice
from pathlib import Path
from typing import Any

import orjson

from services.core.errors import RequestInvalid
from services.core.formats import ChunkEncoder, DatasetDigest, holds_defects, table_columns
from services.core.generate import iter_records
from services.core.models import EntitySchema, OutputFormat, traits_of
from services.core.plan import build_plan
from services.core.pools import GENERATOR_VERSION
from services.core.registry import SchemaRegistry
from services.core.reproducible import parse_anchor
from services.datasets.errors import Incomplete, Unfit
from services.datasets.log import LoggedDataset, LoggedRequest, dataset_of, position
from services.datasets.sinks import FORMATS, SINKS, Layout, Sink
from services.kit.path.generation import chunk_bounds
from services.kit.wire.messages import GenerationMetadata, ResultChunk
from services.kit.wire.tenancy import LOCAL

__all__ = ["FORMATS", "Exported", "Incomplete", "export"]

SLICE = 1000  # records rebuilt at a time when the delivery's chunking is not known
#: Reads a chunk's data (from the log, where the first pass left it there).
ChunkData = Callable[[ResultChunk], Awaitable[str]]


@dataclass
class Exported:
    request_id: str
    status: str  # written | incomplete
    how: str  # "kept chunks" | "kept chunks (JSON copy)" | "rebuilt from the request" | why
    records: int = 0
    path: str = ""
    tenant: str = LOCAL  # whose request it was (LoggedRequest.tenant)


async def _in_memory(chunk: ResultChunk) -> str:
    if position(chunk.data) is not None:
        raise Incomplete("its chunks were left on the log and no reader was given")
    return chunk.data


class Check:
    """The records as delivered: encoded in the delivered format as they pass, counted,
    and at the end compared with the delivery's digest and count."""

    def __init__(self, md: GenerationMetadata, fmt: OutputFormat, schema: EntitySchema | None):
        self.md, self.fmt, self.count = md, fmt, 0
        self.digests: list[tuple[ChunkEncoder | None, DatasetDigest]] = []
        if not md.data_sha256:
            return
        if fmt == OutputFormat.JSON or schema is None:
            self.digests.append((None, DatasetDigest(fmt)))
            return
        self.digests.append((ChunkEncoder(schema, fmt), DatasetDigest(fmt)))
        if fmt == OutputFormat.SQL and holds_defects(schema):  # delivered before the DDL fix
            self.digests.append((ChunkEncoder(schema, fmt, lenient=False), DatasetDigest(fmt)))

    def add(self, records: list[dict[str, Any]], data: str | None = None) -> None:
        """One chunk's records (and its JSON, where that is what was delivered)."""
        self.count += len(records)
        for enc, digest in self.digests:
            if enc is not None:
                digest.update(enc.encode(records))
            else:
                digest.update(data if data is not None else orjson.dumps(records).decode())

    def finish(self, what: str) -> None:
        if self.count != self.md.record_count:
            raise Incomplete(
                f"{what}: {self.count} records, the delivery had {self.md.record_count}"
            )
        if self.digests and all(d.hexdigest() != self.md.data_sha256 for _, d in self.digests):
            raise Incomplete(f"{what}: the records differ from the delivered dataset's digest")


@dataclass
class Dataset:
    """One dataset to write: where its records come from, and its output schema."""

    logged: LoggedRequest
    how: str
    schema: EntitySchema | None  # None: its request no longer plans (JSON formats only)
    batches: Callable[[ChunkData], AsyncIterator[list[dict[str, Any]]]]

    @property
    def request_id(self) -> str:
        return self.logged.request.request_id


def prepare(logged: LoggedRequest, ds: LoggedDataset | None, registry: SchemaRegistry) -> Dataset:
    """How a dataset's records are read back, or Incomplete saying why they cannot be."""
    if ds is None or ds.final is None:
        raise Incomplete("no final chunk on the results log")
    if not ds.final.success:
        raise Incomplete(f"it failed: {ds.final.error}")
    md = ds.final.metadata or GenerationMetadata(record_count=ds.final.record_count)
    fmt = ds.final.output_format
    req = logged.request
    if md.seed and md.anchor:
        req = req.model_copy(update={"seed": md.seed, "anchor": parse_anchor(md.anchor)})
    try:
        plan = build_plan(req, registry)
    except RequestInvalid as exc:
        plan = None
        why = f"its request no longer plans: {exc}"
    schema = plan.output_schema if plan is not None else None

    if fmt == OutputFormat.JSON and ds.kept():
        return Dataset(logged, "kept chunks", schema, lambda read: _kept(ds, read, md, fmt, None))
    if ds.copy is not None:
        if ds.copy.final is None:
            raise Incomplete("the final chunk of its JSON copy is not on the results log")
        if not ds.copy.kept():
            raise Incomplete(f"chunks missing from the results log: {ds.copy.gaps()[:10]}")
        return Dataset(
            logged,
            "kept chunks (JSON copy)",
            schema,
            lambda read: _kept(ds.copy or ds, read, md, fmt, schema),
        )
    if (traits := traits_of(ds.path)) is not None and traits.rebuildable:
        if plan is None:
            raise Incomplete(why)
        if not md.data_sha256:
            raise Incomplete("the results log holds no digest of it")
        if md.generator_version != GENERATOR_VERSION:
            raise Incomplete(f"made by {md.generator_version}, this is {GENERATOR_VERSION}")
        bounds = chunk_bounds(plan.count, ds.final.chunk_index + 1, ds.final.record_count)
        if bounds is None:  # JSON and CSV do not depend on it; SQL will not match
            bounds = [(lo, min(lo + SLICE, plan.count)) for lo in range(0, plan.count, SLICE)]
        p = plan
        return Dataset(
            logged,
            "rebuilt from the request",
            schema,
            lambda read: _rebuilt(
                p.output_schema, md, fmt, _slices(iter_records(p, 0, p.count), bounds)
            ),
        )
    if gaps := ds.gaps():
        raise Incomplete(f"chunks missing from the results log: {gaps[:10]}")
    if ds.kept():
        raise Incomplete(
            f"kept as {fmt.value} without a JSON copy (logged before copies were kept, or "
            "answered from the result cache): its records cannot be read back"
        )
    raise Incomplete("only the final chunk's metadata is on the results log")


def _slices(
    records: Iterator[dict[str, Any]], bounds: list[tuple[int, int]]
) -> Iterator[list[dict[str, Any]]]:
    if not bounds:
        yield []
    for lo, hi in bounds:
        yield list(islice(records, hi - lo))


async def _kept(
    ds: LoggedDataset,
    read: ChunkData,
    md: GenerationMetadata,
    fmt: OutputFormat,
    schema: EntitySchema | None,
) -> AsyncIterator[list[dict[str, Any]]]:
    """A dataset's chunks as records, one chunk at a time, checked as they pass."""
    check = Check(md, fmt, schema)
    last = ds.final.chunk_index if ds.final else -1
    for i in range(last + 1):
        c = ds.chunks.get(i)
        data = await read(c) if c is not None else ""
        records = orjson.loads(data) if data else []
        if not isinstance(records, list):
            raise Incomplete(f"chunk {i} is not a JSON array")
        check.add(records, data if fmt == OutputFormat.JSON else None)
        yield records
    check.finish("its chunks on the results log")


async def _rebuilt(
    schema: EntitySchema,
    md: GenerationMetadata,
    fmt: OutputFormat,
    slices: Iterator[list[dict[str, Any]]],
) -> AsyncIterator[list[dict[str, Any]]]:
    """The regenerated records, cut where the delivery's chunks were, checked as they pass."""
    check = Check(md, fmt, schema)
    for records in slices:
        check.add(records)
        yield records
    check.finish("rebuilt")


async def export(
    requests: list[LoggedRequest],
    results: dict[str, LoggedDataset],
    registry: SchemaRegistry,
    fmt: str,
    out: Path,
    combined: bool,
    progress: Callable[[int], None] | None = None,
    read: ChunkData | None = None,
) -> list[Exported]:
    """Every dataset to its own file under `out` (a directory), or all to the one file
    `out` (`combined`). Chunks that `read_results(data=False)` left on the log are read
    back with `read`. Returns what became of each, in the order of `requests`."""
    if fmt not in FORMATS:
        raise ValueError(f"unknown format {fmt!r}; one of {', '.join(FORMATS)}")
    read = read or _in_memory
    outcome: dict[int, Exported] = {}
    todo: list[tuple[int, Dataset]] = []
    for i, logged in enumerate(requests):
        rid = logged.request.request_id
        try:
            ds = prepare(logged, dataset_of(results, logged), registry)
            if ds.schema is None and fmt not in ("jsonl", "json"):
                raise Incomplete(f"its request no longer plans, so it has no {fmt} columns")
            todo.append((i, ds))
        except Incomplete as exc:
            outcome[i] = Exported(rid, "incomplete", str(exc), tenant=logged.tenant)
            if progress:
                progress(1)
    if combined:
        await _combined(todo, fmt, out, read, outcome, progress)
    else:
        out.mkdir(parents=True, exist_ok=True)
        for i, ds in todo:
            layout = _layout([ds])
            path = out / f"{_safe(ds.request_id)}.{fmt}"
            outcome[i] = await _one(ds, layout, fmt, path, read, head=True)
            if progress:
                progress(1)
    return [outcome[i] for i in range(len(requests))]


def _layout(datasets: list[Dataset]) -> Layout:
    layout = Layout()
    for ds in datasets:
        if ds.schema is not None:
            layout.add(ds.request_id, ds.schema.name, table_columns(ds.schema))
    return layout


async def _one(
    ds: Dataset, layout: Layout, fmt: str, path: Path, read: ChunkData, head: bool
) -> Exported:
    """One dataset to `path`: a whole file (`head`), or a fragment of a combined one.
    Written as `<path>.partial`, renamed when complete, removed when not."""
    part = path.with_name(path.name + ".partial")
    try:
        with part.open("wb") as f:
            sink = SINKS[fmt](f, layout, head)
            sink.open()
            async for records in ds.batches(read):
                sink.write(ds.request_id, records)
            sink.close()
    except (Incomplete, Unfit, LookupError) as exc:
        part.unlink(missing_ok=True)
        return Exported(ds.request_id, "incomplete", str(exc), tenant=ds.logged.tenant)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    part.replace(path)
    return Exported(ds.request_id, "written", ds.how, sink.rows, str(path), ds.logged.tenant)


async def _combined(
    todo: list[tuple[int, Dataset]],
    fmt: str,
    out: Path,
    read: ChunkData,
    outcome: dict[int, Exported],
    progress: Callable[[int], None] | None,
) -> None:
    """Every dataset into one file: each written to a fragment first, appended once it
    is known complete (a half-written dataset leaves nothing in the file)."""
    layout = _layout([ds for _, ds in todo])
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".partial")
    fragment = out.with_name(f".{out.name}.{os.getpid()}.fragment")
    try:
        with tmp.open("wb") as f:
            sink: Sink = SINKS[fmt](f, layout, True)
            sink.open()
            for i, ds in todo:
                done = await _one(ds, layout, fmt, fragment, read, head=False)
                if done.status == "written":
                    sink.append(fragment, done.records)
                    done.path = str(out)
                fragment.unlink(missing_ok=True)
                outcome[i] = done
                if progress:
                    progress(1)
            sink.close()
        tmp.replace(out)
    finally:
        tmp.unlink(missing_ok=True)
        with contextlib.suppress(FileNotFoundError):
            fragment.unlink()


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.~" else "_" for ch in name)
