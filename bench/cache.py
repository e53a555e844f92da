"""Unary GenerateData latency with the use_cache result cache: p50/p90 of hits (the same
request again, answered from Redis without Kafka) against misses (a new seed each call,
generated through router and generator), one caller at a time, in-process on the
embedded broker. Redis: the machine's at 127.0.0.1:6379 under a key prefix of its own,
else a redis-server started for the run."""

from __future__ import annotations

import asyncio
import statistics
import subprocess
import time
import uuid

import grpc

from services.app import SERVICES, App
from services.kit.broker.embedded import EmbeddedBroker
from services.kit.settings import Settings
from services.kit.wire.topics import Topics
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc

CALLS = 200
COUNTS = (10, 1000)


def _redis() -> tuple[str, subprocess.Popen[bytes] | None]:
    import redis

    url = "redis://127.0.0.1:6379/0"
    try:
        redis.Redis.from_url(url, socket_timeout=0.5).ping()
        return url, None
    except (redis.RedisError, OSError):
        import socket

        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        proc = subprocess.Popen(["redis-server", "--port", str(port), "--save", ""])
        time.sleep(0.5)
        return f"redis://127.0.0.1:{port}/0", proc


def _pct(lat: list[float], q: int) -> float:
    return statistics.quantiles(lat, n=100)[q - 1] if len(lat) > 1 else lat[0]


async def _measure(bootstrap: str, url: str) -> None:
    prefix = f"bench-{uuid.uuid4().hex[:8]}:"
    settings = Settings(
        _env_file=None,
        kafka_bootstrap_servers=bootstrap,
        redis_url=url,
        redis_key_prefix=prefix,
        anthropic_api_key=None,
    )
    app = await App(settings, bootstrap).start(list(SERVICES), grpc_port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
            stub = pb_grpc.TestDataServiceStub(ch)
            for count in COUNTS:
                misses: list[float] = []
                hits: list[float] = []
                for i in range(CALLS):
                    req = pb.GenerateRequest(entity="cart", count=count, seed=i, use_cache=True)
                    t0 = time.perf_counter()
                    r = await stub.GenerateData(req, timeout=60)
                    misses.append((time.perf_counter() - t0) * 1000)
                    assert not r.metadata.cache_hit
                hit = pb.GenerateRequest(entity="cart", count=count, seed=0, use_cache=True)
                for _ in range(CALLS):
                    t0 = time.perf_counter()
                    r = await stub.GenerateData(hit, timeout=60)
                    hits.append((time.perf_counter() - t0) * 1000)
                    assert r.metadata.cache_hit
                print(
                    f"  {count:>5} carts  miss p50 {statistics.median(misses):7.1f} ms"
                    f"  p90 {_pct(misses, 90):7.1f}   hit p50 {statistics.median(hits):6.1f} ms"
                    f"  p90 {_pct(hits, 90):6.1f}   ({CALLS} calls each, one at a time)"
                )
    finally:
        await app.stop()
        if app.keystore.client is not None:
            import redis

            r = redis.Redis.from_url(url)
            for key in r.scan_iter(f"{prefix}*"):
                r.delete(key)


def run() -> None:
    print("cache: unary latency, use_cache hits vs misses")
    url, proc = _redis()
    fixed = Topics().fixed()
    try:
        with EmbeddedBroker(
            {t.name: t.partitions for t in fixed},
            topic_configs={t.name: t.configs() for t in fixed},
        ) as broker:
            asyncio.run(_measure(broker.bootstrap_servers, url))
    finally:
        if proc is not None:
            proc.kill()
            proc.wait()


if __name__ == "__main__":
    run()
