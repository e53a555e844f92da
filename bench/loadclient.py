"""The small-call load client (`python -m bench.loadclient PORT CALLERS SECONDS`): CALLERS
concurrent 10-cart GenerateData loops on one channel for SECONDS after a short warm-up;
prints one JSON line (calls, calls/s, p50/p99 ms). Its own process, so its CPU is not
counted as the service's."""

from __future__ import annotations

import asyncio
import json
import sys
import time

import grpc

from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc

WARM_UP_S = 2.0


async def drive(port: int, callers: int, seconds: float) -> dict[str, float]:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as channel:
        stub = pb_grpc.TestDataServiceStub(channel)
        lat: list[float] = []
        counting = False
        stop = time.perf_counter() + WARM_UP_S + seconds

        async def caller(k: int) -> None:
            i = 0
            while time.perf_counter() < stop:
                t = time.perf_counter()
                r = await stub.GenerateData(
                    pb.GenerateRequest(entity="cart", count=10, seed=k * 1_000_000 + i),
                    timeout=60,
                )
                if not r.success:
                    raise SystemExit(f"call failed: {r.error}")
                if counting:
                    lat.append((time.perf_counter() - t) * 1000)
                i += 1

        tasks = [asyncio.create_task(caller(k)) for k in range(callers)]
        await asyncio.sleep(WARM_UP_S)
        counting = True
        started = time.perf_counter()
        await asyncio.gather(*tasks)
        wall = time.perf_counter() - started
    lat.sort()
    n = len(lat)
    return {
        "calls": n,
        "calls_per_s": n / wall,
        "p50_ms": lat[n // 2] if n else 0.0,
        "p99_ms": lat[max(0, int(n * 0.99) - 1)] if n else 0.0,
    }


if __name__ == "__main__":
    port, callers, seconds = int(sys.argv[1]), int(sys.argv[2]), float(sys.argv[3])
    print(json.dumps(asyncio.run(drive(port, callers, seconds))))
