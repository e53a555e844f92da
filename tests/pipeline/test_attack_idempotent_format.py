"""Attack (or mistake): an idempotent retry asking for another format.

Seen: a retry with the same idempotency key asking for CSV got the first call's JSON
body. The key now covers the format: the retry is refused as a different request."""

from __future__ import annotations

import grpc
import pytest

from services.proto.testdata.v1 import test_data_pb2 as pb
from tests.support import HANG_GUARD_S

from .conftest import rid


async def test_an_idempotent_retry_in_another_format_never_gets_the_first_body(stub):
    key = (("idempotency-key", rid("fmt")),)
    req = pb.GenerateRequest(entity="user", count=4, seed=1)
    first = await stub.GenerateData(req, metadata=key, timeout=HANG_GUARD_S)
    assert first.data.lstrip().startswith("[")
    as_csv = pb.GenerateRequest(entity="user", count=4, seed=1, output_format=pb.CSV)
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GenerateData(as_csv, metadata=key, timeout=HANG_GUARD_S)
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "different request" in err.value.details()
    again = await stub.GenerateData(req, metadata=key, timeout=HANG_GUARD_S)
    assert again == first
