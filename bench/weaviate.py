"""Weaviate pattern store: what the backend costs on our side, and how fast it notices a
server that is gone. Against the in-process wire-format fake (a Python server: its own
ranking time is included and is not Weaviate's), with the real client and MiniLM vectors.

    python -m bench weaviate
"""

from __future__ import annotations

import asyncio
import re
import statistics
import subprocess
import sys
import time

from services.patterns.errors import StoreUnavailable
from services.patterns.store import Collection, Pattern
from services.patterns.weaviate import WeaviateStore
from tests.fakes.weaviate_server import FakeWeaviate
from tests.patterns.backends import DIM, weaviate_settings

N_PATTERNS = 200
N_QUERIES = 50
WORDS = re.findall(
    r"\w+",
    "groceries family weekly holiday gift toys running shoes marathon kitchen skillet office "
    "chair lamp baby blanket camping tent headlamp coffee beans grinder laptop bag charger",
)


def _patterns() -> list[Pattern]:
    out = []
    for i in range(N_PATTERNS):
        words = [WORDS[(i * k + 3) % len(WORDS)] for k in range(1, 8)]
        out.append(
            Pattern(
                domain="ecommerce",
                entity=("cart", "order", "review")[i % 3],
                scenario=f"s{i % 7}",
                description=f"Pattern {i}: " + " ".join(words),
                records=[{"_index": j, "item": w} for j, w in enumerate(words)],
            )
        )
    return out


def _import_seconds() -> float:
    code = "import time; t = time.perf_counter(); import weaviate, weaviate.classes; "
    code += "print(time.perf_counter() - t)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip())


async def _failures(server: FakeWeaviate) -> dict[str, float]:
    out: dict[str, float] = {}
    store = WeaviateStore(
        weaviate_settings(server, pattern_store_timeout_seconds=1.0), recheck_s=3600.0
    )
    await store.start()
    try:
        await store.count(Collection.PATTERNS)
        server.stop()
        t = time.perf_counter()
        try:
            await store.count(Collection.PATTERNS)
        except StoreUnavailable:
            out["down_detected_s"] = time.perf_counter() - t
        t = time.perf_counter()
        try:
            await store.count(Collection.PATTERNS)
        except StoreUnavailable:
            out["known_down_s"] = time.perf_counter() - t
        server.start()
        store.recheck_s = 0.0
        t = time.perf_counter()
        await store.count(Collection.PATTERNS)
        out["recovered_s"] = time.perf_counter() - t
    finally:
        await store.aclose()
    return out


async def _run() -> dict[str, float]:
    results: dict[str, float] = {"import_s": _import_seconds()}
    with FakeWeaviate(vector_dim=DIM) as server:
        store = WeaviateStore(weaviate_settings(server))
        t = time.perf_counter()
        await store.start()
        results["start_s"] = time.perf_counter() - t  # import + connect + 3 creates + probe
        try:
            patterns = _patterns()
            t = time.perf_counter()
            await store.upsert(patterns)
            results["upsert_new_s"] = time.perf_counter() - t
            t = time.perf_counter()
            await store.upsert(patterns)
            results["upsert_again_s"] = time.perf_counter() - t  # vectors reused, no embedding
            lat = []
            for i in range(N_QUERIES):
                query = " ".join(WORDS[(i * 5 + k) % len(WORDS)] for k in range(4))
                t = time.perf_counter()
                await store.search(Collection.PATTERNS, query, domain="ecommerce", entity="cart")
                lat.append(time.perf_counter() - t)
            results["search_p50_ms"] = statistics.median(lat) * 1000
            lat = []
            for _ in range(N_QUERIES):
                t = time.perf_counter()
                await store.count(Collection.PATTERNS, domain="ecommerce", entity="cart")
                lat.append(time.perf_counter() - t)
            results["count_p50_ms"] = statistics.median(lat) * 1000
            t = time.perf_counter()
            for _ in range(N_QUERIES):
                await store.health()
            results["health_cached_us"] = (time.perf_counter() - t) / N_QUERIES * 1e6
        finally:
            await store.aclose()
        results.update(await _failures(server))
    return results


def run() -> dict[str, float]:
    r = asyncio.run(_run())
    rows = [
        ("import weaviate client (lazy)", f"{r['import_s']:.2f} s"),
        ("start: connect, 3 creates, probe", f"{r['start_s']:.2f} s"),
        (f"upsert {N_PATTERNS} new patterns (embeds)", f"{r['upsert_new_s']:.2f} s"),
        (f"upsert the same {N_PATTERNS} again", f"{r['upsert_again_s']:.2f} s"),
        ("search p50: embed + hybrid", f"{r['search_p50_ms']:.1f} ms"),
        ("count p50: gRPC aggregate", f"{r['count_p50_ms']:.1f} ms"),
        ("health, cached", f"{r['health_cached_us']:.1f} us"),
        ("server down -> unavailable (1 s bound)", f"{r.get('down_detected_s', -1):.2f} s"),
        ("known down -> unavailable", f"{r.get('known_down_s', -1) * 1e6:.1f} us"),
        ("first call after recovery", f"{r['recovered_s']:.2f} s"),
    ]
    print("weaviate pattern store (real client, MiniLM vectors, in-process fake server)")
    for label, value in rows:
        print(f"  {label:<42} {value:>10}")
    return r


if __name__ == "__main__":
    run()
