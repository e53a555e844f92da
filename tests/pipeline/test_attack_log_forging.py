"""Attack: a request id that writes log lines.

Seen: newlines in `request_id` forged log lines. Names a caller gives are printed in
logs, headers and file names: a control character in one is refused with a field error
(and every log message is escaped to one line, tests/kit/ops/test_logs.py)."""

from __future__ import annotations

import grpc
import pytest
from grpc_status import rpc_status

from services.proto.testdata.v1 import test_data_pb2 as pb
from tests.support import HANG_GUARD_S


@pytest.mark.parametrize("bad", ["x\n2026-12-07 INFO forged", "x\r", "x\x1b[2J", "x\u2028y"])
async def test_a_request_id_with_control_characters_is_refused_naming_the_field(stub, bad):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await stub.GenerateData(
            pb.GenerateRequest(request_id=bad, entity="user", count=1), timeout=HANG_GUARD_S
        )
    assert err.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    status = rpc_status.from_call(err.value)
    assert status is not None and any(b"request_id" in d.value for d in status.details)
    assert "printable" in err.value.details()
