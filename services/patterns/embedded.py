"""The embedded pattern store: one SQLite file plus the packaged MiniLM model, no server.

SQLite (WAL) is the store of record: one row per pattern with its properties, its search
text, its vector as a float32 BLOB, and an FTS5 (porter, unicode61) index kept in step by
triggers for the keyword leg. Vectors are also held in an in-memory NumPy matrix for the
vector leg; hybrid ranking is Weaviate's relativeScoreFusion (`fusion.py`), so both
backends rank alike.

Several processes share the file (the RAG and hybrid services, the learner, the router
counting, the CLI). Every write transaction bumps a generation counter stamped on the rows
it writes, and one that deletes bumps a removal counter; before a search, a reader whose
`PRAGMA data_version` moved loads just the rows of newer generations (and re-lists ids
after removals), so nobody restarts to see another's writes.

Nothing here runs on the event loop: SQLite and the model run in a worker thread under
one lock per store, every call bounded by `pattern_store_timeout_seconds`, and any
failure or overrun becomes `StoreUnavailable`. The model (and the vector matrix) load on
the first search or write that needs them: counting and listing never pay for them.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from services.kit.settings import StoreSettings
from services.patterns import embedding
from services.patterns.errors import ModelUnavailable, StoreUnavailable
from services.patterns.fusion import CANDIDATES, fts_query, relative_fusion, top
from services.patterns.store import Collection, Hit, Pattern, PatternStore, StoreStats
from services.patterns.vectors import VectorIndex

log = logging.getLogger("testdata.patterns")

T = TypeVar("T")

SCHEMA = """
create table if not exists meta(key text primary key, value integer not null);
insert or ignore into meta values ('schema', 1), ('gen', 0), ('removed', 0);
create table if not exists patterns(
  pk integer primary key,
  id text not null unique,
  collection text not null,
  domain text not null,
  entity text not null,
  quality real not null,
  usage_count integer not null default 0,
  created_at real not null,
  text text not null,
  body text not null,
  vec blob,
  gen integer not null
);
create index if not exists patterns_scope on patterns(collection, domain, entity);
create index if not exists patterns_gen on patterns(gen);
create index if not exists patterns_with_vec on patterns(pk) where vec is not null;
create index if not exists patterns_without_vec on patterns(pk) where vec is null;
create virtual table if not exists patterns_fts using fts5(
  text, content='patterns', content_rowid='pk', tokenize='porter unicode61');
create trigger if not exists patterns_ai after insert on patterns begin
  insert into patterns_fts(rowid, text) values (new.pk, new.text);
end;
create trigger if not exists patterns_ad after delete on patterns begin
  insert into patterns_fts(patterns_fts, rowid, text) values ('delete', old.pk, old.text);
end;
create trigger if not exists patterns_au after update of text on patterns begin
  insert into patterns_fts(patterns_fts, rowid, text) values ('delete', old.pk, old.text);
  insert into patterns_fts(rowid, text) values (new.pk, new.text);
end;
"""

# Same content id: the newest text, records and quality win; usage and age are kept. A
# vector survives when the text did not change and the writer had no model.
_UPSERT = """
insert into patterns(id, collection, domain, entity, quality, usage_count, created_at,
                     text, body, vec, gen)
values (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
on conflict(id) do update set
  quality = excluded.quality, text = excluded.text, body = excluded.body,
  vec = case when excluded.text = patterns.text then coalesce(excluded.vec, patterns.vec)
             else excluded.vec end,
  gen = excluded.gen
"""
_COLUMNS = "id, collection, domain, entity, quality, usage_count, created_at, body"
# By id, `+collection` keeps SQLite on the unique id index: with a plain `collection = ?`
# it picks the scope index and visits every row of the collection (mark_used on 10,000
# patterns: 18 ms instead of 0.5 ms, holding the store's lock).
# Properties kept in the JSON body; the rest are columns.
_BODY = {"scenario", "description", "records", "source", "defect_type", "severity", "tenant"}
# A row's tenant ("" shared; rows written before tenants have none in their body).
_TENANT = "coalesce(json_extract({}body, '$.tenant'), '')"
_WRITE_CHUNK = 16  # patterns embedded and written per bounded step (~0.2 s idle)


def _scope_sql(
    collection: Collection,
    domain: str | None,
    entity: str | None,
    prefix: str = "",
    tenant: str | None = None,
) -> tuple[str, list[Any]]:
    where, args = [f"{prefix}collection = ?"], [str(collection)]
    if tenant is not None:  # the tenant's own and shared ones
        where.append(f"{_TENANT.format(prefix)} in ('', ?)")
        args.append(tenant)
    if domain is not None:
        where.append(f"{prefix}domain = ?")
        args.append(domain)
    if entity is not None:
        where.append(f"{prefix}entity = ?")
        args.append(entity)
    return " and ".join(where), args


def _row_to_pattern(row: Sequence[Any]) -> Pattern:
    pid, collection, domain, entity, quality, usage, created, body = row
    return Pattern.model_validate(
        {
            **json.loads(body),
            "id": pid,
            "collection": collection,
            "domain": domain,
            "entity": entity,
            "quality": quality,
            "usage_count": usage,
            "created_at": datetime.fromtimestamp(created, UTC),
        }
    )


def _vector(blob: bytes | None, dim: int) -> np.ndarray | None:
    if blob is None or len(blob) != dim * 4:
        return None
    return np.frombuffer(blob, dtype=np.float32)


class _Db:
    """The synchronous half: one connection, the vector index, one lock around both.
    Every method runs in a worker thread."""

    def __init__(self, path: Path, timeout: float):
        self.path = path
        self.timeout = timeout
        self.conn: sqlite3.Connection | None = None
        self.lock = threading.Lock()
        self.index: VectorIndex | None = None
        self.gen = 0  # newest generation the index holds
        self.removed = 0  # removal counter the index has seen
        self.data_version: int | None = None
        self.dirty = False  # this connection wrote since the last sync

    # ---- connection ------------------------------------------------------------------
    @contextmanager
    def locked(self) -> Iterator[sqlite3.Connection]:
        if not self.lock.acquire(timeout=self.timeout):
            raise StoreUnavailable(f"store busy for more than {self.timeout:g}s")
        try:
            yield self._open()
        finally:
            self.lock.release()

    def _open(self) -> sqlite3.Connection:
        """Open on first use, and again after a failed start: a file that appears later
        (a mounted volume, fixed permissions) is picked up without a restart."""
        if self.conn is not None:
            return self.conn
        self.path.parent.mkdir(parents=True, exist_ok=True)
        conn = sqlite3.connect(
            self.path, timeout=self.timeout, isolation_level=None, check_same_thread=False
        )
        try:
            conn.execute(f"pragma busy_timeout = {int(self.timeout * 1000)}")
            conn.execute("pragma journal_mode = wal")
            conn.execute("pragma synchronous = normal")
            # Reads through a shared mapping (the OS page cache, one copy for every
            # process): keyword search at 10k patterns measured ~2x faster than through
            # SQLite's default 2 MB page cache, which the wide rows thrash.
            conn.execute("pragma mmap_size = 268435456")
            # executescript commits first, so the script carries its own transaction;
            # immediate: processes starting together create the schema one at a time.
            try:
                conn.executescript(f"begin immediate;\n{SCHEMA}\ncommit;")
            except sqlite3.Error:
                if conn.in_transaction:
                    conn.execute("rollback")
                raise
        except BaseException:
            conn.close()
            raise
        self.conn = conn
        return conn

    @staticmethod
    @contextmanager
    def _tx(conn: sqlite3.Connection, mode: str = "immediate") -> Iterator[None]:
        conn.execute(f"begin {mode}")
        try:
            yield
        except BaseException:
            conn.execute("rollback")
            raise
        conn.execute("commit")

    def close(self) -> None:
        if not self.lock.acquire(timeout=self.timeout):
            return  # a call is stuck in SQLite: leave the connection to the process exit
        try:
            if self.conn is not None:
                self.conn.close()
                self.conn = None
            self.index = None
        finally:
            self.lock.release()

    def _bump(self, conn: sqlite3.Connection, key: str) -> int:
        row = conn.execute(
            "update meta set value = value + 1 where key = ? returning value", (key,)
        ).fetchone()
        self.dirty = True
        return int(row[0])

    # ---- reads -------------------------------------------------------------------------
    def ping(self) -> int:
        with self.locked() as conn:
            return int(conn.execute("select count(*) from patterns").fetchone()[0])

    def count(self, collection: Collection, domain: str | None, entity: str | None) -> int:
        where, args = _scope_sql(collection, domain, entity)
        with self.locked() as conn:
            sql = f"select count(*) from patterns where {where}"
            return int(conn.execute(sql, args).fetchone()[0])

    def counts(self) -> dict[str, int]:
        with self.locked() as conn:
            rows = conn.execute(
                "select collection, domain, entity, count(*) from patterns"
                " group by collection, domain, entity order by 1, 2, 3"
            ).fetchall()
        return {f"{c}/{d}/{e}": int(n) for c, d, e, n in rows}

    def list_patterns(
        self,
        collection: Collection,
        domain: str | None,
        entity: str | None,
        limit: int,
        offset: int,
    ) -> list[Pattern]:
        where, args = _scope_sql(collection, domain, entity)
        with self.locked() as conn:
            rows = conn.execute(
                f"select {_COLUMNS} from patterns where {where}"
                " order by created_at desc, pk desc limit ? offset ?",
                [*args, max(0, limit), max(0, offset)],
            ).fetchall()
        return [_row_to_pattern(r) for r in rows]

    def get(self, collection: Collection, ids: Sequence[str]) -> list[Pattern]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        with self.locked() as conn:
            rows = conn.execute(
                f"select {_COLUMNS} from patterns where +collection = ?"
                f" and id in ({','.join('?' * len(wanted))})",
                [str(collection), *wanted],
            ).fetchall()
        found = {r[0]: _row_to_pattern(r) for r in rows}
        return [found[i] for i in wanted if i in found]

    def texts(self, ids: Sequence[str]) -> dict[str, tuple[str, bool]]:
        """id -> (stored search text, has a vector): what a write can skip embedding."""
        if not ids:
            return {}
        with self.locked() as conn:
            rows = conn.execute(
                "select id, text, vec is not null from patterns"
                f" where id in ({','.join('?' * len(ids))})",
                list(ids),
            ).fetchall()
        return {r[0]: (r[1], bool(r[2])) for r in rows}

    # ---- writes ------------------------------------------------------------------------
    def upsert(self, rows: Sequence[tuple[Pattern, np.ndarray | None]]) -> int:
        """Write one chunk in one transaction; returns how many ids were new."""
        with self.locked() as conn, self._tx(conn):
            ids = [p.id for p, _ in rows]
            known = {
                r[0]
                for r in conn.execute(
                    f"select id from patterns where id in ({','.join('?' * len(ids))})", ids
                )
            }
            gen = self._bump(conn, "gen")
            for p, vec in rows:
                body = p.model_dump(mode="json", include=_BODY)
                conn.execute(
                    _UPSERT,
                    (
                        p.id,
                        str(p.collection),
                        p.domain,
                        p.entity,
                        p.quality,
                        p.usage_count,
                        p.created_at.timestamp(),
                        p.search_text(),
                        json.dumps(body, separators=(",", ":"), ensure_ascii=False),
                        None if vec is None else np.asarray(vec, dtype=np.float32).tobytes(),
                        gen,
                    ),
                )
        return len(set(ids) - known)

    def delete(self, collection: Collection, ids: Sequence[str]) -> int:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return 0
        with self.locked() as conn, self._tx(conn):
            n = conn.execute(
                "delete from patterns where +collection = ?"
                f" and id in ({','.join('?' * len(wanted))})",
                [str(collection), *wanted],
            ).rowcount
            if n:
                self._bump(conn, "removed")
        return int(n)

    def mark_used(self, collection: Collection, ids: Sequence[str]) -> None:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return
        with self.locked() as conn, self._tx(conn):
            conn.execute(
                "update patterns set usage_count = usage_count + 1 where +collection = ?"
                f" and id in ({','.join('?' * len(wanted))})",
                [str(collection), *wanted],
            )

    def prune(
        self, collection: Collection, domain: str, entity: str, keep: int, tenant: str
    ) -> int:
        with self.locked() as conn, self._tx(conn):
            n = conn.execute(
                "delete from patterns where pk in (select pk from patterns"
                f" where collection = ? and domain = ? and entity = ? and {_TENANT.format('')} = ?"
                " order by quality desc, usage_count desc, created_at desc, pk desc"
                " limit -1 offset ?)",
                (str(collection), domain, entity, tenant, max(0, keep)),
            ).rowcount
            if n:
                self._bump(conn, "removed")
        return int(n)

    def store_vectors(self, vecs: dict[int, np.ndarray]) -> None:
        """Vectors for rows a model-less writer stored without one."""
        with self.locked() as conn, self._tx(conn):
            gen = self._bump(conn, "gen")
            conn.executemany(
                "update patterns set vec = ?, gen = ? where pk = ? and vec is null",
                [(v.astype(np.float32).tobytes(), gen, pk) for pk, v in vecs.items()],
            )

    # ---- search ------------------------------------------------------------------------
    def keyword_leg(
        self,
        collection: Collection,
        query: str,
        domain: str | None,
        entity: str | None,
        tenant: str | None = None,
    ) -> dict[int, float]:
        """BM25 over the search text (FTS5's bm25() is negated: lower is better)."""
        match = fts_query(query)
        if match is None:
            return {}
        where, args = _scope_sql(collection, domain, entity, "p.", tenant)
        with self.locked() as conn:
            rows = conn.execute(
                "select p.pk, bm25(patterns_fts) as s from patterns_fts"
                " join patterns p on p.pk = patterns_fts.rowid"
                f" where patterns_fts match ? and {where} order by s limit ?",
                [match, *args, CANDIDATES],
            ).fetchall()
        return {int(pk): -float(s) for pk, s in rows}

    def vector_leg(
        self,
        collection: Collection,
        qvec: np.ndarray,
        domain: str | None,
        entity: str | None,
        tenant: str | None = None,
    ) -> tuple[dict[int, float], list[tuple[int, str]]]:
        """Cosine over the index, synced first; also the rows still without a vector
        (written by a process without the model), for the caller to fill in."""
        with self.locked() as conn:
            missing = self._sync(conn, qvec.shape[0])
            assert self.index is not None
            found = self.index.search(qvec, str(collection), domain, entity, CANDIDATES, tenant)
            return found, missing

    def _sync(self, conn: sqlite3.Connection, dim: int) -> list[tuple[int, str]]:
        """Bring the index up to the file: everything on first use, then only rows of
        newer generations, and a re-list of ids after removals. Cheap when nothing
        changed: one pragma."""
        version = int(conn.execute("pragma data_version").fetchone()[0])
        if self.index is not None and not self.dirty and version == self.data_version:
            return []
        with self._tx(conn, "deferred"):  # one snapshot for counters and rows
            meta = dict(conn.execute("select key, value from meta").fetchall())
            if self.index is None or self.index.dim != dim:
                self.index, self.gen, self.removed = VectorIndex(dim), -1, -1
            rows = conn.execute(
                f"select pk, collection, domain, entity, {_TENANT.format('')}, vec from patterns"
                " where gen > ?",
                (self.gen,),
            ).fetchall()
            live = None
            if meta["removed"] != self.removed and self.gen >= 0:
                live = {r[0] for r in conn.execute("select pk from patterns where vec is not null")}
            missing = conn.execute(
                "select pk, text from patterns where vec is null limit ?", (_WRITE_CHUNK,)
            ).fetchall()
        put, drop = [], []
        for pk, c, d, e, t, blob in rows:
            vec = _vector(blob, dim)
            if vec is None:
                drop.append(pk)
            else:
                put.append((pk, (c, d, e, t), vec))
        self.index.put(put)
        self.index.remove(drop)
        if live is not None:
            self.index.remove(self.index.ids() - live)
        self.gen, self.removed = int(meta["gen"]), int(meta["removed"])
        self.data_version, self.dirty = version, False
        return [(int(pk), str(text)) for pk, text in missing]

    def rows(self, pks: Sequence[int]) -> dict[int, Pattern]:
        if not pks:
            return {}
        with self.locked() as conn:
            rows = conn.execute(
                f"select pk, {_COLUMNS} from patterns where pk in ({','.join('?' * len(pks))})",
                list(pks),
            ).fetchall()
        return {int(r[0]): _row_to_pattern(r[1:]) for r in rows}


class EmbeddedStore(PatternStore):
    """`PatternStore` on a local SQLite file; see the module docstring."""

    backend = "embedded"

    def __init__(self, path: str | Path, *, timeout_seconds: float = 5.0):
        self.path = Path(path)
        self.timeout = timeout_seconds
        self._db = _Db(self.path, timeout_seconds)
        self._started = False
        self._error: str | None = None  # the last failure, until a call succeeds
        # Why ranking is keywords only (None: semantic). Checked without loading the model.
        self._no_model: str | None = embedding.model_status()

    @classmethod
    def from_settings(cls, settings: StoreSettings) -> EmbeddedStore:
        return cls(
            settings.pattern_store_path, timeout_seconds=settings.pattern_store_timeout_seconds
        )

    # ---- plumbing ----------------------------------------------------------------------
    async def _call(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` in a worker thread, bounded: failures become StoreUnavailable."""
        if not self._started:
            raise StoreUnavailable("pattern store not started")
        try:
            out = await asyncio.wait_for(asyncio.to_thread(fn, *args), self.timeout)
        except TimeoutError:
            self._error = f"no answer within {self.timeout:g}s"
        except StoreUnavailable as exc:
            self._error = str(exc)
        except (sqlite3.Error, OSError) as exc:
            self._error = f"{self.path}: {exc}"
        else:
            self._error = None
            return out
        raise StoreUnavailable(self._error)

    def _embedder(self) -> embedding.Embedder | None:
        """The model, loaded on first need; None (and keywords only) without one."""
        if self._no_model is not None:
            return None
        try:
            return embedding.get_embedder()
        except ModelUnavailable as exc:
            self._no_model = str(exc)
            log.warning("pattern store: keywords only (%s)", exc)
            return None

    # ---- lifecycle ---------------------------------------------------------------------
    async def start(self) -> None:
        self._started = True
        await self._call(self._db.ping)

    async def aclose(self) -> None:
        if self._started:
            self._started = False
            await asyncio.to_thread(self._db.close)

    # ---- writes ------------------------------------------------------------------------
    async def upsert(self, patterns: Sequence[Pattern]) -> int:
        unique = list({p.id: p for p in (q.with_id() for q in patterns)}.values())
        new = 0
        for i in range(0, len(unique), _WRITE_CHUNK):
            new += await self._call(self._upsert_chunk, unique[i : i + _WRITE_CHUNK])
        return new

    def _upsert_chunk(self, chunk: list[Pattern]) -> int:
        """Embed what is new or changed (outside the lock), then write in one transaction."""
        vecs: list[np.ndarray | None] = [None] * len(chunk)
        model = self._embedder()
        if model is not None:
            stored = self._db.texts([p.id for p in chunk])
            todo = [
                i
                for i, p in enumerate(chunk)
                if stored.get(p.id) != (p.search_text(), True)  # unchanged: keep its vector
            ]
            if todo:
                for i, v in zip(
                    todo, model.embed([chunk[i].search_text() for i in todo]), strict=True
                ):
                    vecs[i] = v
        return self._db.upsert(list(zip(chunk, vecs, strict=True)))

    async def delete(self, collection: Collection, ids: Sequence[str]) -> int:
        return await self._call(self._db.delete, collection, list(ids))

    async def mark_used(self, collection: Collection, ids: Sequence[str]) -> None:
        await self._call(self._db.mark_used, collection, list(ids))

    async def prune(
        self, collection: Collection, domain: str, entity: str, keep: int, tenant: str = ""
    ) -> int:
        return await self._call(self._db.prune, collection, domain, entity, keep, tenant)

    # ---- reads -------------------------------------------------------------------------
    async def search(
        self,
        collection: Collection,
        query: str,
        *,
        domain: str | None = None,
        entity: str | None = None,
        top_k: int = 5,
        alpha: float = 0.5,
        tenant: str | None = None,
    ) -> list[Hit]:
        return await self._call(
            self._search, collection, query, domain, entity, top_k, alpha, tenant
        )

    def _search(
        self,
        collection: Collection,
        query: str,
        domain: str | None,
        entity: str | None,
        top_k: int,
        alpha: float,
        tenant: str | None = None,
    ) -> list[Hit]:
        alpha = min(1.0, max(0.0, alpha))
        model = self._embedder() if alpha > 0 else None
        if model is None:
            alpha = 0.0  # keyword-only mode: the keyword leg carries all the weight
        keyword = (
            self._db.keyword_leg(collection, query, domain, entity, tenant) if alpha < 1 else {}
        )
        vector: dict[int, float] = {}
        if model is not None:
            vector, missing = self._db.vector_leg(
                collection, model.embed_query(query), domain, entity, tenant
            )
            if missing:  # fill in, a chunk per search; counted from the next search on
                vecs = model.embed([text for _, text in missing])
                self._db.store_vectors({pk: v for (pk, _), v in zip(missing, vecs, strict=True)})
        best = top(relative_fusion(keyword, vector, alpha), top_k)
        found = self._db.rows([pk for pk, _ in best])
        return [
            Hit(pattern=found[pk], score=round(min(1.0, score), 6))
            for pk, score in best
            if pk in found
        ]

    async def get(self, collection: Collection, ids: Sequence[str]) -> list[Pattern]:
        return await self._call(self._db.get, collection, list(ids))

    async def list_patterns(
        self,
        collection: Collection,
        *,
        domain: str | None = None,
        entity: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Pattern]:
        return await self._call(self._db.list_patterns, collection, domain, entity, limit, offset)

    async def count(
        self, collection: Collection, *, domain: str | None = None, entity: str | None = None
    ) -> int:
        return await self._call(self._db.count, collection, domain, entity)

    async def stats(self) -> StoreStats:
        counts = await self._call(self._db.counts)
        return StoreStats(backend=self.backend, counts=counts, semantic=self._no_model is None)

    async def health(self) -> str:
        try:
            n = await self._call(self._db.ping)
        except StoreUnavailable as exc:
            return f"unavailable: {exc}"
        if self._no_model is not None:
            return f"degraded: keywords only ({self._no_model})"
        state = "loaded" if embedding.loaded() else "loads on first search"
        return f"healthy: {n} patterns in {self.path}, {embedding.MODEL_NAME} {state}"

    # ---- for the benchmark and the CLI -------------------------------------------------
    def warm(self) -> float:
        """Load the model and the vector index now (seconds taken); blocking."""
        t = time.perf_counter()
        model = self._embedder()
        if model is not None:
            self._db.vector_leg(Collection.PATTERNS, np.zeros(model.dim, np.float32), None, None)
        return time.perf_counter() - t


#: every stored column of a pattern row (what a salvage copies)
_ROW_COLUMNS = (
    "id, collection, domain, entity, quality, usage_count, created_at, text, body, vec, gen"
)


def _intact(path: Path) -> bool:
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return False
    try:
        return bool(conn.execute("pragma quick_check").fetchone()[0] == "ok")
    except sqlite3.DatabaseError:
        return False
    finally:
        conn.close()


def _readable_rows(path: Path, probe: int = 10_000) -> tuple[list[tuple[Any, ...]], int]:
    """Every pattern row that still reads, one at a time; and how many keys did not.

    Keys come from a scan of the table as far as it reads, then from probing the keys
    after the last one seen (rows live in key order, so pages past a damaged one still
    hold rows), until `probe` keys in a row answer nothing."""
    rows: list[tuple[Any, ...]] = []
    lost = 0
    try:
        conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    except sqlite3.Error:
        return rows, lost
    pks: list[int] = []
    try:
        with contextlib.suppress(sqlite3.DatabaseError):
            for (pk,) in conn.execute("select pk from patterns order by pk"):
                pks.append(pk)
        pk, misses = (pks[-1] if pks else 0), 0
        while misses < probe:
            pk += 1
            try:
                found = conn.execute("select pk from patterns where pk = ?", (pk,)).fetchone()
            except sqlite3.DatabaseError:
                found = None
            if found is None:
                misses += 1
            else:
                pks.append(pk)
                misses = 0
        for pk in pks:
            try:
                row = conn.execute(f"select {_ROW_COLUMNS} from patterns where pk = ?", (pk,))
                rows.append(tuple(row.fetchone()))
            except (sqlite3.DatabaseError, TypeError):
                lost += 1
    except sqlite3.DatabaseError:
        pass  # not even the schema reads: nothing to recover row by row
    finally:
        conn.close()
    return rows, lost


def _header_repaired(path: Path, into: Path) -> Path:
    """A copy whose header's page count matches the pages the file holds: a cut-short
    file is otherwise "malformed" as a whole, its intact first pages included."""
    data = bytearray(path.read_bytes())
    if len(data) >= 100 and data.startswith(b"SQLite format 3\x00"):
        size = int.from_bytes(data[16:18], "big")
        size = 65536 if size == 1 else size or 4096
        pages = len(data) // size
        del data[pages * size :]
        data[28:32] = pages.to_bytes(4, "big")
    into.write_bytes(bytes(data))
    return into


def salvage_store(path: Path, quarantine: Path) -> str:
    """Before any process opens the store: a damaged SQLite file is moved to `quarantine`
    and a new one holds every pattern row that still reads (the search index is rebuilt
    by the insert triggers). Returns what was done ("" when the file is intact or absent).

    Why: a store that cannot be opened would take RAG, hybrid and learning down at every
    start; learned patterns are worth keeping as far as they read."""
    if not path.exists() or _intact(path):
        return ""
    rows, lost = _readable_rows(path)
    quarantine.mkdir(parents=True, exist_ok=True)
    if not rows:
        repaired = _header_repaired(path, quarantine / f"{path.name}.repaired")
        rows, lost = _readable_rows(repaired)
        repaired.unlink()
    for suffix in ("", "-wal", "-shm"):
        side = path.with_name(path.name + suffix)
        if side.exists():
            side.replace(quarantine / side.name)
    conn = sqlite3.connect(path, isolation_level=None)
    try:
        conn.executescript(f"begin immediate;\n{SCHEMA}\ncommit;")
        conn.execute("begin immediate")
        conn.executemany(
            f"insert or ignore into patterns({_ROW_COLUMNS}) values (?,?,?,?,?,?,?,?,?,?,?)", rows
        )
        conn.execute("commit")
    finally:
        conn.close()
    return (
        f"pattern store {path} was damaged: {len(rows)} pattern(s) recovered"
        + (f", {lost} unreadable" if lost else "")
        + f"; the damaged file is in {quarantine}"
    )
