"""Attack: resuming a stream from a chunk past its end.

Seen: it generated the whole request again and answered OK with nothing. Now it is
OUT_OF_RANGE, naming the field, before any work when the index exceeds any stream of
that size, else as soon as the final chunk shows the stream is shorter."""

from __future__ import annotations

import grpc
import pytest
from grpc_status import rpc_status

from services.proto.testdata.v1 import test_data_pb2 as pb
from tests.support import HANG_GUARD_S

from .conftest import rid


async def _resume(stub, request_id: str, k: int) -> grpc.aio.AioRpcError:
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in stub.GenerateDataStream(
            pb.GenerateRequest(request_id=request_id),
            metadata=[("resume-from-chunk", str(k))],
            timeout=HANG_GUARD_S,
        ):
            pass
    return err.value


@pytest.mark.parametrize("k", [2, 1_000_000])
async def test_a_resume_past_the_end_is_out_of_range(stub, k):
    request_id = rid("past")
    whole = [
        c
        async for c in stub.GenerateDataStream(
            pb.GenerateRequest(request_id=request_id, entity="user", count=5),
            timeout=HANG_GUARD_S,
        )
    ]
    assert len(whole) == 1  # one chunk: index 0
    err = await _resume(stub, request_id, k)
    assert err.code() == grpc.StatusCode.OUT_OF_RANGE, err.details()
    assert "past the end" in err.details()
    status = rpc_status.from_call(err)
    assert status is not None and any(b"resume-from-chunk" in d.value for d in status.details)
