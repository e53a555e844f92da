"""End-to-end figures on the embedded broker, with the services as `make run` starts them.

- records/s of a 100,000-cart stream through router, generator and bridge;
- unary GenerateData p50/p99 for 10 carts with 50 concurrent callers;
- first-chunk latency of a 10,000-cart stream;
- the bridge process's peak RSS (VmHWM) while streaming 1,000,000 carts.
"""

from __future__ import annotations

import asyncio
import os
import socket
import statistics
import time

import grpc

from services.kit.settings import Settings
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from services.supervisor import Supervisor


def _port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _vm(pid: int, key: str) -> float:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith(key):
                return int(line.split()[1]) / 1024
    return 0.0


async def _stream(
    stub: pb_grpc.TestDataServiceStub, count: int, seed: int
) -> tuple[float, float, int]:
    """(seconds to the last chunk, seconds to the first, records)."""
    t0 = time.perf_counter()
    first = None
    n = 0
    async for chunk in stub.GenerateDataStream(
        pb.GenerateRequest(entity="cart", count=count, seed=seed), timeout=600
    ):
        if first is None:
            first = time.perf_counter() - t0
        n += chunk.record_count
    return time.perf_counter() - t0, first or 0.0, n


async def _measure(port: int, bridge_pid: int) -> dict[str, float]:
    opts = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
        stub = pb_grpc.TestDataServiceStub(ch)
        for _ in range(5):  # warm-up: connections, pools, JIT-free but cache-warm paths
            await stub.GenerateData(pb.GenerateRequest(entity="cart", count=10))
        await _stream(stub, 20_000, 0)

        total, _, n = await _stream(stub, 100_000, 1)
        rate = n / total
        print(
            f"  100,000-cart stream            {rate:>10,.0f} records/s  ({total:.2f} s)"
            "   target >= 50,000/s"
        )

        firsts = [(await _stream(stub, 10_000, 10 + i))[1] * 1000 for i in range(5)]
        first_ms = statistics.median(firsts)
        print(
            f"  first chunk of 10,000 carts    {first_ms:>10.1f} ms (median of 5)"
            "       target <= 100 ms"
        )

        async def unary(callers: int, calls: int) -> tuple[float, float, float]:
            lat: list[float] = []

            async def caller(k: int) -> None:
                for i in range(calls):
                    t = time.perf_counter()
                    r = await stub.GenerateData(
                        pb.GenerateRequest(entity="cart", count=10, seed=k * 100 + i), timeout=30
                    )
                    assert r.success
                    lat.append((time.perf_counter() - t) * 1000)

            t = time.perf_counter()
            await asyncio.gather(*[caller(k) for k in range(callers)])
            wall = time.perf_counter() - t
            lat.sort()
            return lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1], len(lat) / wall

        for callers, calls in ((1, 100), (10, 100), (50, 40)):
            p50, p99, rate = await unary(callers, calls)
            print(
                f"  unary 10 carts, {callers:>2} caller(s)  p50 {p50:5.1f} ms  p99 {p99:5.1f} ms"
                f"  ({rate:,.0f} calls/s)" + ("   target p99 <= 50 ms" if callers == 50 else "")
            )

        rss_before = _vm(bridge_pid, "VmRSS")
        total, _, n = await _stream(stub, 1_000_000, 2)
        peak = _vm(bridge_pid, "VmHWM")
        print(
            f"  1,000,000-cart stream          {n / total:>10,.0f} records/s  ({total:.1f} s);"
            f" bridge RSS {rss_before:.0f} MB before, peak {peak:.0f} MB   target < 300 MB"
        )
    return {
        "stream_rps": rate,
        "first_chunk_ms": first_ms,
        "unary_p50_ms": p50,
        "unary_p99_ms": p99,
        "bridge_peak_rss_mb": peak,
    }


def supervised_settings() -> tuple[Settings, dict[str, str]]:
    """Settings and environment for services as `make run` starts them, on free ports."""
    settings = Settings(
        _env_file=None,
        grpc_port=_port(),
        http_port=_port(),
        kafka_bootstrap_servers="",
        anthropic_api_key=None,
        kafka_data_dir="",  # each benchmark starts from an empty broker
    )
    env = {
        "GRPC_PORT": str(settings.grpc_port),
        "HTTP_PORT": str(settings.http_port),
        "KAFKA_BOOTSTRAP_SERVERS": "",
        "LOG_LEVEL": "WARNING",
        "ANTHROPIC_API_KEY": "",
        "USE_LOCAL_LLM": "false",
    }
    return settings, env


def run() -> dict[str, float]:
    settings, env = supervised_settings()
    print(f"pipeline (embedded broker, services in separate processes, {os.cpu_count()} cores):")
    with Supervisor(settings, extra_env=env) as sup:
        return asyncio.run(_measure(settings.grpc_port, sup.pid("bridge")))


if __name__ == "__main__":
    run()
