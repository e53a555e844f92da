"""A damaged pattern store file (patterns.embedded.salvage_store, run by `testdata run`
before any process opens it): every row that still reads is kept, the file quarantined,
and the store opens again."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

from services.patterns.embedded import SCHEMA, salvage_store

ROWS = 400


def _store(path: Path) -> None:
    conn = sqlite3.connect(path, isolation_level=None)
    conn.executescript(f"begin;\n{SCHEMA}\ncommit;")
    conn.execute("begin")
    for i in range(ROWS):
        conn.execute(
            "insert into patterns(id, collection, domain, entity, quality, usage_count,"
            " created_at, text, body, vec, gen) values (?,?,?,?,?,?,?,?,?,?,?)",
            (
                f"p{i}",
                "patterns",
                "ecommerce",
                "cart",
                0.9,
                0,
                1.0,
                f"text {i} " * 20,
                "[]",
                None,
                0,
            ),
        )
    conn.execute("commit")
    conn.execute("pragma wal_checkpoint(truncate)")
    conn.close()


def _count(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        assert conn.execute("pragma quick_check").fetchone()[0] == "ok"
        return int(conn.execute("select count(*) from patterns").fetchone()[0])
    finally:
        conn.close()


def test_an_intact_store_is_left_alone(tmp_path: Path) -> None:
    _store(tmp_path / "p.sqlite")
    assert salvage_store(tmp_path / "p.sqlite", tmp_path / "q") == ""
    assert not (tmp_path / "q").exists()
    assert salvage_store(tmp_path / "absent.sqlite", tmp_path / "q") == ""


@pytest.mark.parametrize("damage", ["garbage", "zero-block", "truncated", "empty"])
def test_a_damaged_store_keeps_what_reads(tmp_path: Path, damage: str) -> None:
    path = tmp_path / "p.sqlite"
    _store(path)
    data = bytearray(path.read_bytes())
    page = 4096
    if damage == "garbage":
        data = bytearray(b"not a database at all\n" * 500)
    elif damage == "zero-block":  # pages in the middle of the table zeroed
        data[len(data) // 2 : len(data) // 2 + 4 * page] = bytes(4 * page)
    elif damage == "truncated":
        del data[len(data) * 2 // 3 :]
    elif damage == "empty":
        data = bytearray()
    path.write_bytes(bytes(data))
    note = salvage_store(path, tmp_path / "q")
    if damage == "empty":  # an empty file is a valid, empty SQLite database
        assert note == ""
        return
    assert "was damaged" in note and str(tmp_path / "q") in note
    assert (tmp_path / "q" / "p.sqlite").read_bytes() == bytes(data)  # kept as it was
    recovered = _count(path)  # the new file opens and passes its check
    assert f"{recovered} pattern(s) recovered" in note
    if damage in ("zero-block", "truncated"):
        assert 0 < recovered < ROWS  # the intact part kept, not all-or-nothing
    else:
        assert recovered == 0
