"""The embedded broker, measured as `make run` uses it (issue: a real Kafka under make run).

- start-up: the broker alone, on a new data directory and again on the same one;
- its idle CPU and memory with every service running and no traffic;
- one hop: produce one record, a consumer waiting in a fetch receives it;
- sustained: 50 callers of 10-cart GenerateData for BENCH_SUSTAINED_S seconds (600 by
  default; 0 skips it), calls/s and the broker's RSS per minute: flat means the broker's
  cost does not grow with what it has served.

Unary at 1/10/50 callers and the 100,000-record stream are in the `pipeline` section.
The script talks to the broker and services only through their public surfaces, so the
same file can measure an older checkout in the same sitting (that is how the figures in
docs/benchmarks.md compare the old broker with this one).
"""

from __future__ import annotations

import asyncio
import os
import tempfile
import time

import grpc
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from bench.delivery import cpu_seconds
from bench.pipeline import _vm, supervised_settings
from services.kit.broker.embedded import EmbeddedBroker
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from services.supervisor import Supervisor

SUSTAINED_S = int(os.environ.get("BENCH_SUSTAINED_S", "600"))


def _startup() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # an older checkout's broker may have no data directory: then both starts are new
        keeps_data = "data_dir" in EmbeddedBroker.__init__.__code__.co_varnames
        kwargs = {"data_dir": tmp} if keeps_data else {}
        times = []
        for _ in range(2):
            t = time.perf_counter()
            broker = EmbeddedBroker(**kwargs).start()
            times.append(time.perf_counter() - t)
            broker.stop()
    print(f"  broker start-up: new data {times[0]:.2f} s, restart {times[1]:.2f} s")


async def _hop(bootstrap: str, n: int = 200) -> tuple[float, float]:
    topic = f"bench-hop-{os.getpid()}"
    producer = AIOKafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, fetch_max_wait_ms=50)
    await producer.start()
    await consumer.start()
    try:
        await producer.send_and_wait(topic, b"warm", partition=0)
        tp = TopicPartition(topic, 0)
        consumer.assign([tp])
        await consumer.seek_to_end(tp)
        await consumer.position(tp)
        lat = []
        for _ in range(n):
            t = time.perf_counter()
            await producer.send_and_wait(topic, b"x", partition=0)
            while not (await consumer.getmany(tp, timeout_ms=1000)).get(tp):
                pass
            lat.append((time.perf_counter() - t) * 1000)
    finally:
        await consumer.stop()
        await producer.stop()
    lat.sort()
    return lat[n // 2], lat[int(n * 0.99) - 1]


async def _sustained(port: int, broker_pid: int, seconds: int) -> None:
    async with grpc.aio.insecure_channel(f"127.0.0.1:{port}") as ch:
        stub = pb_grpc.TestDataServiceStub(ch)
        done = 0
        stop_at = time.monotonic() + seconds

        async def caller(k: int) -> None:
            nonlocal done
            i = 0
            while time.monotonic() < stop_at:
                r = await stub.GenerateData(
                    pb.GenerateRequest(entity="cart", count=10, seed=k * 1_000_000 + i),
                    timeout=60,
                )
                assert r.success, r.error
                done += 1
                i += 1

        callers = [asyncio.create_task(caller(k)) for k in range(50)]
        rates = []
        minute = 0
        while time.monotonic() < stop_at:
            before, t0 = done, time.monotonic()
            await asyncio.sleep(min(60.0, max(0.0, stop_at - t0)))
            minute += 1
            rate = (done - before) / (time.monotonic() - t0)
            rates.append(rate)
            print(
                f"    minute {minute:>2}: {rate:6.0f} calls/s, {done:>7,} served,"
                f" broker RSS {_vm(broker_pid, 'VmRSS'):.0f} MB",
                flush=True,
            )
        await asyncio.gather(*callers)
        if len(rates) >= 2:
            print(f"  sustained: last minute / first minute = {rates[-1] / rates[0]:.2f}")


def run() -> None:
    print("broker (embedded, as make run starts it):")
    _startup()
    os.environ.update({"JOURNAL_DIR": "", "KAFKA_DATA_DIR": ""})  # an empty broker each run
    settings, env = supervised_settings()
    with Supervisor(settings, extra_env=env) as sup:
        assert sup.broker is not None and sup.broker.pid is not None
        pid = sup.broker.pid
        time.sleep(5)  # let start-up work settle
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        time.sleep(20)
        idle = (cpu_seconds(pid) - cpu0) / (time.monotonic() - t0)
        print(f"  broker idle: {idle:.3f} CPU s/s, RSS {_vm(pid, 'VmRSS'):.0f} MB")
        p50, p99 = asyncio.run(_hop(sup.bootstrap))
        print(f"  one hop (produce -> waiting consumer): p50 {p50:.1f} ms, p99 {p99:.1f} ms")
        if SUSTAINED_S > 0:
            print(f"  sustained, 50 callers x 10 carts for {SUSTAINED_S} s:")
            asyncio.run(_sustained(settings.grpc_port, pid, SUSTAINED_S))


if __name__ == "__main__":
    run()
