"""A broker that is slow to acknowledge a request (a loaded machine) is waited for; one
that is gone is reported as UNAVAILABLE (test_hostile.py). Seen under load: `testdata
generate` failed with "the broker did not accept the request (no acknowledgement in
time)" after a fixed 10 s.

The broker is one of the test's own, frozen with SIGSTOP (the kernel still accepts its
connections, as a starved broker's) and then let go."""

from __future__ import annotations

import asyncio
import os
import signal

import grpc
import pytest

from services.app import App
from services.kit.broker import EmbeddedBroker
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, make_settings

pytestmark = [pytest.mark.process, pytest.mark.slow]  # a broker of its own

PUBLISH_TIMEOUT = 0.5


async def test_a_frozen_broker_is_waited_for():
    """(A broker that refuses the request is UNAVAILABLE: tests/pipeline/test_hostile.py.)"""
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        settings = make_settings(bootstrap, publish_timeout_seconds=PUBLISH_TIMEOUT)
        app = await App(settings, bootstrap).start(["router", "traditional", "bridge"], grpc_port=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                stub = pb_grpc.TestDataServiceStub(channel)
                req = pb.GenerateRequest(entity="cart", count=3, seed=1)
                assert (await stub.GenerateData(req)).success  # warm: metadata, connections
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGSTOP)
                try:
                    call = asyncio.ensure_future(stub.GenerateData(req))
                    # frozen for 6 publish timeouts: the call waits instead of failing
                    await asyncio.sleep(6 * PUBLISH_TIMEOUT)
                    assert not call.done(), call.exception()
                finally:
                    os.kill(broker.pid, signal.SIGCONT)
                resp = await call
                assert resp.success and resp.record_count == 3
        finally:
            await app.stop()


async def test_a_full_producer_buffer_waits_instead_of_failing_the_stream():
    """Seen under load: 27 of 40 concurrent 50,000-cart streams failed with INTERNAL
    "KafkaTimeoutError": a generator's send waited `request_timeout_ms` for room in the
    producer's buffer and took that as fatal. Here the broker freezes mid-stream for several
    of those timeouts; the stream must slow down and then finish whole."""
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        settings = make_settings(
            bootstrap,
            publish_timeout_seconds=PUBLISH_TIMEOUT,
            kafka_request_timeout_ms=1000,
            # the freeze must not evict the group members (the broker's clock runs on)
            kafka_session_timeout_ms=60_000,
            kafka_heartbeat_interval_ms=3_000,
        )
        app = await App(settings, bootstrap).start(["router", "traditional", "bridge"], grpc_port=0)
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                stub = pb_grpc.TestDataServiceStub(channel)
                call = stub.GenerateDataStream(
                    pb.GenerateRequest(entity="cart", count=30_000), timeout=HANG_GUARD_S
                )
                first = await call.read()
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGSTOP)
                try:
                    await asyncio.sleep(5.0)  # five request timeouts
                finally:
                    os.kill(broker.pid, signal.SIGCONT)
                chunks = [first]
                while (chunk := await call.read()) is not grpc.aio.EOF:
                    chunks.append(chunk)
                assert await call.code() == grpc.StatusCode.OK, await call.details()
                assert sum(c.record_count for c in chunks) == 30_000
                assert chunks[-1].is_final
        finally:
            await app.stop()
