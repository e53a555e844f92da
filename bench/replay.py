"""Datasets from the log: replay and export throughput.

1,000 traditional requests (20 carts each) are delivered through the in-process pipeline on
an embedded broker, as agents would send them; then `replay --verify` of all 1,000
(requests/s and records/s, every dataset compared with the original's digest), and an
export of the same 1,000 datasets to JSON Lines (records/s, rebuilt from the logged requests
and checked against their digests).

    python -m bench replay
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from services.app import SERVICES, App
from services.client import KafkaTestDataClient
from services.core.models import GenerateRequest
from services.core.registry import SchemaRegistry
from services.datasets.export import export
from services.datasets.log import Window, read_requests, read_results
from services.datasets.replay import replay
from services.kit.broker.embedded import EmbeddedBroker
from services.kit.settings import Settings
from services.kit.wire.topics import Topics

REQUESTS = 1000
COUNT = 20


async def _measure(bootstrap: str, tmp: Path) -> dict[str, float]:
    settings = Settings(
        _env_file=None,
        kafka_bootstrap_servers=bootstrap,
        anthropic_api_key=None,
        pattern_store_path=str(tmp / "patterns.sqlite"),
    )
    topics = Topics()
    app = await App(settings, bootstrap).start(list(SERVICES), grpc_port=0)
    out: dict[str, float] = {}
    try:
        async with KafkaTestDataClient(bootstrap) as client:
            gate = asyncio.Semaphore(32)

            async def one(i: int) -> None:
                async with gate:
                    req = GenerateRequest(entity="cart", count=COUNT, seed=i, hints=["no_learn"])
                    await client.generate(req)

            t0 = time.perf_counter()
            await asyncio.gather(*(one(i) for i in range(REQUESTS)))
            print(f"  recorded {REQUESTS:,} requests in {time.perf_counter() - t0:.1f} s")
            t0 = time.perf_counter()
            logged, _ = await read_requests(bootstrap, topics.requests, Window())
            originals = await read_results(bootstrap, topics.results, Window())
            read_s = time.perf_counter() - t0
            t0 = time.perf_counter()
            verdicts = await replay(client, logged, originals, verify=True, concurrency=32)
            s = time.perf_counter() - t0
        ok = sum(v.status == "identical" for v in verdicts)
        records = sum(v.records for v in verdicts)
        out["replay_requests_per_s"] = len(verdicts) / s
        out["replay_records_per_s"] = records / s
        print(f"  read both logs                 {read_s:8.2f} s")
        print(
            f"  replay --verify                {len(verdicts) / s:8,.0f} requests/s "
            f"{records / s:10,.0f} records/s   ({ok:,}/{len(verdicts):,} identical)"
        )
        originals = await read_results(bootstrap, topics.results, Window())
        t0 = time.perf_counter()
        done = await export(
            logged, originals, SchemaRegistry.load(), "jsonl", tmp / "export", False
        )
        s = time.perf_counter() - t0
        n = sum(d.records for d in done)
        out["export_records_per_s"] = n / s
        print(
            f"  export to JSON Lines           {n / s:8,.0f} records/s   "
            f"({sum(d.status == 'written' for d in done):,} datasets, rebuilt and digest-checked)"
        )
    finally:
        await app.stop()
    return out


def run() -> dict[str, float]:
    print(f"replay and export ({REQUESTS:,} requests of {COUNT} carts, in-process pipeline):")
    fixed = Topics().fixed()
    with (
        tempfile.TemporaryDirectory() as d,
        EmbeddedBroker(
            {t.name: t.partitions for t in fixed},
            topic_configs={t.name: t.configs() for t in fixed},
        ) as broker,
    ):
        return asyncio.run(_measure(broker.bootstrap_servers, Path(d)))


if __name__ == "__main__":
    run()
