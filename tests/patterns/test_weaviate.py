"""The Weaviate backend through the real weaviate-client against the wire-format fake:
what only this backend has (collections on a server, the wire, a server that goes away).
What every backend must do is in the shared contract suite.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from weaviate.proto.v1 import base_pb2, base_search_pb2
from weaviate.util import generate_uuid5

from services.cli import main
from services.kit.settings import get_settings
from services.patterns import open_store
from services.patterns.errors import StoreUnavailable
from services.patterns.seeds import load_seeds
from services.patterns.store import Collection, Pattern
from services.patterns.weaviate import WeaviateStore
from services.patterns.weaviate_schema import LAYOUTS, SEARCH_PROP, object_uuid
from tests.fakes.weaviate_server import FakeWeaviate
from tests.patterns.backends import DIM, weaviate_settings
from tests.support import HANG_GUARD_S, make_settings

GROCERIES = Pattern(
    domain="ecommerce",
    entity="cart",
    scenario="happy_path",
    description="Weekly groceries for a family of four",
    records=[{"items": ["milk", "bread", "eggs"], "total": 23.5}],
)
GIFTS = Pattern(
    domain="ecommerce",
    entity="cart",
    scenario="holiday",
    description="Holiday gift shopping: toys and wrapping paper",
    records=[{"items": ["lego", "ribbon"], "total": 80.0}],
    quality=0.6,
)
WIRE = Pattern(
    domain="banking",
    entity="transfer",
    description="International wire transfer with correspondent bank fees",
    records=[{"amount": 1200, "currency": "EUR"}],
)
MIDNIGHT = Pattern(
    collection=Collection.DEFECTS,
    domain="ecommerce",
    entity="order",
    description="Order placed at midnight UTC is booked on the previous day",
    defect_type="timezone",
    severity="high",
    records=[{"placed_at": "2026-01-01T00:00:00Z"}],
)
SAMPLE = Pattern(
    collection=Collection.PRODUCTION,
    domain="ecommerce",
    entity="order",
    description="Anonymised production orders",
    records=[{"total": 10, "country": "DE"}, {"total": 30, "country": "FR"}],
)


CLASSES = ["DefectPattern", "ProductionSample", "TestDataPattern"]


@pytest.fixture
def server() -> Iterator[FakeWeaviate]:
    with FakeWeaviate(vector_dim=DIM) as fake:
        yield fake


async def started(server: FakeWeaviate, **args: Any) -> WeaviateStore:
    over = {
        k: args.pop(k) for k in ("pattern_store_timeout_seconds", "weaviate_api_key") if k in args
    }
    store = WeaviateStore(weaviate_settings(server, **over), **args)
    await store.start()
    return store


def floats(raw: bytes) -> tuple[float, ...]:
    return struct.unpack(f"<{len(raw) // 4}f", raw)


# ---------------------------------------------------------------------------- schema
async def test_start_creates_the_spec_collections(server: FakeWeaviate) -> None:
    store = await started(server)
    try:
        assert sorted(server.class_names()) == CLASSES
        spec = {
            "TestDataPattern": {
                "domain": "text", "entity": "text", "scenario": "text", "data": "text",
                "quality_score": "number", "usage_count": "int", "created_at": "date",
            },
            "DefectPattern": {
                "defect_id": "text", "domain": "text", "entity": "text", "trigger_data": "text",
                "defect_description": "text", "severity": "text", "discovered_at": "date",
            },
            "ProductionSample": {
                "domain": "text", "entity": "text", "anonymized_data": "text",
                "distribution_stats": "text", "sample_date": "date",
            },
        }  # fmt: skip
        for name, props in spec.items():
            definition = server.definition(name)
            have = {p["name"]: p for p in definition["properties"]}
            assert {k: have[k]["dataType"] for k in props} == {k: [t] for k, t in props.items()}
            # filters compare domain and entity whole ("retail" must not match "retail eu")
            assert have["domain"]["tokenization"] == have["entity"]["tokenization"] == "field"
            assert have[SEARCH_PROP]["tokenization"] == "word"
            # vectors are ours (MiniLM), not a server-side vectorizer module
            assert definition["vectorConfig"]["default"]["vectorizer"] == {"none": {}}
        assert await store.health() == f"healthy: 0 patterns in weaviate at {server.url}"
    finally:
        await store.aclose()


async def test_start_again_creates_nothing(server: FakeWeaviate) -> None:
    first = await started(server)
    await first.upsert([GROCERIES])
    await first.aclose()
    posts = len(server.calls_of("POST /v1/schema"))
    second = await started(server)
    try:
        assert len(server.calls_of("POST /v1/schema")) == posts == 3
        assert await second.count(Collection.PATTERNS) == 1
    finally:
        await second.aclose()


async def test_a_collection_of_an_older_version_gets_the_tenant_property(
    server: FakeWeaviate, caplog: pytest.LogCaptureFixture
) -> None:
    """Classes made before tenants: the property is added at start, once; an old object
    (no tenant) is found by operators, and by tenants once stored again (shared)."""
    first = await started(server)
    await first.upsert([GROCERIES])
    await first.aclose()
    for name in server.class_names():  # as an older version left them
        cls = server._get(name)
        cls.props.pop("tenant")
        cls.definition["properties"] = [
            p for p in cls.definition["properties"] if p["name"] != "tenant"
        ]
        for props, _ in cls.objects.values():
            props.pop("tenant", None)
    again = await started(server)
    try:
        assert len(server.calls_of("POST /v1/schema/TestDataPattern/properties")) == 1
        assert "added property tenant to TestDataPattern" in caplog.text
        query = "weekly groceries"
        assert len(await again.search(Collection.PATTERNS, query)) == 1
        assert await again.search(Collection.PATTERNS, query, tenant="team-a") == []
        await again.upsert([GROCERIES])  # `testdata patterns seed` does this for seeds
        [hit] = await again.search(Collection.PATTERNS, query, tenant="team-a")
        assert hit.pattern.tenant == ""
    finally:
        await again.aclose()
    third = await started(server)
    await third.aclose()
    assert len(server.calls_of("POST /v1/schema/TestDataPattern/properties")) == 1


async def test_a_collection_created_by_a_racing_process_is_used(server: FakeWeaviate) -> None:
    """Check says missing, create says 422 "already exists": that is success."""
    with server.racing_creator():
        store = await started(server)
    try:
        assert len(server.calls_of("POST /v1/schema")) == 3  # each met 422
        assert (await store.health()).startswith("healthy")
        assert await store.upsert([GROCERIES, MIDNIGHT]) == 2
    finally:
        await store.aclose()


async def test_concurrent_starts_create_each_collection_once(server: FakeWeaviate) -> None:
    stores = [WeaviateStore(weaviate_settings(server)) for _ in range(4)]
    await asyncio.gather(*(s.start() for s in stores))
    try:
        assert sorted(server.class_names()) == CLASSES
        healths = [await s.health() for s in stores]
        assert all(h.startswith("healthy") for h in healths), healths
        await stores[0].upsert([GROCERIES])
        assert [await s.count(Collection.PATTERNS) for s in stores] == [1, 1, 1, 1]
    finally:
        await asyncio.gather(*(s.aclose() for s in stores))


# ---------------------------------------------------------------------------- wire
async def test_objects_carry_384_float_unit_vectors_and_uuid5_ids(server: FakeWeaviate) -> None:
    store = await started(server)
    try:
        assert await store.upsert([GROCERIES, GIFTS, MIDNIGHT, SAMPLE]) == 4
        sent = [o for c in server.calls_of("BatchObjects") for o in c.body.objects]
        assert len(sent) == 4
        for obj in sent:
            assert len(floats(obj.vector_bytes)) == DIM
        stored = server.objects("TestDataPattern")
        g = GROCERIES.with_id()
        assert object_uuid(g.id) == generate_uuid5(g.id)  # the client's own uuid5 scheme
        props, vector = stored[object_uuid(g.id)]
        assert vector is not None and len(vector) == DIM
        assert abs(sum(x * x for x in vector) - 1.0) < 1e-4  # unit norm: cosine = dot
        assert props["pattern_id"] == g.id and props["data"].startswith('[{"items"')
        assert props[SEARCH_PROP] == g.search_text()
        defect = next(iter(server.objects("DefectPattern").values()))[0]
        assert defect["defect_description"] == MIDNIGHT.description
        assert defect["trigger_data"] == '[{"placed_at":"2026-01-01T00:00:00Z"}]'
        stats = next(iter(server.objects("ProductionSample").values()))[0]["distribution_stats"]
        assert '"total":{"min":10,"max":30,"mean":20.0}' in stats
        assert '"country":{"distinct":2}' in stats
    finally:
        await store.aclose()


async def test_search_is_one_hybrid_call_with_our_vector_and_exact_filters(
    server: FakeWeaviate,
) -> None:
    store = await started(server)
    try:
        await store.upsert([GROCERIES, GIFTS, WIRE])
        hits = await store.search(
            Collection.PATTERNS,
            "food shopping for the household",
            domain="ecommerce",
            entity="cart",
            top_k=3,
            alpha=0.75,
        )
        request = server.calls_of("Search")[-1].body
        hybrid = request.hybrid_search
        assert request.collection == "TestDataPattern" and request.limit == 3
        assert len(floats(hybrid.vector_bytes)) == DIM
        assert hybrid.alpha == pytest.approx(0.75)
        assert list(hybrid.properties) == [SEARCH_PROP]
        assert hybrid.fusion_type == base_search_pb2.Hybrid.FUSION_TYPE_RELATIVE_SCORE
        assert request.filters.operator == base_pb2.Filters.OPERATOR_AND
        leaves = {(f.target.property, f.value_text, f.operator) for f in request.filters.filters}
        equal = base_pb2.Filters.OPERATOR_EQUAL
        assert leaves == {("domain", "ecommerce", equal), ("entity", "cart", equal)}
        # the vector leg carries the paraphrase; "shopping" alone would pick the gift cart
        assert [h.pattern.description for h in hits] == [GROCERIES.description, GIFTS.description]
        assert hits[0].score > hits[1].score
        assert all(0.0 <= h.score <= 1.0 for h in hits)
        keyword = await store.search(Collection.PATTERNS, "food shopping", alpha=0.0)
        assert [h.pattern.description for h in keyword] == [GIFTS.description]
    finally:
        await store.aclose()


async def test_storing_again_keeps_usage_creation_time_and_unchanged_vector(
    server: FakeWeaviate,
) -> None:
    store = await started(server)
    try:
        g = GROCERIES.with_id()
        await store.upsert([g])
        await store.mark_used(Collection.PATTERNS, [g.id])
        await store.mark_used(Collection.PATTERNS, [g.id])
        assert [c.what for c in server.calls_of("PATCH")] == [
            f"PATCH /v1/objects/TestDataPattern/{object_uuid(g.id)}"
        ] * 2
        first_vector = server.objects("TestDataPattern")[object_uuid(g.id)][1]
        again = g.model_copy(
            update={"quality": 0.4, "usage_count": 0, "created_at": GIFTS.created_at}
        )
        assert await store.upsert([again]) == 0
        (stored,) = await store.get(Collection.PATTERNS, [g.id])
        assert (stored.quality, stored.usage_count, stored.created_at) == (0.4, 2, g.created_at)
        assert server.objects("TestDataPattern")[object_uuid(g.id)][1] == first_vector
        reworded = g.model_copy(update={"description": "Family groceries for the week"})
        await store.upsert([reworded])
        assert server.objects("TestDataPattern")[object_uuid(g.id)][1] != first_vector
    finally:
        await store.aclose()


async def test_keyword_only_sends_no_vectors_and_says_degraded(server: FakeWeaviate) -> None:
    store = await started(server, keyword_only=True)
    try:
        await store.upsert([GROCERIES, GIFTS])
        assert all(
            not o.vector_bytes for c in server.calls_of("BatchObjects") for o in c.body.objects
        )
        hits = await store.search(Collection.PATTERNS, "gift shopping", alpha=0.75)
        hybrid = server.calls_of("Search")[-1].body.hybrid_search
        assert hybrid.alpha == 0.0 and not hybrid.vector_bytes
        assert [h.pattern.description for h in hits] == [GIFTS.description]
        assert (await store.health()).startswith("degraded: keywords only (keyword-only store)")
        assert (await store.stats()).semantic is False
    finally:
        await store.aclose()


async def test_objects_the_server_refuses_raise_but_leave_the_store_healthy() -> None:
    with FakeWeaviate(vector_dim=8) as small:  # a collection made for other vectors
        store = await started(small)
        try:
            with pytest.raises(StoreUnavailable, match=r"refused 1 of 1 patterns: .*length 384"):
                await store.upsert([GROCERIES])
            assert (await store.health()).startswith("healthy")
        finally:
            await store.aclose()


async def test_api_key_is_sent_and_a_wrong_one_is_unavailable() -> None:
    with FakeWeaviate(vector_dim=DIM, api_key="s3cret") as secured:
        store = await started(secured)
        try:
            assert await store.upsert([GROCERIES]) == 1
            assert await store.count(Collection.PATTERNS) == 1
        finally:
            await store.aclose()
        wrong = await started(secured, weaviate_api_key="nope")
        try:
            health = await wrong.health()
            assert health.startswith("unavailable: ") and "401" in health
        finally:
            await wrong.aclose()


# ---------------------------------------------------------------------------- failures
async def test_server_down_is_unavailable_within_the_timeout_then_recovers(
    server: FakeWeaviate,
) -> None:
    store = await started(server, pattern_store_timeout_seconds=2.0, recheck_s=0.0)
    try:
        await store.upsert([GROCERIES])
        with server.down():
            # our own timeout ended the call (its message says so), not the client's own
            # ~60 s of retries: no clock needed
            with pytest.raises(StoreUnavailable, match=r"weaviate at .*no answer within 2s"):
                await store.search(Collection.PATTERNS, "groceries")
            health = await store.health()
            assert health.startswith(f"unavailable: weaviate at {server.url}")
        assert (await store.health()).startswith("healthy: 1 patterns")
        hits = await store.search(Collection.PATTERNS, "groceries", domain="ecommerce")
        assert [h.pattern.id for h in hits] == [GROCERIES.with_id().id]
    finally:
        await store.aclose()


async def test_a_store_known_down_fails_fast_until_recheck(server: FakeWeaviate) -> None:
    store = await started(server, recheck_s=3600.0)
    store.timeout = 0.5
    try:
        with server.stalled():
            with pytest.raises(StoreUnavailable, match=r"no answer within 0\.5s"):
                await store.count(Collection.PATTERNS)
            seen = len(server.calls)
            with pytest.raises(StoreUnavailable, match=r"no answer within 0\.5s \(count\)"):
                await store.search(Collection.PATTERNS, "anything")
            assert len(server.calls) == seen  # answered from what we know, no request
            assert (await store.health()).startswith("unavailable: ")
    finally:
        await store.aclose()


async def test_concurrent_calls_through_an_outage_fail_cleanly_then_recover(
    server: FakeWeaviate,
) -> None:
    store = await started(server, recheck_s=0.0)
    store.timeout = 1.0
    try:
        await store.upsert([GROCERIES, GIFTS])

        async def burst() -> list[Any]:
            calls = [store.search(Collection.PATTERNS, "groceries") for _ in range(8)]
            calls += [store.count(Collection.PATTERNS) for _ in range(8)]
            return await asyncio.gather(*calls, return_exceptions=True)

        with server.down():
            outcomes = await burst()
            assert all(isinstance(o, StoreUnavailable) for o in outcomes), outcomes
        outcomes = await burst()
        assert [o for o in outcomes if isinstance(o, BaseException)] == []
        assert outcomes[8:] == [2] * 8
    finally:
        await store.aclose()


async def test_a_server_down_at_start_is_not_an_error(server: FakeWeaviate) -> None:
    server.stop()
    store = WeaviateStore(
        weaviate_settings(server, pattern_store_timeout_seconds=2.0), recheck_s=0.0
    )
    try:
        await store.start()  # logs, does not raise: the service starts without its store
        assert (await store.health()).startswith("unavailable: ")
        with pytest.raises(StoreUnavailable):
            await store.count(Collection.PATTERNS)
        server.start()  # same ports
        assert await store.upsert([GROCERIES]) == 1  # connects and creates collections now
        assert sorted(server.class_names()) == CLASSES
        assert (await store.health()).startswith("healthy")
    finally:
        await store.aclose()


async def test_calls_before_start_are_unavailable(server: FakeWeaviate) -> None:
    store = WeaviateStore(weaviate_settings(server))
    with pytest.raises(StoreUnavailable, match="not started"):
        await store.count(Collection.PATTERNS)
    assert server.calls == []


async def test_a_malformed_url_is_unavailable_not_a_crash() -> None:
    store = WeaviateStore(make_settings(weaviate_url="weaviate:8080"))
    await store.start()
    try:
        health = await store.health()
        assert health == "unavailable: WEAVIATE_URL 'weaviate:8080': not http(s)://host[:port]"
    finally:
        await store.aclose()


class _RecordingProxy:
    """An HTTP proxy that refuses everything and remembers each request line."""

    def __init__(self) -> None:
        self.lines: list[str] = []
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.sock.getsockname()[1]}"
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with conn:
                data = conn.recv(4096)
                self.lines.append(data.split(b"\r\n", 1)[0].decode(errors="replace"))
                conn.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    def close(self) -> None:
        self.sock.close()


async def test_connect_asks_nothing_of_pypi(
    server: FakeWeaviate, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Left to itself the client asks pypi.org on every connect whether it is current."""
    import weaviate

    proxy = _RecordingProxy()
    for name in ("HTTPS_PROXY", "https_proxy"):
        monkeypatch.setenv(name, proxy.url)
    for name in ("NO_PROXY", "no_proxy"):
        monkeypatch.setenv(name, "127.0.0.1,localhost")
    try:
        control = weaviate.use_async_with_custom(
            http_host="127.0.0.1",
            http_port=server.http_port,
            http_secure=False,
            grpc_host="127.0.0.1",
            grpc_port=server.grpc_port,
            grpc_secure=False,
        )
        with contextlib.suppress(httpx.HTTPError):  # the client lets the proxy's 403 out
            await control.connect()
        await control.close()
        assert proxy.lines == ["CONNECT pypi.org:443 HTTP/1.1"]  # the check can see it
        proxy.lines.clear()
        server.calls.clear()
        store = await started(server)
        await store.upsert([GROCERIES])
        await store.search(Collection.PATTERNS, "groceries")
        await store.aclose()
        assert proxy.lines == []
        rest = [c.what for c in server.calls if c.kind == "REST"]
        assert rest[0] == "GET /v1/meta" and not any("openid" in r for r in rest)
    finally:
        proxy.close()


# ---------------------------------------------------------------------------- wiring
def test_open_store_picks_weaviate_when_its_url_is_set(server: FakeWeaviate) -> None:
    store = open_store(weaviate_settings(server))
    assert isinstance(store, WeaviateStore) and store.backend == "weaviate"


def test_the_client_is_not_imported_until_a_store_starts() -> None:
    code = (
        "import sys\n"
        "from services.patterns import open_store\n"
        "from services.patterns.weaviate import WeaviateStore\n"
        "from tests.support import make_settings\n"
        "WeaviateStore(make_settings(weaviate_url='http://127.0.0.1:9'))\n"
        "print('weaviate' in sys.modules)\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code],
        capture_output=True,
        text=True,
        check=True,
        timeout=HANG_GUARD_S,
    )
    assert out.stdout.strip() == "False"


def test_the_cli_seeds_and_reports_a_weaviate_store(
    server: FakeWeaviate, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("WEAVIATE_URL", server.url)
    monkeypatch.setenv("WEAVIATE_GRPC_PORT", str(server.grpc_port))
    get_settings.cache_clear()
    try:
        assert main(["patterns", "seed"]) == 0
        assert main(["patterns", "seed", "--if-empty"]) == 0
        capsys.readouterr()
        assert main(["patterns", "stats", "--json"]) == 0
        stats = json.loads(capsys.readouterr().out)
        assert stats["backend"] == "weaviate" and stats["semantic"] is True
        assert sum(stats["counts"].values()) == len(load_seeds())
        assert stats["health"] == f"healthy: 20 patterns in weaviate at {server.url}"
        server.stop()
        assert main(["patterns", "stats"]) == 1
        err = capsys.readouterr().err
        assert err.startswith(f"error: pattern store unavailable (Weaviate at {server.url})")
    finally:
        get_settings.cache_clear()


@pytest.mark.parametrize("collection", list(Collection))
def test_patterns_round_trip_through_properties(collection: Collection) -> None:
    layout = LAYOUTS[collection]
    original = Pattern(
        collection=collection,
        domain="d",
        entity="e",
        scenario="s",
        description="words",
        records=[{"a": 1, "b": [1, 2], "c": None}],
        quality=0.25,
        usage_count=3,
        source="learned:llm",
        defect_type="t",
        severity="low",
    ).with_id()
    props = layout.to_properties(original)
    assert {p.name for p in layout.properties()} == set(props)
    assert layout.from_properties(props) == original
