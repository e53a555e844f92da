"""Attacks on identity: calling without credentials, and resuming another tenant's stream.

Seen: no credentials anywhere, and anyone who knew a request id could resume that stream
and read its whole dataset. With AUTH_TOKENS_FILE each call has a tenant; without it the
bridge will not serve beyond loopback."""

from __future__ import annotations

import json
import uuid

import grpc
import pytest

from services.app import App
from services.kit.ops.errors import StartupError
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, TOKENS, auth, make_settings, tokens_file

TEAM_A, TEAM_B, TEAM_S = "team-a", "team-b", "team-s"


@pytest.fixture(scope="module")
async def secured(embedded_broker, tmp_path_factory):
    tokens = tokens_file(tmp_path_factory.mktemp("auth"))
    tag = uuid.uuid4().hex[:8]
    settings = make_settings(
        embedded_broker.bootstrap_servers,
        topic_prefix=f"auth{tag}.",
        instance_id=f"auth-{tag}",
        auth_tokens_file=tokens,
    )
    app = await App(settings, embedded_broker.bootstrap_servers).start(
        ["router", "traditional", "bridge"], grpc_port=0
    )
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    yield pb_grpc.TestDataServiceStub(ch)
    await ch.close()
    await app.stop()


@pytest.mark.parametrize(
    "metadata", [(), auth("not-a-known-token-at-all"), (("authorization", TOKENS[TEAM_A]),)]
)
async def test_a_call_without_a_known_token_is_unauthenticated(secured, metadata):
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await secured.GenerateData(
            pb.GenerateRequest(entity="user", count=1), metadata=metadata, timeout=HANG_GUARD_S
        )
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in secured.GenerateDataStream(
            pb.GenerateRequest(entity="user", count=1), metadata=metadata, timeout=HANG_GUARD_S
        ):
            pass
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED


async def test_health_needs_no_token(secured):
    resp = await secured.HealthCheck(pb.HealthCheckRequest(), timeout=HANG_GUARD_S)
    assert resp.status


async def test_another_tenant_cannot_resume_a_stream_its_owner_can(secured):
    request_id = f"victim-{uuid.uuid4().hex[:8]}"
    first = secured.GenerateDataStream(
        pb.GenerateRequest(request_id=request_id, entity="cart", count=3000),
        metadata=auth(TEAM_A),
        timeout=HANG_GUARD_S,
    )
    got = [await first.read()]
    first.cancel()

    def resume(token: str):
        return secured.GenerateDataStream(
            pb.GenerateRequest(request_id=request_id),
            metadata=(*auth(token), ("resume-from-chunk", "0")),
            timeout=HANG_GUARD_S,
        )

    with pytest.raises(grpc.aio.AioRpcError) as err:
        async for _ in resume(TEAM_B):
            pass
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    rest = [c async for c in resume(TEAM_A)]
    assert sum(len(json.loads(c.data)) for c in got + rest) == 3000


async def test_without_authentication_the_bridge_serves_loopback_only(embedded_broker):
    settings = make_settings(
        embedded_broker.bootstrap_servers, topic_prefix="open.", bind_host="0.0.0.0"
    )
    app = App(settings, embedded_broker.bootstrap_servers)
    try:
        with pytest.raises(StartupError, match="without authentication"):
            await app.start(["bridge"], grpc_port=0)
    finally:
        await app.stop()
