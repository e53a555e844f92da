"""What only the embedded backend has: a file shared by processes, SQLite's failure
modes, vectors filled in for rows a model-less writer stored, and lazy loading."""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from services.patterns import embedding
from services.patterns.embedded import EmbeddedStore
from services.patterns.errors import StoreUnavailable
from services.patterns.store import Collection
from tests.patterns.conftest import open_embedded
from tests.patterns.test_contract import CARTS
from tests.support import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]
P = Collection.PATTERNS


def run_python(code: str, timeout: float = HANG_GUARD_S) -> str:
    done = subprocess.run(
        [sys.executable, "-c", textwrap.dedent(code)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=timeout,
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


async def test_another_process_writes_are_seen_without_restart(tmp_path: Path) -> None:
    path = tmp_path / "shared.sqlite"
    async with open_embedded(path) as reader:
        await reader.upsert(CARTS[1:])
        assert len(await reader.search(P, "shopping", top_k=10)) == 3  # index loaded
        marathon = CARTS[0].model_dump_json()
        kitchen = CARTS[2].with_id().id
        out = run_python(
            f"""
            import asyncio
            from services.patterns.embedded import EmbeddedStore
            from services.patterns.store import Collection, Pattern

            async def main():
                store = EmbeddedStore({str(path)!r}, timeout_seconds={HANG_GUARD_S})
                await store.start()
                print(await store.upsert([Pattern.model_validate_json({marathon!r})]))
                print(await store.delete(Collection.PATTERNS, [{kitchen!r}]))
                await store.aclose()

            asyncio.run(main())
            """
        )
        assert out.split() == ["1", "1"]
        hits = await reader.search(P, "gear for long-distance road racing", alpha=1.0, top_k=10)
        assert hits[0].pattern.scenario == "marathon_training"
        assert "kitchen_upgrade" not in {h.pattern.scenario for h in hits}
        assert await reader.count(P) == 3


async def test_a_locked_file_is_unavailable_within_the_timeout_then_recovers(
    tmp_path: Path,
) -> None:
    path = tmp_path / "locked.sqlite"
    store = EmbeddedStore(path, timeout_seconds=2)
    await store.start()
    await store.upsert([CARTS[0]])
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("begin exclusive")  # another process holding the write lock
    try:
        with pytest.raises(StoreUnavailable):
            await store.mark_used(P, [CARTS[0].with_id().id])
        with pytest.raises(StoreUnavailable):
            await store.delete(P, [CARTS[0].with_id().id])
        assert await store.count(P) == 1  # WAL: readers are not blocked by a writer
    finally:
        blocker.execute("rollback")
        blocker.close()
    await store.mark_used(P, [CARTS[0].with_id().id])
    [got] = await store.get(P, [CARTS[0].with_id().id])
    assert got.usage_count == 1
    await store.aclose()


async def test_an_unusable_path_is_unavailable_until_it_is_fixed(tmp_path: Path) -> None:
    blocker = tmp_path / "not-a-dir"
    blocker.write_text("a file where the store's directory should be")
    store = EmbeddedStore(blocker / "patterns.sqlite", timeout_seconds=HANG_GUARD_S)
    with pytest.raises(StoreUnavailable, match="not-a-dir"):
        await store.start()
    assert (await store.health()).startswith("unavailable: ")
    blocker.unlink()  # fixed: the next call opens the file, no restart
    assert await store.count(P) == 0
    assert (await store.health()).startswith("healthy")
    await store.aclose()


async def test_calls_before_start_are_unavailable(tmp_path: Path) -> None:
    store = EmbeddedStore(tmp_path / "p.sqlite")
    with pytest.raises(StoreUnavailable, match="not started"):
        await store.count(P)
    assert (await store.health()) == "unavailable: pattern store not started"


async def test_the_file_is_wal_with_the_store_of_record_in_it(tmp_path: Path) -> None:
    path = tmp_path / "new" / "dir" / "p.sqlite"
    async with open_embedded(path) as store:
        await store.upsert(CARTS[:1])
    db = sqlite3.connect(path)
    assert db.execute("pragma journal_mode").fetchone() == ("wal",)
    body, vec = db.execute("select body, vec from patterns").fetchone()
    assert json.loads(body)["records"] == CARTS[0].records
    assert len(vec) == embedding.DIM * 4  # float32
    assert db.execute(
        "select count(*) from patterns_fts where patterns_fts match 'skillet OR gels'"
    ).fetchone() == (1,)


async def test_rows_written_without_the_model_get_vectors_later(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = tmp_path / "p.sqlite"
    with monkeypatch.context() as m:
        m.setattr(embedding, "model_dir", lambda: None)
        async with open_embedded(path) as keyword_only:
            await keyword_only.upsert(CARTS)
    db = sqlite3.connect(path)
    assert db.execute("select count(*) from patterns where vec is null").fetchone() == (4,)
    async with open_embedded(path) as store:
        query = "gear for long-distance road racing"
        await store.search(P, query, alpha=1.0)  # fills the vectors in
        hits = await store.search(P, query, alpha=1.0)
        assert hits[0].pattern.scenario == "marathon_training"
    assert db.execute("select count(*) from patterns where vec is null").fetchone() == (0,)


async def test_a_changed_description_is_embedded_again(tmp_path: Path) -> None:
    async with open_embedded(tmp_path / "p.sqlite") as store:
        await store.upsert(CARTS)
        changed = CARTS[3].model_copy(update={"description": "Trail hiking boots and a tent"})
        assert await store.upsert([changed]) == 0
        hits = await store.search(P, "boots for a mountain hike", alpha=1.0, top_k=1)
        assert hits[0].pattern.id == changed.with_id().id
