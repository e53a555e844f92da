"""Export of 1,000,000 records: throughput, and peak memory of the export process.

50 traditional requests of 20,000 carts are delivered twice through the in-process
pipeline on an embedded broker: to the Python client (on its own reply topic, so the
results log holds each dataset's final chunk only: export rebuilds them), and to an
agent reading the results topic itself (every chunk is on the log: export reads them
back). Then `testdata export` runs in a child process, which reports its own VmHWM (peak
resident memory): the rebuilt datasets to JSON Lines files, the kept ones to one
combined JSON file and to one Parquet file.

    python -m bench export
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from services.app import SERVICES, App
from services.client import KafkaTestDataClient
from services.core.models import GenerateRequest
from services.kit.broker.embedded import EmbeddedBroker
from services.kit.runtime.kafka import assign_all, make_consumer, make_producer
from services.kit.settings import Settings
from services.kit.wire.codec import get_codec
from services.kit.wire.headers import AVRO, CONTENT_TYPE
from services.kit.wire.topics import Topics

REQUESTS = 50
COUNT = 20_000
ENTITY = "cart"

# The child: `testdata export`, then its time and peak resident memory on stderr.
CHILD = """
import sys, time
from services.cli import main
t0 = time.perf_counter()
code = main(sys.argv[1:])
took = time.perf_counter() - t0
hwm = next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM"))
print(f"BENCH {code} {took:.3f} {hwm}", file=sys.stderr)
"""


def _request(kind: str, i: int) -> GenerateRequest:
    return GenerateRequest(
        request_id=f"bench-{kind}-{i}", entity=ENTITY, count=COUNT, seed=i, hints=["no_learn"]
    )


async def _record(bootstrap: str, tmp: Path) -> None:
    """Both sets of datasets: delivered to a client, and to an agent on the results topic."""
    settings = Settings(
        _env_file=None,
        kafka_bootstrap_servers=bootstrap,
        anthropic_api_key=None,
        pattern_store_path=str(tmp / "patterns.sqlite"),
    )
    topics = Topics()
    app = await App(settings, bootstrap).start(list(SERVICES), grpc_port=0)
    try:
        t0 = time.perf_counter()
        async with KafkaTestDataClient(bootstrap, timeout_s=600) as client:
            gate = asyncio.Semaphore(4)

            async def one(i: int) -> None:
                async with gate:
                    async for _ in client.stream(_request("rebuilt", i)):
                        pass

            await asyncio.gather(*(one(i) for i in range(REQUESTS)))
        took = time.perf_counter() - t0
        print(f"  delivered {REQUESTS * COUNT:,} records to a client  {took:7.1f} s")
        t0 = time.perf_counter()
        codec = get_codec()
        consumer = make_consumer(bootstrap, None)
        producer = make_producer(bootstrap)
        await consumer.start()
        await producer.start()
        try:
            await assign_all(consumer, topics.results, at_end=True)
            for i in range(REQUESTS):
                req = _request("kept", i)
                await producer.send_and_wait(
                    topics.requests,
                    codec.encode_request(req),
                    key=req.request_id.encode(),
                    headers=[(CONTENT_TYPE, AVRO.encode())],
                )
            finals: set[str] = set()
            while len(finals) < REQUESTS:
                batch = await consumer.getmany(timeout_ms=1000)
                for records in batch.values():
                    for r in records:
                        chunk = codec.decode_chunk(r.value or b"")
                        if chunk.is_final and chunk.request_id.startswith("bench-kept-"):
                            assert chunk.success, chunk.error
                            finals.add(chunk.request_id)
        finally:
            await producer.stop()
            await consumer.stop()
        took = time.perf_counter() - t0
        print(f"  delivered {REQUESTS * COUNT:,} records to an agent   {took:7.1f} s")
    finally:
        await app.stop()


def _export(bootstrap: str, kind: str, out: Path, *options: str) -> dict[str, float]:
    picks = [a for i in range(REQUESTS) for a in ("--request-id", f"bench-{kind}-{i}")]
    argv = [sys.executable, "-c", CHILD, "export", "--quiet", "--out", str(out), *options, *picks]
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": bootstrap}
    done = subprocess.run(argv, env=env, capture_output=True, text=True, check=False)
    line = next((ln for ln in done.stderr.splitlines() if ln.startswith("BENCH ")), "")
    if not line or line.split()[1] != "0":
        raise RuntimeError(f"export failed: {done.stdout[-2000:]} {done.stderr[-2000:]}")
    _, _, took, hwm_kb = line.split()
    size = sum(f.stat().st_size for f in out.rglob("*")) if out.is_dir() else out.stat().st_size
    return {"seconds": float(took), "peak_rss_mb": int(hwm_kb) / 1024, "mb_written": size / 1e6}


def run() -> dict[str, float]:
    n = REQUESTS * COUNT
    print(f"export ({REQUESTS} datasets of {COUNT:,} {ENTITY}s = {n:,} records, embedded broker):")
    fixed = Topics().fixed()
    out: dict[str, float] = {}
    with (
        tempfile.TemporaryDirectory() as d,
        EmbeddedBroker(
            {t.name: t.partitions for t in fixed},
            topic_configs={t.name: t.configs() for t in fixed},
        ) as broker,
    ):
        tmp = Path(d)
        asyncio.run(_record(broker.bootstrap_servers, tmp))
        runs = (
            ("rebuilt -> JSON Lines files", "rebuilt", tmp / "rebuilt", ("--format", "jsonl")),
            (
                "kept -> one JSON file",
                "kept",
                tmp / "kept.json",
                ("--format", "json", "--combined"),
            ),
            (
                "kept -> one Parquet file",
                "kept",
                tmp / "kept.parquet",
                ("--format", "parquet", "--combined"),
            ),
        )
        for label, kind, path, options in runs:
            m = _export(broker.bootstrap_servers, kind, path, *options)
            key = label.split(" ->")[0] + "_" + options[1]
            out[f"{key}_records_per_s"] = n / m["seconds"]
            out[f"{key}_peak_rss_mb"] = m["peak_rss_mb"]
            print(
                f"  {label:<30} {m['seconds']:7.1f} s {n / m['seconds']:9,.0f} records/s   "
                f"peak RSS {m['peak_rss_mb']:6.0f} MB   ({m['mb_written']:,.0f} MB written)"
            )
    return out


if __name__ == "__main__":
    run()
