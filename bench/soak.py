"""`make bench soak`: memory under a steady moderate mixed load, services as `make run`
starts them (SOAK_MINUTES, default 30).

Seen on the old broker: +1.56 MB/s of broker memory, linear, in a 5-minute soak. Here the
load runs for the whole period (unary callers of 10-200 records, streams of 2,000-20,000,
some JSON, some CSV and SQL); every process's RSS is read after a warm-up and at the end.
The target: each flat within 10%.
"""

from __future__ import annotations

import asyncio
import os
import random
import time

import grpc

from bench.load import rss
from bench.pipeline import supervised_settings
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from services.supervisor import Supervisor

WARM_UP_S = 60.0
UNARY_CALLERS, STREAM_CALLERS = 6, 2
ENTITIES = ("cart", "order", "user", "product")
FORMATS = (pb.JSON, pb.CSV, pb.SQL)


async def load(stub: pb_grpc.TestDataServiceStub, until: float, counts: dict[str, int]) -> None:
    rng = random.Random(7)

    async def unary() -> None:
        while time.monotonic() < until:
            req = pb.GenerateRequest(
                entity=rng.choice(ENTITIES),
                count=rng.randint(10, 200),
                output_format=rng.choice(FORMATS),
            )
            try:
                await stub.GenerateData(req, timeout=600)
                counts["unary"] += 1
            except grpc.aio.AioRpcError as exc:
                counts[exc.code().name] = counts.get(exc.code().name, 0) + 1

    async def stream() -> None:
        while time.monotonic() < until:
            req = pb.GenerateRequest(entity=rng.choice(ENTITIES), count=rng.randint(2_000, 20_000))
            try:
                async for _ in stub.GenerateDataStream(req, timeout=600):
                    pass
                counts["streams"] += 1
            except grpc.aio.AioRpcError as exc:
                counts[exc.code().name] = counts.get(exc.code().name, 0) + 1

    await asyncio.gather(
        *(unary() for _ in range(UNARY_CALLERS)), *(stream() for _ in range(STREAM_CALLERS))
    )


async def measure(sup: Supervisor, port: int, minutes: float) -> dict[str, float]:
    counts = {"unary": 0, "streams": 0}
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.TestDataServiceStub(ch)
        end = time.monotonic() + WARM_UP_S + minutes * 60
        running = asyncio.ensure_future(load(stub, end, counts))
        await asyncio.sleep(WARM_UP_S)
        start = rss(sup)
        await running
        final = rss(sup)
    print(
        f"  {counts['unary']:,} unary calls, {counts['streams']:,} streams; failures: "
        f"{ {k: v for k, v in counts.items() if k not in ('unary', 'streams')} }"
    )
    worst = 0.0
    for name in start:
        change = (final.get(name, 0) - start[name]) / start[name] if start[name] else 0.0
        worst = max(worst, abs(change))
        print(
            f"  {name:<12} RSS {start[name]:7.0f} MB -> {final.get(name, 0):7.0f} MB  "
            f"({change:+.1%})"
        )
    print(f"  largest change {worst:.1%}   target: every process within 10%")
    return {"soak_worst_rss_change": worst}


def run() -> dict[str, float]:
    minutes = float(os.environ.get("SOAK_MINUTES", "30"))
    settings, env = supervised_settings()
    print(f"soak ({minutes:g} min after a {WARM_UP_S:.0f} s warm-up, {os.cpu_count()} cores):")
    with Supervisor(settings, extra_env=env) as sup:
        return asyncio.run(measure(sup, settings.grpc_port, minutes))


if __name__ == "__main__":
    run()
