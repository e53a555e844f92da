"""Property: whatever mix of datasets the log holds (entities, custom schemas whose column
types clash, defect datasets, every delivered format, every way a dataset is kept), each
export format, alone or combined, loads with its own reader (json, csv, sqlite3 and
PostgreSQL's parser, pyarrow) and gives back every value that was delivered, under its
own name."""

from __future__ import annotations

import asyncio
import csv
import json
import sqlite3
import tempfile
from pathlib import Path
from typing import Any

import orjson
import pglast
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from services.core.formats import _csv_cell, table_columns
from services.core.models import GenerateRequest
from services.core.plan import build_plan
from services.datasets.export import export
from services.datasets.sinks import FORMATS, ONE_TABLE

from .support import ANCHOR, REGISTRY, Delivered, deliver, final_only

# Two custom shapes under one name: `n` is an integer in one and text in the other.
WIDGETS = (
    [
        {"name": "n", "type": "INTEGER", "required": True},
        {"name": "label", "type": "STRING", "required": True},
        {"name": "spec", "type": "OBJECT", "nested_fields": [{"name": "k", "type": "STRING"}]},
        {"name": "tags", "type": "ARRAY"},
    ],
    [
        {"name": "n", "type": "STRING", "required": True},
        {"name": "flag", "type": "BOOLEAN"},
    ],
)
ENTITIES = [*REGISTRY.names(), "widget-0", "widget-1"]
HOW = ("rebuilt", "agent", "model", "model-agent")


@st.composite
def mixes(draw: st.DrawFn) -> tuple[str, bool, list[dict[str, Any]]]:
    fmt = draw(st.sampled_from(FORMATS))
    combined = draw(st.booleans())
    one = combined and fmt in ONE_TABLE
    pick = st.sampled_from(["widget-0", "widget-1"]) if one else st.sampled_from(ENTITIES)
    if one and draw(st.booleans()):  # one CSV/Parquet file needs one entity
        pick = st.just(draw(st.sampled_from(REGISTRY.names())))
    specs = [
        {
            "entity": draw(pick),
            "count": draw(st.integers(0, 30)),
            "defects": draw(st.booleans()),
            "fmt": draw(st.sampled_from(["JSON", "CSV", "SQL"])),
            "how": draw(st.sampled_from(HOW)),
            "seed": draw(st.integers(0, 2**31)),
        }
        for _ in range(draw(st.integers(1, 4)))
    ]
    return fmt, combined, specs


def _request(i: int, spec: dict[str, Any]) -> GenerateRequest:
    extra: dict[str, Any] = {}
    entity = spec["entity"]
    if entity.startswith("widget-"):
        extra["schema"] = {"fields": WIDGETS[int(entity[-1])]}
        entity = "widget"
    return GenerateRequest(
        request_id=f"mix-{i}",
        entity=entity,
        count=spec["count"],
        seed=spec["seed"],
        anchor=ANCHOR,
        output_format=spec["fmt"],
        defect_triggering=spec["defects"],
        **extra,
    )


async def _deliver(specs: list[dict[str, Any]]) -> list[Delivered]:
    out = []
    for i, spec in enumerate(specs):
        how = spec["how"]
        d = await deliver(
            _request(i, spec),
            model=how.startswith("model"),
            reply=not how.endswith("agent"),
            chunk_size=8,
        )
        if how == "rebuilt":
            d.dataset = final_only(d.dataset)
        out.append(d)
    return out


@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(mixes())
def test_every_export_loads_and_gives_back_every_delivered_value(mix) -> None:
    fmt, combined, specs = mix
    delivered = asyncio.run(_deliver(specs))
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / ("all." + fmt if combined else "out")
        done = asyncio.run(
            export(
                [d.logged for d in delivered],
                {d.request_id: d.dataset for d in delivered},
                REGISTRY,
                fmt,
                out,
                combined,
            )
        )
        assert [x.status for x in done] == ["written"] * len(delivered), done
        files = [out] * (1 if combined else 0) or [Path(x.path) for x in done]
        if combined:
            LOADERS[fmt](files[0], delivered)
        else:
            for f, d in zip(files, delivered, strict=True):
                LOADERS[fmt](f, [d])


def _json_lines(path: Path, delivered: list[Delivered]) -> None:
    got = [orjson.loads(line) for line in path.read_bytes().splitlines()]
    assert got == [r for d in delivered for r in d.records]


def _json(path: Path, delivered: list[Delivered]) -> None:
    assert json.loads(path.read_bytes()) == [r for d in delivered for r in d.records]


def _csv(path: Path, delivered: list[Delivered]) -> None:
    with path.open(newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    records = [r for d in delivered for r in d.records]
    assert len(rows) == len(records)
    for row, rec in zip(rows, records, strict=True):
        for k in row:
            assert row[k] == str(_csv_cell(rec.get(k))), (k, row[k], rec.get(k))
        assert not set(rec) - set(row), set(rec) - set(row)


def _sql(path: Path, delivered: list[Delivered]) -> None:
    sql = path.read_text(encoding="utf-8")
    pglast.parse_sql(sql)  # PostgreSQL's own parser accepts it
    db = sqlite3.connect(":memory:")
    db.executescript(sql)
    shapes: dict[str, dict[str, str]] = {}  # table -> column -> type, as the file should have
    cursor: dict[str, int] = {}
    for d in delivered:
        schema = build_plan(d.logged.request, REGISTRY).output_schema
        cols = {c.name: c.sql_type for c in table_columns(schema)}
        n = 1
        while True:  # a clash of column types gives the dataset a table of its own shape
            table = schema.name if n == 1 else f"{schema.name}_{n}"
            have = shapes.setdefault(table, {})
            if all(have.get(c, t) == t for c, t in cols.items()):
                have.update(cols)
                break
            n += 1
        start = cursor.get(table, 0)
        cursor[table] = start + len(d.records)
        got = db.execute(
            f'select * from "{table}" order by rowid limit ? offset ?', (len(d.records), start)
        )
        names = [c[0] for c in got.description]
        rows = [dict(zip(names, r, strict=True)) for r in got.fetchall()]
        assert len(rows) == len(d.records)
        for row, rec in zip(rows, d.records, strict=True):
            for k, v in rec.items():
                assert _sql_same(row[k], v), (table, k, row[k], v)
    for table, n in cursor.items():
        assert db.execute(f'select count(*) from "{table}"').fetchone()[0] == n


def _sql_same(got: Any, want: Any) -> bool:
    if isinstance(want, bool):
        return got == int(want)
    if isinstance(want, dict | list):
        return isinstance(got, str) and json.loads(got) == want
    return bool(got == want)


def _parquet(path: Path, delivered: list[Delivered]) -> None:
    table = pq.read_table(path)
    types = {f.name: str(f.type) for f in table.schema}
    rows = table.to_pylist()
    records = [r for d in delivered for r in d.records]
    assert len(rows) == len(records)
    for row, rec in zip(rows, records, strict=True):
        for k, v in rec.items():
            assert _parquet_same(row[k], v, types[k]), (k, row[k], v, types[k])


def _parquet_same(got: Any, want: Any, type_: str = "") -> bool:
    """Structs carry every declared member (null where a record left it out); a column
    whose types clash across datasets holds JSON text."""
    if type_ == "string" and want is not None and not isinstance(want, str):
        return isinstance(got, str) and json.loads(got) == want
    if isinstance(want, dict):
        if isinstance(got, str):  # an object without declared members: JSON text
            return json.loads(got) == want
        return isinstance(got, dict) and all(_parquet_same(got.get(k), v) for k, v in want.items())
    if isinstance(want, list):
        return (
            isinstance(got, list)
            and len(got) == len(want)
            and all(_parquet_same(g, w) for g, w in zip(got, want, strict=True))
        )
    return bool(got == want)


LOADERS = {"jsonl": _json_lines, "json": _json, "csv": _csv, "sql": _sql, "parquet": _parquet}
