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
from services.bridge.status import retry_delay
from services.kit.broker.embedded import EmbeddedBroker
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, make_settings, wait_until

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


async def test_calls_in_flight_when_the_broker_dies_fail_fast_with_a_retry_hint():
    """Seen: after SIGKILL of the broker, calls in flight hung until their deadline, and
    forever without one (10 of 10 still open after 90 s). They now fail with UNAVAILABLE
    and a RetryInfo once the broker refuses connections twice in a row, and a new call
    fails at once; stopping the bridge then still ends."""
    with EmbeddedBroker() as broker:
        bootstrap = broker.bootstrap_servers
        settings = make_settings(bootstrap, broker_check_seconds=0.2)
        app = await App(settings, bootstrap).start(["bridge"], grpc_port=0)  # nobody answers
        stopped = False
        try:
            async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as channel:
                stub = pb_grpc.TestDataServiceStub(channel)
                req = pb.GenerateRequest(entity="cart", count=3)
                calls = [asyncio.ensure_future(stub.GenerateData(req)) for _ in range(5)]
                stream = stub.GenerateDataStream(req)  # no deadline: only the bridge ends them
                reading = asyncio.ensure_future(stream.read())
                inbox = app.servicer.inbox
                await wait_until(lambda: len(inbox.pending) == 6, "six calls in flight")
                assert broker.pid is not None
                os.kill(broker.pid, signal.SIGKILL)
                done = await asyncio.wait_for(
                    asyncio.gather(*calls, reading, return_exceptions=True), HANG_GUARD_S
                )
                for outcome in done:
                    assert isinstance(outcome, grpc.aio.AioRpcError), outcome
                    assert outcome.code() == grpc.StatusCode.UNAVAILABLE
                    assert "broker is unreachable" in outcome.details()
                    assert retry_delay(outcome) == 5.0
                with pytest.raises(grpc.aio.AioRpcError) as new:
                    await stub.GenerateData(req)
                assert new.value.code() == grpc.StatusCode.UNAVAILABLE
            await asyncio.wait_for(app.stop(), HANG_GUARD_S)
            stopped = True
        finally:
            if not stopped:
                await app.stop()
