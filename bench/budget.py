"""Costly requests and their neighbours, with the services as `make run` starts them:

- 3-record requests (one every 0.5 s) while a custom schema of 2,000 STRING fields x 500
  records streams: how long the small ones wait (generation slices sized by time);
- the same with 10,000 fields under a 20 s GENERATION_BUDGET_SECONDS: the big request is
  stopped with RESOURCE_EXHAUSTED, the small ones keep being served;
- a delivery marker's cost (testdata_delivery_marker_seconds) over 100 10-cart requests
  one at a time, before the costly ones (then it would mostly measure their slices).
"""

from __future__ import annotations

import asyncio
import os
import re
import time
import urllib.request

import grpc

from bench.pipeline import supervised_settings
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from services.supervisor import Supervisor

BUDGET_S = 20


def _custom(fields: int, count: int) -> pb.GenerateRequest:
    string = pb.FieldType.Value("STRING")
    return pb.GenerateRequest(
        count=count,
        seed=1,
        schema=pb.Schema(fields=[pb.Field(name=f"f{i}", type=string) for i in range(fields)]),
    )


async def _neighbours(stub: pb_grpc.TestDataServiceStub, fields: int, count: int) -> str:
    """Stream a costly request; meanwhile time 3-record requests. One line of figures."""
    t0 = time.perf_counter()
    outcome: list[str] = []

    async def big() -> None:
        n = 0
        try:
            async for chunk in stub.GenerateDataStream(_custom(fields, count), timeout=120):
                n += chunk.record_count
            outcome.append(f"done, {n} records in {time.perf_counter() - t0:.1f} s")
        except grpc.aio.AioRpcError as exc:
            outcome.append(f"{exc.code().name} after {n} records, {time.perf_counter() - t0:.1f} s")

    task = asyncio.create_task(big())
    lat: list[float] = []
    while not task.done():
        t = time.perf_counter()
        await stub.GenerateData(pb.GenerateRequest(entity="user", count=3), timeout=120)
        lat.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(0.5)
    await task
    lat.sort()
    return (
        f"3-record requests meanwhile: p50 {lat[len(lat) // 2]:6.0f} ms, max {lat[-1]:6.0f} ms"
        f" ({len(lat)}); the big one: {outcome[0]}"
    )


def _marker_ms(http_port: int) -> str:
    """Mean time to write a delivery marker, per consumer, from the worker's /metrics."""
    with urllib.request.urlopen(f"http://127.0.0.1:{http_port}/metrics", timeout=5) as r:
        text = r.read().decode()
    sums = dict(
        re.findall(r'testdata_delivery_marker_seconds_sum\{consumer="([^"]+)"\} (\S+)', text)
    )
    counts = dict(
        re.findall(r'testdata_delivery_marker_seconds_count\{consumer="([^"]+)"\} (\S+)', text)
    )
    return ", ".join(
        f"{c} {float(sums[c]) / float(n) * 1000:.2f} ms mean of {float(n):.0f}"
        for c, n in sorted(counts.items())
        if float(n)
    )


async def _measure(port: int, http_port: int) -> None:
    async with grpc.aio.insecure_channel(
        f"127.0.0.1:{port}", options=[("grpc.max_receive_message_length", 256 * 1024 * 1024)]
    ) as ch:
        stub = pb_grpc.TestDataServiceStub(ch)
        for i in range(100):
            await stub.GenerateData(pb.GenerateRequest(entity="cart", count=10, seed=i), timeout=30)
        print(f"  delivery marker write           {_marker_ms(http_port)}")
        print(f"  2,000 fields x 500 records      {await _neighbours(stub, 2000, 500)}")
        print(f"  10,000 fields, {BUDGET_S} s budget     {await _neighbours(stub, 10_000, 1000)}")


def run() -> None:
    settings, env = supervised_settings()
    env["GENERATION_BUDGET_SECONDS"] = str(BUDGET_S)
    print(f"budget (embedded broker, services in separate processes, {os.cpu_count()} cores):")
    with Supervisor(settings, extra_env=env):
        asyncio.run(_measure(settings.grpc_port, settings.http_port))


if __name__ == "__main__":
    run()
