"""RAG path figures (one sitting):

- in-process variation records/s per seeded entity (one core: examples compiled once per
  request, then one record per example turn);
- records/s of 100-record RAG requests through the pipeline (bridge -> router -> rag
  service -> bridge, services in separate processes as `make run` starts them) with
  10,000 patterns in the embedded store, many callers at once. Target >= 7,460/s (10x
  the 746/s the first RAG implementation managed).

The 10,000-pattern store is built once (every pattern embedded: a few minutes on two cores)
and kept in .data/bench/ for later sittings.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import os
import time
from pathlib import Path

import grpc

from bench.pipeline import supervised_settings
from services.core.models import GenerateRequest
from services.core.plan import build_plan
from services.core.registry import SchemaRegistry
from services.core.variation import Example, Variation
from services.kit.settings import Settings
from services.patterns import Collection, Pattern, open_store
from services.patterns.seeds import load_seeds
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from services.supervisor import Supervisor

ROOT = Path(__file__).resolve().parents[1]
STORED = 10_000
RECORDS = 100  # per request
CALLERS = 32
REQUESTS = 1500
TARGET = 7_460
ENTITIES = ("cart", "order", "payment", "review")
ROUTED = ("cart", "order", "payment")  # a review with a RAG hint wants the LLM too (hybrid)


def variation_rates(n: int = 20_000) -> dict[str, float]:
    """Records/s of Variation alone, best of 3, from each entity's seed patterns."""
    reg = SchemaRegistry.load()
    seeds = [p for p in load_seeds() if p.collection == Collection.PATTERNS]
    out = {}
    for entity in ENTITIES:
        examples = [Example(r) for p in seeds if p.entity == entity for r in p.records]
        plan = build_plan(GenerateRequest(entity=entity, count=n, seed=1, hints=["similar"]), reg)
        best = float("inf")
        for _ in range(3):
            t = time.perf_counter()
            Variation(plan, examples).records(0, n)
            best = min(best, time.perf_counter() - t)
        out[entity] = n / best
    return out


def synthetic_patterns(total: int) -> list[Pattern]:
    """`total` distinct patterns grown from the seeds: each seed's records varied anew,
    its description numbered, so every one is stored (content ids differ)."""
    reg = SchemaRegistry.load()
    seeds = [p for p in load_seeds() if p.collection == Collection.PATTERNS]
    out: list[Pattern] = []
    k = 0
    while len(out) < total:
        for p in seeds:
            if len(out) >= total:
                break
            plan = build_plan(GenerateRequest(entity=p.entity, count=len(p.records), seed=k), reg)
            records = Variation(plan, [Example(r) for r in p.records]).records(0, plan.count)
            out.append(
                p.model_copy(
                    update={
                        "id": "",
                        "records": records.records,
                        "description": f"{p.description} (variant {k})",
                        "source": "bench",
                    }
                ).with_id()
            )
        k += 1
    return out


async def build_store(path: Path) -> float:
    """The 10,000-pattern store (kept for later sittings); seconds it took, 0 if kept."""
    if path.exists():
        return 0.0
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".building")
    for leftover in path.parent.glob(tmp.name + "*"):
        leftover.unlink()
    store = open_store(
        Settings(
            _env_file=None,
            pattern_store_path=str(tmp),
            weaviate_url=None,
            pattern_store_timeout_seconds=600,  # embedding a batch takes seconds
        )
    )
    await store.start()
    t = time.perf_counter()
    try:
        patterns = synthetic_patterns(STORED)
        for i in range(0, len(patterns), 250):
            await store.upsert(patterns[i : i + 250])
        count = await store.count(Collection.PATTERNS)
    finally:
        await store.aclose()
    assert count >= STORED, count
    for suffix in ("", "-wal", "-shm"):
        src = Path(str(tmp) + suffix)
        if src.exists():
            src.rename(Path(str(path) + suffix))
    return time.perf_counter() - t


def store_path() -> Path:
    digest = hashlib.sha256(
        json.dumps([p.id for p in load_seeds()]).encode() + str(STORED).encode()
    ).hexdigest()[:12]
    return ROOT / ".data" / "bench" / f"patterns-{STORED}-{digest}.sqlite"


async def _requests(port: int) -> dict[str, float]:
    opts = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
        stub = pb_grpc.TestDataServiceStub(ch)

        def request(i: int) -> pb.GenerateRequest:
            return pb.GenerateRequest(
                entity=ROUTED[i % len(ROUTED)], count=RECORDS, seed=i, hints=["similar"]
            )

        for i in range(8):  # warm-up: connections, the model, the vector index
            r = await stub.GenerateData(request(i), timeout=60)
            assert r.metadata.generation_path == "rag", r.metadata.routing_reason
        queue = list(range(REQUESTS))
        latencies: list[float] = []
        paths: set[str] = set()

        async def caller() -> int:
            n = 0
            while queue:
                i = queue.pop()
                t = time.perf_counter()
                r = await stub.GenerateData(request(i), timeout=60)
                latencies.append(time.perf_counter() - t)
                assert r.success, r.error
                paths.add(r.metadata.generation_path)
                n += r.record_count
            return n

        t = time.perf_counter()
        done = await asyncio.gather(*(caller() for _ in range(CALLERS)))
        wall = time.perf_counter() - t
    latencies.sort()
    return {
        "rps": sum(done) / wall,
        "calls": len(latencies) / wall,
        "p50_ms": latencies[len(latencies) // 2] * 1000,
        "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
        "rag_only": float(paths == {"rag"}),
    }


def run() -> dict[str, float]:
    print(f"rag ({os.cpu_count()} cores):")
    rates = variation_rates()
    for entity, rate in rates.items():
        print(f"  variation, {entity:<8} records/s  {rate:>10,.0f}   (in process, one core)")
    path = store_path()
    took = asyncio.run(build_store(path))
    built = f"built in {took:.0f} s" if took else "kept from an earlier sitting"
    print(f"  store: {STORED:,} patterns, {path.stat().st_size / 2**20:.0f} MiB ({built})")
    settings, env = supervised_settings()
    env["PATTERN_STORE_PATH"] = str(path)
    with Supervisor(settings, extra_env=env):
        got = asyncio.run(_requests(settings.grpc_port))
    print(
        f"  {RECORDS}-record RAG requests, {CALLERS} callers  {got['rps']:>10,.0f} records/s"
        f"  ({got['calls']:,.0f} calls/s, p50 {got['p50_ms']:.0f} ms, p99 {got['p99_ms']:.0f} ms)"
        f"   target >= {TARGET:,}/s"
    )
    assert got["rag_only"], "some requests were not served by the rag path"
    return {**{f"variation_{k}_per_s": v for k, v in rates.items()}, **got}


if __name__ == "__main__":
    run()
