"""Exports that load, whatever the log holds (issue 18): each test here reproduces one
measured failure, without a broker (the path services run against a runtime double)."""

from __future__ import annotations

import csv
import sqlite3
import tracemalloc
from pathlib import Path

import orjson

from services.core.formats import _csv_cell
from services.datasets import export as export_mod
from services.datasets.export import export

from .support import REGISTRY, deliver, final_only, request


async def _run(items, fmt: str, out: Path, combined: bool):
    return await export(
        [d.logged for d in items],
        {d.request_id: d.dataset for d in items},
        REGISTRY,
        fmt,
        out,
        combined,
    )


async def test_combined_csv_of_normal_and_defect_payments_keeps_every_value_under_its_header(
    tmp_path,
):
    normal = await deliver(request(1, "payment", 40))
    defects = await deliver(request(2, "payment", 47, defects=True))
    done = await _run([normal, defects], "csv", tmp_path / "all.csv", True)
    assert [d.status for d in done] == ["written", "written"], done
    rows = list(csv.DictReader((tmp_path / "all.csv").open(newline="", encoding="utf-8")))
    assert len(rows) == 87
    wrong = [
        (i, k)
        for i, (row, rec) in enumerate(zip(rows, normal.records + defects.records, strict=True))
        for k, v in rec.items()
        if row.get(k) != str(_csv_cell(v))
    ]
    assert wrong == [], f"{len({i for i, _ in wrong})} of {len(rows)} rows wrong: {wrong[:5]}"


async def test_combined_sql_of_normal_and_defect_carts_loads_into_sqlite(tmp_path):
    normal = await deliver(request(3, "cart", 10))
    defects = await deliver(request(4, "cart", 15, defects=True))
    items = [normal, defects]
    for d in items:
        d.dataset = final_only(d.dataset)  # rebuilt from the request
    done = await _run(items, "sql", tmp_path / "all.sql", True)
    assert [d.status for d in done] == ["written", "written"], done
    db = sqlite3.connect(":memory:")
    db.executescript((tmp_path / "all.sql").read_text(encoding="utf-8"))
    assert db.execute('select count(*) from "cart"').fetchone()[0] == 25
    kinds = db.execute('select count("_edge_case_type") from "cart"').fetchone()[0]
    assert kinds == 15


async def test_delivered_defect_sql_loads_into_sqlite():
    d = await deliver(request(5, "payment", 30, "SQL", defects=True))
    db = sqlite3.connect(":memory:")
    db.executescript(d.data)
    assert db.execute('select count(*) from "payment"').fetchone()[0] == 30


async def test_exported_defect_sql_loads_into_sqlite(tmp_path):
    d = await deliver(request(6, "payment", 30, defects=True))
    d.dataset = final_only(d.dataset)
    done = await _run([d], "sql", tmp_path / "out", False)
    assert [x.status for x in done] == ["written"], done
    db = sqlite3.connect(":memory:")
    db.executescript(Path(done[0].path).read_text(encoding="utf-8"))
    assert db.execute('select count(*) from "payment"').fetchone()[0] == 30


async def test_a_traditional_dataset_kept_as_csv_is_exported(tmp_path):
    d = await deliver(request(7, "order", 12, "CSV"), reply=False)  # an agent's: all on the log
    done = await _run([d], "jsonl", tmp_path / "out", False)
    assert [x.status for x in done] == ["written"], done
    lines = Path(done[0].path).read_text(encoding="utf-8").splitlines()
    assert [orjson.loads(line) for line in lines] == d.records


async def test_a_model_dataset_delivered_as_sql_is_exported_to_json(tmp_path):
    d = await deliver(request(8, "cart", 20, "SQL"), model=True)
    done = await _run([d], "json", tmp_path / "out", False)
    assert [x.status for x in done] == ["written"], done
    assert orjson.loads(Path(done[0].path).read_bytes()) == d.records


async def test_a_rebuilt_dataset_is_generated_once(tmp_path, monkeypatch):
    d = await deliver(request(9, "user", 30))
    d.dataset = final_only(d.dataset)
    calls = []
    real = export_mod.iter_records

    def counting(*a, **kw):
        calls.append(a[1:])
        return real(*a, **kw)

    monkeypatch.setattr(export_mod, "iter_records", counting)
    done = await _run([d], "jsonl", tmp_path / "out", False)
    assert [x.status for x in done] == ["written"], done
    assert len(calls) == 1, calls


async def test_a_combined_json_export_does_not_hold_the_dataset(tmp_path):
    """Peak memory of a combined JSON export does not grow with the dataset."""

    async def peak(n: int) -> tuple[int, int]:
        d = await deliver(request(10, "user", n))
        d.dataset = final_only(d.dataset)
        tracemalloc.start()
        try:
            done = await _run([d], "json", tmp_path / f"{n}.json", True)
            return tracemalloc.get_traced_memory()[1], (tmp_path / f"{n}.json").stat().st_size
        finally:
            tracemalloc.stop()
            assert [x.status for x in done] == ["written"], done

    small, _ = await peak(2_000)
    big, size = await peak(16_000)
    assert big < small * 1.5, (
        f"peak {big / 1e6:.1f} MB for {size / 1e6:.1f} MB, {small / 1e6:.1f} MB for 1/8 of it"
    )


def test_requests_without_a_domain_match_the_domain_they_were_served_as():
    from services.cli import build_parser
    from services.core.models import GenerateRequest
    from services.datasets.cli import _selection_of
    from services.datasets.log import LoggedRequest

    keep = _selection_of(build_parser().parse_args(["replay", "--domain", "ecommerce"])).keep
    assert keep(LoggedRequest(GenerateRequest(request_id="r", entity="cart"), 0, 0, 0))
    assert not keep(
        LoggedRequest(GenerateRequest(request_id="r", entity="cart", domain="retail"), 0, 0, 0)
    )


async def test_parquet_is_an_export_format(tmp_path):
    d = await deliver(request(11, "order", 12))
    done = await _run([d], "parquet", tmp_path / "out", False)
    assert [x.status for x in done] == ["written"], done
