"""Attack: a second call reusing a request id that is in progress.

Seen: the second call was refused ALREADY_EXISTS but still replaced the request pinned for
resume; the first caller's resume then returned the second request's records (users
spliced after its carts) with status OK."""

from __future__ import annotations

import json

import grpc
import pytest

from services.proto.testdata.v1 import test_data_pb2 as pb
from tests.support import HANG_GUARD_S

from .conftest import rid


async def test_an_id_in_progress_never_replaces_the_request_a_resume_regenerates(stub):
    request_id = rid("victim")
    first = stub.GenerateDataStream(
        pb.GenerateRequest(request_id=request_id, entity="cart", count=3000),
        timeout=HANG_GUARD_S,
    )
    got = [await first.read()]
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.GenerateDataStream(
            pb.GenerateRequest(request_id=request_id, entity="user", count=3000),
            timeout=HANG_GUARD_S,
        ):
            pass
    assert err.value.code() == grpc.StatusCode.ALREADY_EXISTS
    first.cancel()  # the victim's connection is cut after chunk 0
    rest = [
        c
        async for c in stub.GenerateDataStream(
            pb.GenerateRequest(request_id=request_id),
            metadata=[("resume-from-chunk", "0")],
            timeout=HANG_GUARD_S,
        )
    ]
    records = [r for c in got + rest for r in json.loads(c.data)]
    assert len(records) == 3000
    assert all("cart_id" in r for r in records), {k for r in records for k in r} - {"cart_id"}
