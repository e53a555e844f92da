"""Load figures, services as `make run` starts them (the issue "under load and faults"):

- 40 concurrent 50,000-cart streams: how many succeed (all must), records/s, wall time;
- 200 concurrent unary callers (10 carts, 10 calls each): p50/p99 against one idle
  caller's in the same run, calls refused with RESOURCE_EXHAUSTED (OVERLOADED) and retried
  after their RetryInfo delay, as a client's retry policy does;
- RSS of every process before and after.
"""

from __future__ import annotations

import asyncio
import collections
import os
import time

import grpc

from bench.pipeline import _vm, supervised_settings
from services.bridge.status import retry_delay
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from services.supervisor import Supervisor

STREAMS, STREAM_RECORDS = 40, 50_000
RESOURCE_EXHAUSTED = grpc.StatusCode.RESOURCE_EXHAUSTED
CALLERS, CALLS = 200, 10


async def streams(stub: pb_grpc.TestDataServiceStub) -> dict[str, float]:
    codes: collections.Counter[str] = collections.Counter()
    records = 0

    async def one(seed: int) -> None:
        nonlocal records
        req = pb.GenerateRequest(entity="cart", count=STREAM_RECORDS, seed=seed)
        n = 0
        try:
            async for chunk in stub.GenerateDataStream(req, timeout=3600):
                n += chunk.record_count
            codes["OK" if n == STREAM_RECORDS else "SHORT"] += 1
        except grpc.aio.AioRpcError as exc:
            codes[exc.code().name] += 1
            print(f"    stream {seed} failed: {exc.code().name} {exc.details()}")
        records += n

    t = time.perf_counter()
    await asyncio.gather(*(one(s) for s in range(STREAMS)))
    wall = time.perf_counter() - t
    print(
        f"  {STREAMS} concurrent {STREAM_RECORDS:,}-cart streams: {codes['OK']} succeeded "
        f"({dict(codes)}), {records / wall:,.0f} records/s, {wall:.0f} s"
    )
    return {"streams_ok": codes["OK"], "streams_rps": records / wall}


async def unary(stub: pb_grpc.TestDataServiceStub, callers: int, calls: int) -> dict[str, float]:
    latencies: list[float] = []
    refused = failed = 0

    async def caller(k: int) -> None:
        nonlocal refused, failed
        for i in range(calls):
            req = pb.GenerateRequest(entity="cart", count=10, seed=k * 1000 + i)
            t = time.perf_counter()
            while True:
                try:
                    await stub.GenerateData(req, timeout=600)
                    break
                except grpc.aio.AioRpcError as exc:
                    delay = retry_delay(exc) if exc.code() == RESOURCE_EXHAUSTED else None
                    if delay is None:
                        failed += 1
                        break
                    refused += 1
                    await asyncio.sleep(delay)
            latencies.append((time.perf_counter() - t) * 1000)

    t = time.perf_counter()
    await asyncio.gather(*(caller(k) for k in range(callers)))
    wall = time.perf_counter() - t
    latencies.sort()
    p50, p99 = latencies[len(latencies) // 2], latencies[max(0, int(len(latencies) * 0.99) - 1)]
    return {
        "p50": p50,
        "p99": p99,
        "rate": len(latencies) / wall,
        "refused": refused,
        "failed": failed,
    }


def rss(sup: Supervisor) -> dict[str, float]:
    pids = {name: sup.pid(name) for name in sup.services}
    if sup.broker is not None and sup.broker.pid is not None:
        pids["kafka"] = sup.broker.pid
    return {name: _vm(pid, "VmRSS") for name, pid in pids.items() if pid}


async def measure(sup: Supervisor, port: int) -> dict[str, float]:
    opts = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
        stub = pb_grpc.TestDataServiceStub(ch)
        for _ in range(5):
            await stub.GenerateData(pb.GenerateRequest(entity="cart", count=10))
        before = rss(sup)
        idle = await unary(stub, 1, 100)
        busy = await unary(stub, CALLERS, CALLS)
        print(
            f"  unary 10 carts, 1 caller         p50 {idle['p50']:6.1f} ms  p99 "
            f"{idle['p99']:6.1f} ms"
        )
        print(
            f"  unary 10 carts, {CALLERS} callers     p50 {busy['p50']:6.1f} ms  p99 "
            f"{busy['p99']:6.1f} ms ({busy['p99'] / idle['p99']:.1f}x idle), "
            f"{busy['rate']:,.0f} calls/s, {busy['refused']:.0f} refused and retried, "
            f"{busy['failed']:.0f} failed"
        )
        out = await streams(stub)
        after = rss(sup)
        print(
            "  RSS MB before -> after: "
            + ", ".join(f"{n} {before[n]:.0f}->{after.get(n, 0):.0f}" for n in before)
        )
    return {**out, "unary_p99_ms": busy["p99"], "unary_idle_p99_ms": idle["p99"]}


def run() -> dict[str, float]:
    settings, env = supervised_settings()
    print(f"load (embedded broker, services in separate processes, {os.cpu_count()} cores):")
    with Supervisor(settings, extra_env=env) as sup:
        return asyncio.run(measure(sup, settings.grpc_port))


if __name__ == "__main__":
    run()
