"""`testdata export`: datasets from the logs to files.

A dataset is written from its chunks on the results log when they are all there (llm, rag
and hybrid outputs are kept there in full), all of one run: a redelivered request's runs
differ, and `LoggedDataset` picks one whole, never a splice. A traditional dataset is
rebuilt from its logged request (the same request, seed and anchor give the same bytes),
and written only if the rebuilt bytes have the digest the original delivery logged.
Anything else (no final chunk, a gap in the chunks, a digest that does not match, another
generator_version) is reported as incomplete and nothing of it is written.
"""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TextIO

import orjson

from services.core.formats import ChunkEncoder, DatasetDigest, iter_joined
from services.core.generate import iter_records
from services.core.models import EntitySchema, OutputFormat
from services.core.plan import Plan, build_plan
from services.core.pools import GENERATOR_VERSION
from services.core.registry import SchemaRegistry
from services.core.reproducible import parse_anchor
from services.core.validate import with_defect_columns
from services.datasets.log import LoggedDataset, LoggedRequest

FORMATS = ("jsonl", "json", "csv", "sql")
SLICE = 1000  # records encoded at a time when rebuilding


@dataclass
class Exported:
    request_id: str
    status: str  # written | incomplete
    how: str  # "kept chunks" | "rebuilt from the request" | why incomplete
    records: int = 0
    path: str = ""


class Incomplete(Exception):
    pass


def _records_from_chunks(ds: LoggedDataset) -> Iterator[dict[str, Any]]:
    for i in range(ds.final.chunk_index + 1 if ds.final else 0):
        c = ds.chunks.get(i)
        if c is not None and c.data:
            yield from orjson.loads(c.data)


def _rebuild(
    logged: LoggedRequest, ds: LoggedDataset, registry: SchemaRegistry
) -> tuple[Plan, EntitySchema]:
    """The plan that regenerates a traditional dataset, checked against its logged digest."""
    md = ds.final.metadata if ds.final else None
    if md is None or not md.data_sha256:
        raise Incomplete("the results log holds no final chunk of it")
    if md.generator_version != GENERATOR_VERSION:
        raise Incomplete(f"made by {md.generator_version}, this is {GENERATOR_VERSION}")
    req = logged.request.model_copy(update={"seed": md.seed, "anchor": parse_anchor(md.anchor)})
    plan = build_plan(req, registry)
    schema = (
        with_defect_columns(plan.schema) if req.defect_triggering or plan.edges else plan.schema
    )
    digest = DatasetDigest(req.output_format)
    enc = ChunkEncoder(schema, req.output_format)
    batch: list[dict[str, Any]] = []
    for r in iter_records(plan, 0, plan.count):
        batch.append(r)
        if len(batch) == SLICE:
            digest.update(enc.encode(batch))
            batch = []
    if batch or plan.count == 0:
        digest.update(enc.encode(batch))
    if digest.hexdigest() != md.data_sha256:
        raise Incomplete("rebuilt bytes differ from the delivered dataset's digest")
    return plan, schema


def dataset_records(
    logged: LoggedRequest, ds: LoggedDataset | None, registry: SchemaRegistry
) -> tuple[Iterator[dict[str, Any]], EntitySchema, str, int]:
    """(records, schema, how, count) of a complete dataset, or Incomplete saying why."""
    if ds is None or ds.final is None:
        raise Incomplete("no final chunk on the results log")
    if not ds.final.success:
        raise Incomplete(f"it failed: {ds.final.error}")
    md = ds.final.metadata
    count = md.record_count if md else 0
    if ds.path == "traditional" and not ds.kept():
        plan, schema = _rebuild(logged, ds, registry)
        return iter_records(plan, 0, plan.count), schema, "rebuilt from the request", plan.count
    if gaps := ds.gaps():
        raise Incomplete(f"chunks missing from the results log: {gaps[:10]}")
    if not ds.kept():
        raise Incomplete("only the final chunk's metadata is on the results log")
    if ds.final.output_format != OutputFormat.JSON:
        raise Incomplete(f"kept as {ds.final.output_format.value}: only JSON can be re-encoded")
    plan = build_plan(logged.request, registry)
    return _records_from_chunks(ds), plan.schema, "kept chunks", count


def write(fmt: str, schema: EntitySchema, records: Iterator[dict[str, Any]], out: TextIO) -> int:
    """Records to `out` in `fmt`; returns how many."""
    n = 0
    if fmt == "jsonl":
        for r in records:
            out.write(orjson.dumps(r).decode())
            out.write("\n")
            n += 1
        return n
    output = OutputFormat(fmt.upper())
    enc = ChunkEncoder(schema, output)

    def parts() -> Iterator[str]:
        nonlocal n
        batch: list[dict[str, Any]] = []
        for r in records:
            batch.append(r)
            n += 1
            if len(batch) == SLICE:
                yield enc.encode(batch)
                batch = []
        if batch or n == 0:
            yield enc.encode(batch)

    for piece in iter_joined(output, parts()):
        if output == OutputFormat.SQL:  # datasets of one entity may share a file
            piece = piece.replace("CREATE TABLE ", "CREATE TABLE IF NOT EXISTS ")
        out.write(piece)
    return n


def export(
    requests: list[LoggedRequest],
    results: dict[str, LoggedDataset],
    registry: SchemaRegistry,
    fmt: str,
    out: Path,
    combined: bool,
    progress: Callable[[int], None] | None = None,
) -> list[Exported]:
    """Every dataset to its own file under `out` (a directory), or all to the one file
    `out` (`combined`; JSON Lines and JSON mix entities freely, CSV needs one entity)."""
    done: list[Exported] = []
    sink: TextIO | None = None
    tmp = out.with_name(out.name + ".partial")
    if combined:
        out.parent.mkdir(parents=True, exist_ok=True)
        sink = tmp.open("w", encoding="utf-8", newline="")
        if fmt == "json":
            sink.write("[")
    else:
        out.mkdir(parents=True, exist_ok=True)
    first = True
    try:
        for logged in requests:
            rid = logged.request.request_id
            try:
                records, schema, how, _ = dataset_records(logged, results.get(rid), registry)
            except Incomplete as exc:
                done.append(Exported(rid, "incomplete", str(exc)))
                if progress:
                    progress(1)
                continue
            if sink is None:
                path = out / f"{_safe(rid)}.{fmt}"
                part = path.with_name(path.name + ".partial")
                with part.open("w", encoding="utf-8", newline="") as f:
                    n = write(fmt, schema, records, f)
                part.replace(path)
                done.append(Exported(rid, "written", how, n, str(path)))
            else:
                if fmt == "json":
                    buf = io.StringIO()
                    n = write("jsonl", schema, records, buf)
                    lines = [ln for ln in buf.getvalue().split("\n") if ln]
                    if lines:
                        sink.write(("" if first else ",") + ",".join(lines))
                        first = False
                elif fmt == "csv" and not first:
                    buf = io.StringIO()
                    n = write(fmt, schema, records, buf)
                    sink.write(
                        buf.getvalue().split("\r\n", 1)[1] if "\r\n" in buf.getvalue() else ""
                    )
                else:
                    n = write(fmt, schema, records, sink)
                    first = False
                done.append(Exported(rid, "written", how, n, str(out)))
            if progress:
                progress(1)
        if sink is not None:
            if fmt == "json":
                sink.write("]")
            sink.close()
            tmp.replace(out)
    finally:
        if sink is not None and not sink.closed:
            sink.close()
    return done


def _safe(name: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_.~" else "_" for ch in name)
