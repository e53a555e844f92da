"""TLS, mutual TLS and JWTs on the gRPC port, with a CA generated for the test.

Seen: gRPC listened with no credentials and in clear. With GRPC_TLS_* the port speaks
only TLS; with a client CA a caller must present a certificate that CA signed, and its
common name is the caller's tenant; a JWT from the configured issuer names a tenant too.
The callers here open their channels as the CLI and the agent client do (kit/channel.py)."""

from __future__ import annotations

import json
import time
import uuid

import grpc
import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from services.app import App
from services.client.channel import call_metadata, open_channel
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.certs import CertificateAuthority
from tests.support import HANG_GUARD_S, make_settings

pytestmark = [pytest.mark.process, pytest.mark.slow]

ISSUER_KEY = ec.generate_private_key(ec.SECP256R1())


def a_jwt(tenant: str, key: ec.EllipticCurvePrivateKey = ISSUER_KEY) -> str:
    claims = {"tenant": tenant, "exp": int(time.time()) + 600, "iss": "https://idp.test"}
    return jwt.encode(claims, key, algorithm="ES256")


@pytest.fixture(scope="module")
async def secure(embedded_broker, tmp_path_factory):
    where = tmp_path_factory.mktemp("tls")
    ca, other_ca = CertificateAuthority(where), CertificateAuthority(where, "another CA")
    server = ca.issue("localhost", server=True)
    issuer = where / "issuer.pem"
    issuer.write_bytes(
        ISSUER_KEY.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    )
    tag = uuid.uuid4().hex[:8]
    settings = make_settings(
        embedded_broker.bootstrap_servers,
        topic_prefix=f"tls{tag}.",
        instance_id=f"tls-{tag}",
        grpc_tls_cert_file=str(server.cert),
        grpc_tls_key_file=str(server.key),
        grpc_tls_client_ca_file=str(ca.pem),
        auth_jwt_public_key_file=str(issuer),
        auth_jwt_issuer="https://idp.test",
    )
    app = await App(settings, embedded_broker.bootstrap_servers).start(
        ["router", "traditional", "bridge"], grpc_port=0
    )
    target = f"localhost:{app.grpc_port}"

    def client(cn: str | None, signer: CertificateAuthority = ca, **extra):
        """A caller's settings as the CLI reads them (GRPC_CLIENT_*)."""
        issued = signer.issue(cn) if cn else None
        return make_settings(
            grpc_client_ca_file=str(ca.pem),
            grpc_client_cert_file=str(issued.cert) if issued else None,
            grpc_client_key_file=str(issued.key) if issued else None,
            **extra,
        )

    yield target, client, other_ca
    await app.stop()


async def one_call(target, settings, request_id=""):
    async with open_channel(target, settings, aio=True) as ch:
        return await pb_grpc.TestDataServiceStub(ch).GenerateData(
            pb.GenerateRequest(entity="user", count=2, request_id=request_id),
            metadata=call_metadata(settings),
            timeout=HANG_GUARD_S,
        )


async def test_a_client_certificate_is_the_callers_identity(secure):
    target, client, _ = secure
    resp = await one_call(target, client("team-a"))
    assert resp.success and len(json.loads(resp.data)) == 2


@pytest.mark.parametrize("who", ["no certificate", "another CA's certificate", "no TLS"])
async def test_without_a_certificate_of_the_ca_there_is_no_connection(secure, who):
    target, client, other_ca = secure
    if who == "no TLS":
        async with grpc.aio.insecure_channel(target) as ch:
            call = pb_grpc.TestDataServiceStub(ch).GenerateData(
                pb.GenerateRequest(entity="user", count=1), timeout=HANG_GUARD_S
            )
            with pytest.raises(grpc.aio.AioRpcError) as err:
                await call
    else:
        settings = client(None) if who == "no certificate" else client("team-a", other_ca)
        with pytest.raises(grpc.aio.AioRpcError) as err:
            await one_call(target, settings)
    assert err.value.code() == grpc.StatusCode.UNAVAILABLE


async def test_a_jwt_names_the_tenant_and_a_forged_one_is_unauthenticated(secure):
    target, client, _ = secure
    ok = await one_call(target, client("team-c", grpc_client_token=a_jwt("team-a")))
    assert ok.success
    forged = a_jwt("team-a", ec.generate_private_key(ec.SECP256R1()))
    with pytest.raises(grpc.aio.AioRpcError) as err:
        await one_call(target, client("team-c", grpc_client_token=forged))
    assert err.value.code() == grpc.StatusCode.UNAUTHENTICATED
    assert "does not verify" in (err.value.details() or "")


async def test_a_stream_is_resumed_by_its_tenant_only(secure):
    """team-a starts by certificate and resumes by JWT (one tenant, two credentials);
    team-b, with a valid certificate of the same CA, is told there is no such stream."""
    target, client, _ = secure
    request_id = f"tls-{uuid.uuid4().hex[:8]}"
    owner, thief = client("team-a"), client("team-b")
    async with open_channel(target, owner, aio=True) as ch:
        first = pb_grpc.TestDataServiceStub(ch).GenerateDataStream(
            pb.GenerateRequest(request_id=request_id, entity="cart", count=3000),
            timeout=HANG_GUARD_S,
        )
        got = [await first.read()]
        first.cancel()

    async def resume(settings):
        async with open_channel(target, settings, aio=True) as ch:
            return [
                c
                async for c in pb_grpc.TestDataServiceStub(ch).GenerateDataStream(
                    pb.GenerateRequest(request_id=request_id),
                    metadata=(*call_metadata(settings), ("resume-from-chunk", "0")),
                    timeout=HANG_GUARD_S,
                )
            ]

    with pytest.raises(grpc.aio.AioRpcError) as err:
        await resume(thief)
    assert err.value.code() == grpc.StatusCode.NOT_FOUND
    rest = await resume(client("someone", grpc_client_token=a_jwt("team-a")))
    assert sum(len(json.loads(c.data)) for c in got + rest) == 3000
