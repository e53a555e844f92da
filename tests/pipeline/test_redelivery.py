"""Bounded redeliveries with real process deaths: a request whose generator process is
SIGKILLed during every attempt is dead-lettered after MAX_DELIVERIES (3) attempts and its
caller answered, never started a fourth time.

The generator runs as `testdata service traditional` processes (one at a time, each
killed once its attempt is under way), the router and the bridge in this process, under
their own topic prefix. Each new process learns of the earlier attempts only from the
markers the dead ones wrote to the deliveries topic.
"""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from services.core.models import GenerationPath
from services.core.report import ErrorKind
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S

from .conftest import rid
from .test_scaleout import Member, app_for

PREFIX = "poison."


@pytest.fixture
async def poison_app(embedded_broker):
    app = await app_for(embedded_broker.bootstrap_servers, PREFIX, ["router", "bridge"])
    yield app
    await app.stop()


@pytest.fixture
def members():
    started: list[Member] = []
    yield started
    for m in started:
        m.stop()


async def test_a_request_whose_generator_dies_every_time_is_given_up_after_max_deliveries(
    embedded_broker, poison_app, members, tail, codec
):
    app = poison_app
    channel = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    stub = pb_grpc.TestDataServiceStub(channel)
    request_id = rid("poison")
    group = f"{app.rt.topics.path(GenerationPath.TRADITIONAL)}.generator-traditional"
    seen: list[int] = []
    got_chunk = asyncio.Event()

    async def read() -> grpc.aio.AioRpcError:
        call = stub.GenerateDataStream(
            pb.GenerateRequest(request_id=request_id, entity="cart", count=1_000_000, seed=2),
            timeout=HANG_GUARD_S,
        )
        try:
            async for chunk in call:
                seen.extend(r["_index"] for r in json.loads(chunk.data))
                got_chunk.set()
        except grpc.aio.AioRpcError as exc:
            return exc
        raise AssertionError("a million carts came through; the generator was never killed")

    def markers(recs, group: str = group) -> list[int]:
        return [
            m.attempt
            for m in (codec.decode_delivery(r.value) for r in recs)
            if m.request_id == request_id and m.group == group
        ]

    async with tail(app.rt.topics.deliveries) as deliveries, tail(app.rt.topics.deadletter) as dead:
        reader = asyncio.create_task(read())
        recs: list = []
        for attempt in (1, 2, 3):
            members.append(Member("traditional", embedded_broker.bootstrap_servers, PREFIX))
            recs += await deliveries.until(lambda r, n=attempt: n in markers(r))
            if attempt == 1:  # chunks the caller already has
                await asyncio.wait_for(got_chunk.wait(), HANG_GUARD_S)
            members[-1].kill()  # mid-attempt: the process dies, the group redelivers
        members.append(Member("traditional", embedded_broker.bootstrap_servers, PREFIX))
        err = await asyncio.wait_for(reader, HANG_GUARD_S)
        parked = await dead.until(
            lambda r: any(codec.decode_dead_letter(x.value).request_id == request_id for x in r)
        )
    await channel.close()
    assert err.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, err
    assert "delivered 4 times: 3 attempts were started and none finished" in err.details()
    assert seen == list(range(len(seen))) and seen  # what came, once each and in order
    assert sorted(set(markers(recs))) == [1, 2, 3]  # the fourth delivery was never started
    assert markers(recs, f"{app.rt.topics.requests}.router") == [1]  # the router counts too
    (letter,) = [
        d
        for d in map(codec.decode_dead_letter, (x.value for x in parked))
        if d.request_id == request_id
    ]
    assert letter.error_type == ErrorKind.POISON and letter.consumer == "generator-traditional"
    assert codec.decode_routed(letter.original_value).request.request_id == request_id
