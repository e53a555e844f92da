"""Scale-out: two members of one consumer group share a topic's partitions, and when one
is SIGKILLed the other takes over without losing or repeating anything for the caller.

Members run as real processes (`testdata service <name>`) on the session broker, under
their own topic prefix so the session stack's groups stay apart.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import AsyncIterator, Iterator

import grpc
import pytest
from aiokafka.partitioner import DefaultPartitioner

from services.app import App
from services.core.models import GenerationPath
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, SIGNING_KEY, make_settings, output_of, wait_serving

from .test_run import ROOT, free_port

pytestmark = [pytest.mark.process, pytest.mark.slow]  # `testdata service` processes

LAG = re.compile(r'^testdata_consumer_lag\{group="([^"]+)",partition="(\d+)",topic="([^"]+)"\}')


class Member:
    """One `testdata service <name>` process with its own /metrics."""

    def __init__(self, name: str, bootstrap: str, prefix: str):
        self.name = name
        self.port = free_port()
        env = {
            **os.environ,
            "KAFKA_BOOTSTRAP_SERVERS": bootstrap,
            "TOPIC_PREFIX": prefix,
            "ANTHROPIC_API_KEY": "",
            "USE_LOCAL_LLM": "false",
            "LOG_LEVEL": "WARNING",
            "CHUNK_SIGNING_KEY": SIGNING_KEY,  # the in-process bridge's
        }
        env.pop("PROMETHEUS_MULTIPROC_DIR", None)
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "services.cli", "service", name, "--http-port", str(self.port)],
            cwd=ROOT,
            env=env,
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )

    def wait_ready(self) -> None:
        what = f"`testdata service {self.name}` (pid {self.proc.pid})"
        wait_serving(self.ready, self.proc, what, lambda: output_of(self.log))

    def ready(self) -> bool:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/health/ready", timeout=1):
                return True
        except OSError:
            return False

    def partitions(self, topic: str) -> set[int]:
        """Partitions of `topic` this member has consumed from (its lag gauges)."""
        with urllib.request.urlopen(
            f"http://127.0.0.1:{self.port}/metrics", timeout=HANG_GUARD_S
        ) as r:
            text = r.read().decode()
        return {
            int(m.group(2))
            for line in text.splitlines()
            if (m := LAG.match(line)) and m.group(3) == topic
        }

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(HANG_GUARD_S)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


@pytest.fixture
def members(embedded_broker) -> Iterator[list[Member]]:
    started: list[Member] = []
    yield started
    for m in started:
        m.stop()


async def app_for(bootstrap: str, prefix: str, names: list[str]) -> App:
    settings = make_settings(bootstrap, topic_prefix=prefix, instance_id=prefix.strip("."))
    return await App(settings, bootstrap).start(names, grpc_port=0)


@pytest.fixture
async def channel_to() -> AsyncIterator:
    opened: list[grpc.aio.Channel] = []

    def make(app: App) -> pb_grpc.TestDataServiceStub:
        ch = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
        opened.append(ch)
        return pb_grpc.TestDataServiceStub(ch)

    yield make
    for ch in opened:
        await ch.close()


def ids_on_every_partition(partitions: int, prefix: str) -> list[str]:
    """One request id per partition, by Kafka's default partitioner."""
    part = DefaultPartitioner()
    every = list(range(partitions))
    found: dict[int, str] = {}
    i = 0
    while len(found) < partitions:
        candidate = f"{prefix}-{i}"
        found.setdefault(part(candidate.encode(), every, every), candidate)
        i += 1
    return [found[p] for p in every]


async def spread(stub: pb_grpc.TestDataServiceStub, partitions: int = 12) -> None:
    """One small request on every partition (request ids pick the partition)."""
    for request_id in ids_on_every_partition(partitions, f"spread-{time.time_ns()}"):
        resp = await stub.GenerateData(
            pb.GenerateRequest(request_id=request_id, entity="user", count=2), timeout=HANG_GUARD_S
        )
        assert resp.success, resp.error


@contextlib.asynccontextmanager
async def two_of(service, embedded_broker, members, channel_to):
    """The other services in process, two `service` members as processes; yields a stub on
    the bridge and the partitions of the service's topic each member took,
    after one small request on every partition."""
    bootstrap = embedded_broker.bootstrap_servers
    prefix = f"scale-{service}."
    others = [s for s in ("router", "traditional", "bridge") if s != service]
    app = await app_for(bootstrap, prefix, others)
    try:
        members += [Member(service, bootstrap, prefix) for _ in range(2)]
        for m in members:
            m.wait_ready()
        stub = channel_to(app)
        topic = (
            app.rt.topics.requests
            if service == "router"
            else app.rt.topics.path(GenerationPath(service))
        )
        await spread(stub)
        owned = [m.partitions(topic) for m in members]
        assert all(owned) and not owned[0] & owned[1], owned  # both got partitions
        yield stub, topic, owned
    finally:
        await app.stop()


async def test_two_generators_share_partitions_and_survive_a_kill(
    embedded_broker, members, channel_to
):
    async with two_of("traditional", embedded_broker, members, channel_to) as (stub, _, _):
        count = 200_000
        call = stub.GenerateDataStream(
            pb.GenerateRequest(entity="cart", count=count, seed=9), timeout=HANG_GUARD_S
        )
        seen: list[int] = []
        killed = None
        async for chunk in call:
            seen.extend(r["_index"] for r in json.loads(chunk.data))
            if killed is None and len(seen) >= 20_000:
                chunks = [_chunks(m) for m in members]
                killed = members[0] if chunks[0] > chunks[1] else members[1]
                killed.kill()
        assert seen == list(range(count))  # every record once, whoever generated it
        survivor = next(m for m in members if m is not killed)
        assert _chunks(survivor) > 0


async def test_two_routers_share_partitions_and_survive_a_kill(
    embedded_broker, members, channel_to
):
    async with two_of("router", embedded_broker, members, channel_to) as (stub, topic, owned):
        members[0].kill()
        await spread(stub)  # every partition is served again, by the survivor
        assert members[1].partitions(topic) >= owned[0] | owned[1]


def _chunks(m: Member) -> float:
    with urllib.request.urlopen(f"http://127.0.0.1:{m.port}/metrics", timeout=HANG_GUARD_S) as r:
        text = r.read().decode()
    for line in text.splitlines():
        if line.startswith('testdata_chunks_published_total{path="traditional"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
