"""The pattern store on a Weaviate server (when `WEAVIATE_URL` is set), through the async
weaviate-client v4.

- Collections: the spec's `TestDataPattern`, `DefectPattern`, `ProductionSample`
  (`weaviate_schema`), created when missing; a concurrent creator's 422 is fine.
- Vectors are ours: the same MiniLM vectors as the embedded store, sent with each object
  (no vectorizer module on the server, nothing called out). Without the model, ranking is
  keywords only (alpha 0), and health says so.
- Objects are keyed by uuid5 of the content id: storing a pattern again replaces it
  (keeping its usage count and creation time, as the embedded store does).
- Every server call is bounded by `pattern_store_timeout_seconds`: the client itself
  retries for about a minute on UNAVAILABLE. Any failure becomes `StoreUnavailable` and
  health "unavailable: <reason>"; the next call after `recheck_s` tries again on a fresh
  client, so the store recovers when the server does, and a store known to be down
  answers at once in between.
- `skip_init_checks=True`: otherwise every connect also asks PyPI whether the client is
  current (and waits for it when offline). Health is our own gRPC probe instead.

The client is imported on first use (~1 s): a deployment without Weaviate never pays it.
"""

from __future__ import annotations

import asyncio
import logging
import time
import warnings
from collections.abc import Awaitable, Callable, Iterator, Sequence
from datetime import datetime
from typing import Any, Protocol, TypeVar
from urllib.parse import urlsplit

from services.kit.settings import StoreSettings
from services.patterns.errors import ModelUnavailable, StoreUnavailable
from services.patterns.store import Collection, Hit, Pattern, PatternStore, StoreStats
from services.patterns.weaviate_schema import (
    LAYOUTS,
    SEARCH_PROP,
    SHARED,
    TENANT_PROP,
    Layout,
    object_uuid,
)

log = logging.getLogger("testdata.patterns")
T = TypeVar("T")

WRITE_CHUNK = 500  # objects per BatchObjects call
ID_CHUNK = 500  # ids per `contains_any` filter
RECHECK_S = 2.0  # health answers are reused, and a down store fails fast, this long
MAX_GROUPS = 10_000


class Embedder(Protocol):
    """Text to unit vectors, shape (n, dim): `services.patterns.embedding.Embedder`."""

    def embed(self, texts: list[str]) -> Any: ...


class _Default:
    """The process's MiniLM model, loaded on first use; None when there is none."""

    def __init__(self) -> None:
        self.reason: str | None = None

    def status(self) -> str | None:
        """Why there is no model, without loading it; None when there is (or may be) one."""
        if self.reason is None:
            try:
                from services.patterns import embedding
            except ImportError as exc:
                self.reason = f"no embedding module ({exc})"
            else:
                return embedding.model_status()
        return self.reason

    def get(self) -> Embedder | None:
        if self.status() is not None:
            return None
        from services.patterns import embedding

        try:
            return embedding.get_embedder()
        except ModelUnavailable as exc:
            self.reason = str(exc)
        log.warning("weaviate pattern store: keywords only (%s)", self.reason)
        return None


def _client_module() -> Any:
    """`weaviate`, imported on first use. Authlib warns about httpx at import: harmless."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        import weaviate
        import weaviate.classes

    return weaviate


def _failures() -> tuple[type[BaseException], ...]:
    """What a call to the server can raise when the server is the problem."""
    import grpc
    import httpx
    from weaviate.exceptions import WeaviateBaseError

    return (WeaviateBaseError, grpc.RpcError, httpx.HTTPError, OSError)


def _chunks(items: Sequence[T], size: int) -> Iterator[Sequence[T]]:
    for i in range(0, len(items), size):
        yield items[i : i + size]


def _similarity(query: list[float] | None, vectors: Any) -> float:
    """Dot product (cosine: the vectors are unit length) with a result's default vector."""
    vector = vectors.get("default") if vectors else None
    if query is None or not vector:
        return 0.0
    return sum(a * b for a, b in zip(query, vector, strict=True))


def _short(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return f"{type(exc).__name__}: {text[:240]}"


class WeaviateStore(PatternStore):
    """`PatternStore` on Weaviate; see the module docstring."""

    backend = "weaviate"

    def __init__(
        self,
        settings: StoreSettings,
        *,
        embedder: Embedder | None = None,
        keyword_only: bool = False,
        recheck_s: float = RECHECK_S,
    ):
        if not settings.weaviate_url:
            raise ValueError("WeaviateStore needs WEAVIATE_URL")
        self.settings = settings
        self.url = settings.weaviate_url.rstrip("/")
        parts = urlsplit(self.url)
        # A malformed URL is reported like an unreachable server, not raised: no crash.
        self._misconfigured: str | None = None
        try:
            self._http_port = parts.port or (443 if parts.scheme == "https" else 80)
        except ValueError as exc:
            self._misconfigured = str(exc)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            self._misconfigured = "not http(s)://host[:port]"
        self._secure = parts.scheme == "https"
        self._host = parts.hostname or ""
        self._grpc_port = settings.weaviate_grpc_port
        key = settings.weaviate_api_key
        self._api_key = key.get_secret_value() if key else None
        self.timeout = settings.pattern_store_timeout_seconds
        self.recheck_s = recheck_s
        self._given = embedder
        self._default = None if (embedder is not None or keyword_only) else _Default()
        self._keyword_only = "keyword-only store" if keyword_only else None
        self._client: Any = None
        self._ensured = False
        self._started = False
        self._connect_lock = asyncio.Lock()
        self._probe_lock = asyncio.Lock()
        self._usage_lock = asyncio.Lock()
        self._down: str | None = None  # why the last call failed, until one succeeds
        self._down_at = 0.0
        self._health: str | None = None
        self._health_at = 0.0
        self._closing: set[asyncio.Task[None]] = set()

    # ------------------------------------------------------------------ embedding
    def _embedder(self) -> Embedder | None:
        if self._given is not None:
            return self._given
        return None if self._default is None else self._default.get()

    def _no_model(self) -> str | None:
        """Why ranking is keywords only, or None."""
        if self._given is not None:
            return None
        if self._default is None:
            return self._keyword_only
        return self._default.status()

    async def _embed(self, texts: list[str], *, query: bool = False) -> list[list[float]] | None:
        """Vectors as plain lists (what the client sends), in a worker thread (BLAS
        releases the GIL); a query goes through the embedder's query cache if it has one."""
        model = self._embedder()
        if model is None or not texts:
            return None
        one = getattr(model, "embed_query", None) if query and len(texts) == 1 else None
        if one is not None:
            vectors: Any = [await asyncio.to_thread(one, texts[0])]
        else:
            vectors = await asyncio.to_thread(model.embed, texts)
        return [row.tolist() if hasattr(row, "tolist") else list(row) for row in vectors]

    # ------------------------------------------------------------------ plumbing
    def _new_client(self) -> Any:
        weaviate = _client_module()
        from weaviate.classes.init import AdditionalConfig, Auth, Timeout

        t = self.timeout
        return weaviate.use_async_with_custom(
            http_host=self._host,
            http_port=self._http_port,
            http_secure=self._secure,
            grpc_host=self._host,
            grpc_port=self._grpc_port,
            grpc_secure=self._secure,
            auth_credentials=Auth.api_key(self._api_key) if self._api_key else None,
            additional_config=AdditionalConfig(timeout=Timeout(init=t, query=t, insert=t)),
            skip_init_checks=True,
        )

    async def _ready(self) -> Any:
        """A connected client with the collections in place (connects on first need)."""
        if self._client is not None and self._ensured:
            return self._client
        async with self._connect_lock:
            client = self._client
            if client is None:
                client = self._new_client()
                try:
                    await client.connect()
                except BaseException:
                    self._discard(client)
                    raise
                self._client, self._ensured = client, False
            if not self._ensured:
                await self._ensure(client)
                # a concurrent failure may have dropped it meanwhile: then this call
                # fails on the closed client and the next one starts afresh
                self._ensured = self._client is client
            return client

    async def _ensure(self, client: Any) -> None:
        from weaviate.classes.config import Configure, DataType, Property, Tokenization
        from weaviate.exceptions import UnexpectedStatusCodeError

        types = {"text": DataType.TEXT, "number": DataType.NUMBER, "int": DataType.INT}
        types["date"] = DataType.DATE
        for layout in LAYOUTS.values():
            properties = [
                Property(
                    name=p.name,
                    data_type=types[p.data_type],
                    tokenization=Tokenization(p.tokenization) if p.tokenization else None,
                    index_filterable=p.filterable,
                    index_searchable=p.searchable if p.data_type == "text" else None,
                )
                for p in layout.properties()
            ]
            if await client.collections.exists(layout.name):
                await self._add_missing(client.collections.get(layout.name), properties)
                continue
            try:
                await client.collections.create(
                    layout.name,
                    properties=properties,
                    vector_config=Configure.Vectors.self_provided(),
                )
                log.info("weaviate: created collection %s", layout.name)
            except UnexpectedStatusCodeError as exc:
                # 422: another process created it between our check and our create
                if exc.status_code != 422 or not await client.collections.exists(layout.name):
                    raise

    @staticmethod
    async def _add_missing(col: Any, properties: list[Any]) -> None:
        """Properties a newer version declares (the tenant), added to an existing class.
        Objects stored before have none, so tenant-scoped searches do not find them:
        `testdata patterns seed` stores the seeds again, shared."""
        have = {p.name for p in (await col.config.get(simple=True)).properties}
        for p in properties:
            if p.name in have:
                continue
            await col.config.add_property(p)
            log.warning(
                "weaviate: added property %s to %s; patterns stored before it are not found "
                "by tenant-scoped searches until stored again (`testdata patterns seed`)",
                p.name,
                col.name,
            )

    def _discard(self, client: Any) -> None:
        """Close a client in the background (bounded): a fresh one serves the next call."""
        if client is None:
            return

        async def close() -> None:
            try:
                async with asyncio.timeout(self.timeout):
                    await client.close()
            except Exception as exc:  # noqa: BLE001 - closing a broken client: nothing to do
                log.debug("weaviate: closing a failed client: %s", exc)

        task = asyncio.get_running_loop().create_task(close())
        self._closing.add(task)
        task.add_done_callback(self._closing.discard)

    async def _call(
        self, what: str, fn: Callable[[Any], Awaitable[T]], *, probe: bool = False
    ) -> T:
        """Run `fn(client)` bounded by the timeout; a server failure -> StoreUnavailable."""
        if not self._started:
            raise StoreUnavailable("pattern store not started")
        if self._misconfigured is not None:
            raise StoreUnavailable(f"WEAVIATE_URL {self.url!r}: {self._misconfigured}")
        if (
            not probe
            and self._down is not None
            and time.monotonic() - self._down_at < self.recheck_s
        ):
            raise StoreUnavailable(self._down)
        failures = _failures()
        client = None
        try:
            async with asyncio.timeout(self.timeout):
                client = await self._ready()
                result = await fn(client)
        except TimeoutError:
            reason = f"no answer within {self.timeout:g}s ({what})"
        except failures as exc:
            reason = f"{what}: {_short(exc)}"
        else:
            if self._down is not None:
                log.info("weaviate at %s: available again", self.url)
                self._down, self._health_at = None, 0.0  # re-probe health now
            return result
        self._fail(f"weaviate at {self.url}: {reason}", client)
        raise StoreUnavailable(self._down)

    def _fail(self, reason: str, client: Any) -> None:
        if self._down is None:
            log.warning("pattern store unavailable: %s", reason)
        self._down, self._down_at = reason, time.monotonic()
        self._health, self._health_at = f"unavailable: {reason}", self._down_at
        if client is None:
            client = self._client if not self._ensured else None
        if client is not None and client is self._client:  # not one a newer call replaced
            self._client, self._ensured = None, False
            self._discard(client)

    def _collection(self, client: Any, collection: Collection) -> Any:
        return client.collections.get(LAYOUTS[collection].name)

    @staticmethod
    def _scope(
        domain: str | None,
        entity: str | None,
        tenant: str | None = None,
        only_tenant: bool = False,
    ) -> Any:
        """Filters by domain and entity, and with `tenant` the tenant's patterns and shared
        ones (or, `only_tenant`, the tenant's alone: "" is the shared ones)."""
        from weaviate.classes.query import Filter

        parts = [
            Filter.by_property(name).equal(value)
            for name, value in (("domain", domain), ("entity", entity))
            if value is not None
        ]
        if tenant is not None:
            owners = [tenant or SHARED] if only_tenant else list(dict.fromkeys([SHARED, tenant]))
            parts.append(Filter.by_property(TENANT_PROP).contains_any(owners))
        if not parts:
            return None
        return parts[0] if len(parts) == 1 else Filter.all_of(parts)

    @staticmethod
    def _by_ids(uuids: Sequence[str]) -> Any:
        from weaviate.classes.query import Filter

        return Filter.by_id().contains_any(list(uuids))

    # ------------------------------------------------------------------ lifecycle
    async def start(self) -> None:
        """Connect and create missing collections. A server that is down is not an error
        here: health says so and the next call tries again."""
        self._started = True
        await asyncio.to_thread(_client_module)  # ~1 s, off the event loop
        try:
            await self._call("start", self._probe, probe=True)
        except StoreUnavailable as exc:
            log.warning("pattern store not reachable at start: %s", exc)

    async def aclose(self) -> None:
        self._started = False
        client, self._client, self._ensured = self._client, None, False
        if client is not None:
            self._discard(client)
        if self._closing:
            await asyncio.gather(*self._closing, return_exceptions=True)

    # ------------------------------------------------------------------ writes
    async def upsert(self, patterns: Sequence[Pattern]) -> int:
        unique: dict[tuple[Collection, str], Pattern] = {}
        for p in patterns:
            p = p.with_id()
            unique[(p.collection, p.id)] = p  # the last copy of a pattern wins
        new = 0
        for collection in Collection:
            group = [p for (c, _), p in unique.items() if c is collection]
            for chunk in _chunks(group, WRITE_CHUNK):
                new += await self._upsert_chunk(LAYOUTS[collection], chunk)
        return new

    async def _upsert_chunk(self, layout: Layout, chunk: Sequence[Pattern]) -> int:
        """Keep the usage count, creation time and (same text) vector of stored patterns;
        embed only what is new or changed; write in one BatchObjects call."""
        uuids = [object_uuid(p.id) for p in chunk]
        wanted = ["usage_count", layout.created_prop, SEARCH_PROP]

        async def existing(client: Any) -> dict[str, Any]:
            col = client.collections.get(layout.name)
            out: dict[str, Any] = {}
            for ids in _chunks(uuids, ID_CHUNK):
                res = await col.query.fetch_objects(
                    filters=self._by_ids(ids),
                    limit=len(ids),
                    return_properties=wanted,
                    include_vector=True,
                )
                out.update({str(o.uuid): o for o in res.objects})
            return out

        stored = await self._call("upsert", existing)
        rows: list[tuple[str, Pattern, list[float] | None]] = []
        todo: list[int] = []
        for i, (u, p) in enumerate(zip(uuids, chunk, strict=True)):
            old = stored.get(u)
            vector = None
            if old is not None:
                created = old.properties.get(layout.created_prop)
                p = p.model_copy(
                    update={
                        "usage_count": int(old.properties.get("usage_count") or 0),
                        "created_at": created if isinstance(created, datetime) else p.created_at,
                    }
                )
                if old.properties.get(SEARCH_PROP) == p.search_text():
                    vector = old.vector.get("default") if old.vector else None
            if vector is None:
                todo.append(i)
            rows.append((u, p, vector))
        fresh = await self._embed([rows[i][1].search_text() for i in todo])
        if fresh is not None:
            for i, vec in zip(todo, fresh, strict=True):
                rows[i] = (rows[i][0], rows[i][1], vec)

        async def write(client: Any) -> list[str]:
            """Why objects were refused (the server answered: not an availability issue)."""
            from weaviate.classes.data import DataObject
            from weaviate.exceptions import WeaviateInsertManyAllFailedError

            objects = [
                DataObject(properties=layout.to_properties(p), uuid=u, vector=vec)
                for u, p, vec in rows
            ]
            try:
                res = await client.collections.get(layout.name).data.insert_many(objects)
            except WeaviateInsertManyAllFailedError as exc:
                return [str(exc)] * len(objects)
            return [getattr(e, "message", str(e)) for e in res.errors.values()]

        refused = await self._call("upsert", write)
        if refused:
            raise StoreUnavailable(
                f"weaviate at {self.url} refused {len(refused)} of {len(rows)} patterns:"
                f" {refused[0]}"
            )
        return sum(1 for u in uuids if u not in stored)

    async def delete(self, collection: Collection, ids: Sequence[str]) -> int:
        uuids = [object_uuid(i) for i in dict.fromkeys(ids)]
        if not uuids:
            return 0

        async def run(client: Any) -> int:
            col = self._collection(client, collection)
            n = 0
            for chunk in _chunks(uuids, ID_CHUNK):
                n += (await col.data.delete_many(where=self._by_ids(chunk))).successful
            return n

        return await self._call("delete", run)

    async def mark_used(self, collection: Collection, ids: Sequence[str]) -> None:
        """Read-modify-write (Weaviate has no increment); serialised in this process."""
        uuids = [object_uuid(i) for i in dict.fromkeys(ids)]
        if not uuids:
            return

        async def run(client: Any) -> None:
            col = self._collection(client, collection)
            res = await col.query.fetch_objects(
                filters=self._by_ids(uuids), limit=len(uuids), return_properties=["usage_count"]
            )
            await asyncio.gather(
                *(
                    col.data.update(
                        uuid=o.uuid,
                        properties={"usage_count": int(o.properties.get("usage_count") or 0) + 1},
                    )
                    for o in res.objects
                )
            )

        async with self._usage_lock:
            await self._call("mark_used", run)

    async def prune(
        self, collection: Collection, domain: str, entity: str, keep: int, tenant: str = ""
    ) -> int:
        """Ask the server for the surplus in eviction order (lowest quality, least used,
        oldest first) and delete it."""
        from weaviate.classes.query import Sort

        layout = LAYOUTS[collection]
        scope = self._scope(domain, entity, tenant, only_tenant=True)
        order = (
            Sort.by_property("quality_score", ascending=True)
            .by_property("usage_count", ascending=True)
            .by_property(layout.created_prop, ascending=True)
        )

        async def run(client: Any) -> int:
            col = client.collections.get(layout.name)
            total = (await col.aggregate.over_all(total_count=True, filters=scope)).total_count
            surplus = (total or 0) - max(0, keep)
            removed = 0
            while surplus > 0:
                res = await col.query.fetch_objects(
                    filters=scope, sort=order, limit=min(surplus, ID_CHUNK), return_properties=[]
                )
                if not res.objects:
                    break
                gone = await col.data.delete_many(
                    where=self._by_ids([str(o.uuid) for o in res.objects])
                )
                removed += gone.successful
                surplus -= len(res.objects)
            return removed

        return await self._call("prune", run)

    # ------------------------------------------------------------------ reads
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
        from weaviate.classes.query import HybridFusion, MetadataQuery

        layout = LAYOUTS[collection]
        alpha = min(1.0, max(0.0, alpha))
        vectors = await self._embed([query], query=True) if alpha > 0 else None
        if vectors is None:
            alpha = 0.0  # keywords carry all the weight
        scope = self._scope(domain, entity, tenant)

        async def run(client: Any) -> Any:
            return await client.collections.get(layout.name).query.hybrid(
                query=query,
                vector=vectors[0] if vectors else None,
                alpha=alpha,
                query_properties=[SEARCH_PROP],
                fusion_type=HybridFusion.RELATIVE_SCORE,
                filters=scope,
                limit=max(1, top_k),
                return_metadata=MetadataQuery(score=True),
                include_vector=vectors is not None,  # for the tie-break below
            )

        res = await self._call("search", run)
        hits = [
            Hit(
                pattern=layout.from_properties(o.properties),
                score=round(min(1.0, max(0.0, o.metadata.score or 0.0)), 6),
            )
            for o in res.objects
        ]
        # Relative fusion often ties exactly (min-max gives 0 and 1 per leg), and Weaviate
        # leaves tied results in no set order: put the closer meaning first, then the id,
        # so the same data always ranks the same way.
        query_vec = vectors[0] if vectors else None
        closeness = [_similarity(query_vec, o.vector) for o in res.objects]
        order = sorted(
            range(len(hits)), key=lambda i: (-hits[i].score, -closeness[i], hits[i].pattern.id)
        )
        return [hits[i] for i in order]

    async def get(self, collection: Collection, ids: Sequence[str]) -> list[Pattern]:
        wanted = list(dict.fromkeys(ids))
        if not wanted:
            return []
        layout = LAYOUTS[collection]

        async def run(client: Any) -> list[Any]:
            col = client.collections.get(layout.name)
            found: list[Any] = []
            for chunk in _chunks([object_uuid(i) for i in wanted], ID_CHUNK):
                res = await col.query.fetch_objects(filters=self._by_ids(chunk), limit=len(chunk))
                found.extend(res.objects)
            return found

        by_id = {
            p.id: p
            for p in (layout.from_properties(o.properties) for o in await self._call("get", run))
        }
        return [by_id[i] for i in wanted if i in by_id]

    async def list_patterns(
        self,
        collection: Collection,
        *,
        domain: str | None = None,
        entity: str | None = None,
        limit: int = 100,
        offset: int = 0,
    ) -> list[Pattern]:
        """Newest first (as the embedded store)."""
        from weaviate.classes.query import Sort

        layout = LAYOUTS[collection]
        if limit <= 0:
            return []

        async def run(client: Any) -> Any:
            return await client.collections.get(layout.name).query.fetch_objects(
                filters=self._scope(domain, entity),
                sort=Sort.by_property(layout.created_prop, ascending=False),
                limit=limit,
                offset=max(0, offset),
            )

        res = await self._call("list", run)
        return [layout.from_properties(o.properties) for o in res.objects]

    async def count(
        self, collection: Collection, *, domain: str | None = None, entity: str | None = None
    ) -> int:
        scope = self._scope(domain, entity)

        async def run(client: Any) -> int:
            res = await self._collection(client, collection).aggregate.over_all(
                total_count=True, filters=scope
            )
            return int(res.total_count or 0)

        return await self._call("count", run)

    async def stats(self) -> StoreStats:
        """Counts per collection/domain/entity: group by domain, then by entity within."""
        from weaviate.classes.aggregate import GroupByAggregate
        from weaviate.classes.query import Filter

        async def run(client: Any) -> dict[str, int]:
            counts: dict[str, int] = {}
            for collection in Collection:
                agg = self._collection(client, collection).aggregate
                domains = await agg.over_all(
                    group_by=GroupByAggregate(prop="domain", limit=MAX_GROUPS), total_count=True
                )
                for group in domains.groups:
                    domain = str(group.grouped_by.value)
                    entities = await agg.over_all(
                        filters=Filter.by_property("domain").equal(domain),
                        group_by=GroupByAggregate(prop="entity", limit=MAX_GROUPS),
                        total_count=True,
                    )
                    for g in entities.groups:
                        counts[f"{collection}/{domain}/{g.grouped_by.value}"] = int(
                            g.total_count or 0
                        )
            return dict(sorted(counts.items()))

        counts = await self._call("stats", run)
        return StoreStats(backend=self.backend, counts=counts, semantic=self._no_model() is None)

    async def _probe(self, client: Any) -> int:
        """Over gRPC (connect alone touches only REST): the stored pattern count."""
        res = await self._collection(client, Collection.PATTERNS).aggregate.over_all(
            total_count=True
        )
        return int(res.total_count or 0)

    async def health(self) -> str:
        """Cached for `recheck_s`, so the router and HealthCheck can ask per request."""
        if self._health is not None and time.monotonic() - self._health_at < self.recheck_s:
            return self._health
        async with self._probe_lock:
            if self._health is not None and time.monotonic() - self._health_at < self.recheck_s:
                return self._health
            try:
                n = await self._call("health probe", self._probe, probe=True)
            except StoreUnavailable as exc:
                text = f"unavailable: {exc}"
            else:
                where = f"{n} patterns in weaviate at {self.url}"
                no_model = self._no_model()
                text = (
                    f"degraded: keywords only ({no_model}); {where}"
                    if no_model
                    else f"healthy: {where}"
                )
            self._health, self._health_at = text, time.monotonic()
            return text
