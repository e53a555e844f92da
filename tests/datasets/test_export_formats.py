"""Export formats against what was delivered: same bytes where the format is the same,
copies of CSV/SQL model output on the log, digests checked, Parquet structs, SQL that
PostgreSQL's own parser accepts."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import orjson
import pglast
import pyarrow.parquet as pq
import pytest

from services.datasets.export import export
from services.kit.wire.codec import get_codec
from services.kit.wire.headers import LOG_COPY
from services.traditional.service import TraditionalService

from .support import (
    REGISTRY,
    RESULTS,
    FakeRuntime,
    ModelLike,
    _message,
    deliver,
    final_only,
    request,
)


async def _run(items, fmt: str, out: Path, combined: bool = False):
    return await export(
        [d.logged for d in items],
        {d.request_id: d.dataset for d in items},
        REGISTRY,
        fmt,
        out,
        combined,
    )


async def test_a_rebuilt_sql_dataset_of_several_chunks_has_its_delivered_bytes(tmp_path):
    """SQL's INSERTs end at chunk ends: the rebuild cuts where the delivery did (the
    rebuild used to cut every 1,000 records, and no SQL dataset of more than 128 records
    matched its digest)."""
    d = await deliver(request(12, "user", 700, "SQL"), chunk_size=250)
    d.dataset = final_only(d.dataset)
    (done,) = await _run([d], "sql", tmp_path / "o")
    assert done.status == "written", done
    assert Path(done.path).read_bytes().decode() == d.data


@pytest.mark.parametrize("fmt", ["JSON", "CSV", "SQL"])
@pytest.mark.parametrize("how", ["rebuilt", "agent", "model", "model-agent"])
async def test_a_dataset_exported_in_its_own_format_has_its_delivered_bytes(tmp_path, fmt, how):
    d = await deliver(
        request(13, "order", 300, fmt, defects=fmt == "SQL"),
        model=how.startswith("model"),
        reply=not how.endswith("agent"),
        chunk_size=100,
    )
    if how == "rebuilt":
        d.dataset = final_only(d.dataset)
    (done,) = await _run([d], fmt.lower(), tmp_path / "o")
    assert done.status == "written", done
    assert Path(done.path).read_bytes().decode() == d.data
    if how.startswith("model") and fmt != "JSON":
        assert done.how == "kept chunks (JSON copy)"


async def test_the_results_log_keeps_a_json_copy_of_csv_and_sql_model_chunks():
    codec = get_codec()

    async def logged(fmt: str, model: bool, reply: bool) -> list[tuple[bool, object]]:
        rt = FakeRuntime(chunk_size=10)
        svc = (ModelLike if model else TraditionalService)(rt, REGISTRY)
        req = request(14, "cart", 25, fmt)
        await svc.handle(_message(req, svc.path, reply))
        return [
            (any(k == LOG_COPY for k, _ in h), codec.decode_chunk(v))
            for t, v, _, h in rt.sent
            if t == RESULTS
        ]

    # a model's CSV answered on a reply topic: JSON copies, and the final chunk's metadata
    got = await logged("CSV", model=True, reply=True)
    copies = [c for copy, c in got if copy]
    assert [c.chunk_index for c in copies] == [0, 1, 2, 3]  # batches of 7
    assert all(c.output_format.value == "JSON" for c in copies)
    assert sum(len(orjson.loads(c.data)) for c in copies) == 25
    assert [(c.is_final, c.data) for copy, c in got if not copy] == [(True, "")]
    # answered on the results topic itself: the chunks, and a copy after each
    got = await logged("SQL", model=True, reply=False)
    assert [(copy, c.chunk_index) for copy, c in got] == [
        (copy, i) for i in range(4) for copy in (False, True)
    ]
    # JSON needs no copy; a traditional dataset is rebuilt from its request
    assert not any(copy for copy, _ in await logged("JSON", model=True, reply=True))
    assert not any(copy for copy, _ in await logged("CSV", model=False, reply=False))


async def test_a_dataset_that_does_not_match_its_digest_leaves_nothing(tmp_path):
    good = await deliver(request(15, "product", 30))
    bad = await deliver(request(16, "product", 30))
    for d in (good, bad):
        d.dataset = final_only(d.dataset)
    md = bad.dataset.final.metadata
    bad.dataset.final.metadata = md.model_copy(update={"data_sha256": "0" * 64})
    done = await _run([good, bad], "csv", tmp_path / "o")
    assert [x.status for x in done] == ["written", "incomplete"]
    assert done[1].how == "rebuilt: the records differ from the delivered dataset's digest"
    assert sorted(p.name for p in (tmp_path / "o").iterdir()) == [f"{good.request_id}.csv"]
    done = await _run([bad, good], "sql", tmp_path / "all.sql", combined=True)
    assert [x.status for x in done] == ["incomplete", "written"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["all.sql", "o"]
    db = sqlite3.connect(":memory:")
    db.executescript((tmp_path / "all.sql").read_text(encoding="utf-8"))
    assert db.execute('select count(*) from "product"').fetchone()[0] == 30


async def test_a_model_csv_dataset_logged_before_copies_says_why_it_cannot_be_read(tmp_path):
    d = await deliver(request(17, "cart", 12, "CSV"), model=True, reply=False)
    d.dataset.copy = None  # as logged before copies were kept
    (done,) = await _run([d], "jsonl", tmp_path / "o")
    assert done.status == "incomplete"
    assert done.how.startswith("kept as CSV without a JSON copy")


async def test_parquet_nests_fields_as_structs_and_keeps_every_value(tmp_path):
    d = await deliver(request(18, "cart", 40, defects=True))
    (done,) = await _run([d], "parquet", tmp_path / "o")
    assert done.status == "written", done
    table = pq.read_table(done.path)
    items = table.schema.field("items").type
    assert str(items).startswith("list<element: struct<")
    assert str(table.schema.field("_intentionally_invalid").type) == "list<element: string>"
    rows = table.to_pylist()
    for row, rec in zip(rows, d.records, strict=True):
        for k, v in rec.items():
            assert _same(row[k], v), (k, row[k], v)


def _same(got, want) -> bool:
    """A Parquet value against the delivered one: structs carry every declared member
    (null where a record left it out)."""
    if isinstance(want, dict):
        return isinstance(got, dict) and all(_same(got.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return isinstance(got, list) and len(got) == len(want) and all(map(_same, got, want))
    return got == want


async def test_combined_sql_of_several_entities_parses_as_postgresql(tmp_path):
    items = [
        await deliver(request(19, "cart", 10)),
        await deliver(request(20, "cart", 10, defects=True)),
        await deliver(request(21, "payment", 10, defects=True)),
        await deliver(request(22, "review", 10)),
    ]
    done = await _run(items, "sql", tmp_path / "all.sql", combined=True)
    assert {x.status for x in done} == {"written"}
    sql = (tmp_path / "all.sql").read_text(encoding="utf-8")
    statements = pglast.parse_sql(sql)
    assert sum(type(s.stmt).__name__ == "CreateStmt" for s in statements) == 3
    db = sqlite3.connect(":memory:")
    db.executescript(sql)
    assert db.execute('select count(*) from "cart"').fetchone()[0] == 20
