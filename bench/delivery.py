"""Delivery figures, with the services as `make run` starts them (one run, one sitting):

- unary 10-cart p50/p99 idle, then while a 300,000-cart stream runs (target: within 2x);
- first-chunk latency spread across 20 concurrent 50,000-cart streams (target: all <= 1 s);
- generator CPU seconds spent after a 1,000,000-cart stream is abandoned (target < 1 s);
- the embedded broker's memory after 2,000,000 carts went through it.
"""

from __future__ import annotations

import asyncio
import os
import signal
import threading
import time

import grpc

from bench.pipeline import _vm, supervised_settings
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from services.supervisor import Supervisor

TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


async def _unary_p(stub: pb_grpc.TestDataServiceStub, calls: int = 100) -> tuple[float, float]:
    lat = []
    for i in range(calls):
        t = time.perf_counter()
        r = await stub.GenerateData(pb.GenerateRequest(entity="cart", count=10, seed=i), timeout=60)
        assert r.success
        lat.append((time.perf_counter() - t) * 1000)
        await asyncio.sleep(0.01)
    lat.sort()
    return lat[len(lat) // 2], lat[int(len(lat) * 0.99) - 1]


async def _drain(call: grpc.aio.UnaryStreamCall) -> int:
    n = 0
    async for chunk in call:
        n += chunk.record_count
    return n


async def _first_chunk(stub: pb_grpc.TestDataServiceStub, seed: int) -> float:
    t0 = time.perf_counter()
    call = stub.GenerateDataStream(
        pb.GenerateRequest(entity="cart", count=50_000, seed=seed), timeout=600
    )
    first = None
    async for _ in call:
        if first is None:
            first = time.perf_counter() - t0
    return first or 0.0


async def _measure(port: int, sup: Supervisor) -> dict[str, float]:
    opts = [("grpc.max_receive_message_length", 64 * 1024 * 1024)]
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}", options=opts) as ch:
        stub = pb_grpc.TestDataServiceStub(ch)
        for _ in range(5):
            await stub.GenerateData(pb.GenerateRequest(entity="cart", count=10))

        idle50, idle99 = await _unary_p(stub)
        big = asyncio.ensure_future(
            _drain(stub.GenerateDataStream(pb.GenerateRequest(entity="cart", count=300_000)))
        )
        await asyncio.sleep(0.5)
        busy50, busy99 = await _unary_p(stub)
        busy_done = big.done()
        await big
        print(
            f"  unary 10 carts idle             p50 {idle50:6.1f} ms  p99 {idle99:6.1f} ms\n"
            f"  same, during a 300k stream      p50 {busy50:6.1f} ms  p99 {busy99:6.1f} ms"
            f"  ({busy99 / idle99:.1f}x idle p99; target <= 2x)"
            + ("  [stream ended before the calls did]" if busy_done else "")
        )

        firsts = sorted(await asyncio.gather(*(_first_chunk(stub, 100 + i) for i in range(20))))
        print(
            f"  20 concurrent 50k streams       first chunk min {firsts[0] * 1000:.0f} ms,"
            f" median {firsts[10] * 1000:.0f} ms, max {firsts[-1] * 1000:.0f} ms"
            "   target max <= 1000 ms"
        )

        gen = sup.pid("traditional")
        call = stub.GenerateDataStream(
            pb.GenerateRequest(entity="cart", count=1_000_000, seed=7), timeout=600
        )
        await call.read()
        cpu0 = cpu_seconds(gen)
        call.cancel()
        await asyncio.sleep(5)
        after = cpu_seconds(gen) - cpu0
        print(
            f"  1M-cart stream abandoned        generator CPU after cancel {after:.2f} s"
            "   target < 1 s (all of it: ~15 s)"
        )

        broker_pid = sup.broker.pid if sup.broker is not None else os.getpid()
        rss0 = _vm(broker_pid, "VmRSS")
        n = sum(
            await asyncio.gather(
                *(
                    _drain(
                        stub.GenerateDataStream(
                            pb.GenerateRequest(entity="cart", count=1_000_000, seed=20 + i),
                            timeout=900,
                        )
                    )
                    for i in range(2)
                )
            )
        )
        rss1 = _vm(broker_pid, "VmRSS")
        print(
            f"  broker RSS                      {rss0:.0f} MB, after {n:,} more carts {rss1:.0f} MB"
        )
    recovery = _bridge_recovery(port, sup)
    print(
        f"  bridge SIGKILLed                first successful call after {recovery:.1f} s"
        "   target <= 10 s"
    )
    return {
        "bridge_recovery_s": recovery,
        "unary_idle_p99_ms": idle99,
        "unary_busy_p99_ms": busy99,
        "first_chunk_max_ms": firsts[-1] * 1000,
        "abandoned_cpu_s": after,
        "broker_rss_mb": rss1,
    }


def _bridge_recovery(port: int, sup: Supervisor) -> float:
    """Seconds from SIGKILL of the bridge until a new GenerateData succeeds."""
    os.kill(sup.pid("bridge"), signal.SIGKILL)
    t0 = time.monotonic()
    while time.monotonic() - t0 < 120:
        try:
            with grpc.insecure_channel(f"127.0.0.1:{port}") as ch:
                stub = pb_grpc.TestDataServiceStub(ch)
                if stub.GenerateData(pb.GenerateRequest(entity="cart", count=5), timeout=2).success:
                    return time.monotonic() - t0
        except grpc.RpcError:
            time.sleep(0.1)
    return float("inf")


def run() -> dict[str, float]:
    settings, env = supervised_settings()
    print(f"delivery (embedded broker, services in separate processes, {os.cpu_count()} cores):")
    with Supervisor(settings, extra_env=env) as sup:
        stop = threading.Event()
        watcher = threading.Thread(target=sup.watch, args=(stop.is_set, 0.1), daemon=True)
        watcher.start()  # restarts the bridge killed at the end, as `make run` does
        try:
            return asyncio.run(_measure(settings.grpc_port, sup))
        finally:
            stop.set()
            watcher.join(5)


if __name__ == "__main__":
    run()
