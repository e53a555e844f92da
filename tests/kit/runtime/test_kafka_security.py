"""Joining a secured cluster: the client options the settings make, and a SASL/PLAIN
listener on the embedded broker that the whole pipeline goes through.

Seen: the Kafka clients had no TLS or SASL settings to pass on, so the service could not
join a secured cluster at all."""

from __future__ import annotations

import asyncio
import ssl
import subprocess
import uuid
from pathlib import Path

import grpc
import pytest
from aiokafka.errors import KafkaError
from pydantic import ValidationError

from services.app import App
from services.kit.broker.embedded import EmbeddedBroker
from services.kit.runtime.kafka import (
    FileToken,
    ensure_topics_exist,
    make_consumer,
    make_producer,
    security_options,
    use_security,
)
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.pipeline.test_run import free_port
from tests.support import HANG_GUARD_S, make_settings


def test_plaintext_adds_nothing_and_sasl_passes_its_credentials():
    assert security_options(make_settings()) == {}
    opts = security_options(
        make_settings(
            kafka_security_protocol="SASL_PLAINTEXT",
            kafka_sasl_mechanism="SCRAM-SHA-512",
            kafka_sasl_username="alice",
            kafka_sasl_password="s3cret",
        )
    )
    assert opts == {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-512",
        "sasl_plain_username": "alice",
        "sasl_plain_password": "s3cret",
    }


@pytest.mark.parametrize(
    "over",
    [
        {"kafka_security_protocol": "SASL_SSL"},  # no credentials
        {"kafka_security_protocol": "SASL_PLAINTEXT", "kafka_sasl_username": "a"},
        {"kafka_security_protocol": "SASL_SSL", "kafka_sasl_mechanism": "OAUTHBEARER"},
        {"kafka_ssl_keyfile": "/k.pem"},  # a key without its certificate
    ],
)
def test_incomplete_security_settings_are_refused_at_start(over):
    with pytest.raises(ValidationError):
        make_settings(**over)


async def test_oauthbearer_reads_the_token_file_at_every_authentication(tmp_path: Path):
    token = tmp_path / "token"
    token.write_text("first\n")
    opts = security_options(
        make_settings(
            kafka_security_protocol="SASL_SSL",
            kafka_sasl_mechanism="OAUTHBEARER",
            kafka_sasl_oauth_token_file=str(token),
        )
    )
    provider = opts["sasl_oauth_token_provider"]
    assert isinstance(provider, FileToken) and await provider.token() == "first"
    token.write_text("renewed")
    assert await provider.token() == "renewed"
    assert isinstance(opts["ssl_context"], ssl.SSLContext)


async def test_tls_files_make_a_context_that_trusts_the_given_ca_and_presents_the_client_cert(
    tmp_path: Path,
):
    key, cert = tmp_path / "key.pem", tmp_path / "cert.pem"
    new_ca = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1"]
    subprocess.run(
        [*new_ca, "-subj", "/CN=testdata-ca", "-keyout", str(key), "-out", str(cert)],
        check=True,
        capture_output=True,
    )
    settings = make_settings(
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=str(cert),
        kafka_ssl_certfile=str(cert),
        kafka_ssl_keyfile=str(key),
    )
    ctx = security_options(settings)["ssl_context"]
    assert [c["subject"] for c in ctx.get_ca_certs()] == [((("commonName", "testdata-ca"),),)]
    bootstrap = use_security(f"tls-{uuid.uuid4().hex[:6]}:9093", settings)
    producer, consumer = make_producer(bootstrap), make_consumer(bootstrap, None)
    for client in (producer.client, consumer._client):
        assert client._security_protocol == "SSL"
        assert client._ssl_context.get_ca_certs() == ctx.get_ca_certs()


# ---- a SASL/PLAIN listener -------------------------------------------------------------
JAAS = 'org.apache.kafka.common.security.plain.PlainLoginModule required user_alice="alice-secret";'


@pytest.fixture(scope="module")
def sasl_broker():
    port = free_port()
    broker = EmbeddedBroker(
        extra_listeners={"SASL": ("SASL_PLAINTEXT", port)},
        server_overrides={
            "sasl.enabled.mechanisms": "PLAIN",
            "listener.name.sasl.plain.sasl.jaas.config": JAAS,
        },
    )
    broker.start()
    yield broker, f"127.0.0.1:{port}"
    broker.stop()


def sasl_settings(bootstrap: str, password: str = "alice-secret", **over):
    return make_settings(
        bootstrap,
        kafka_security_protocol="SASL_PLAINTEXT",
        kafka_sasl_mechanism="PLAIN",
        kafka_sasl_username="alice",
        kafka_sasl_password=password,
        **over,
    )


@pytest.mark.process
@pytest.mark.slow
async def test_the_pipeline_runs_through_a_sasl_listener_and_wrong_credentials_are_refused(
    sasl_broker,
):
    _, sasl = sasl_broker
    wrong = sasl_settings(sasl, password="guessed")
    use_security(sasl, wrong)
    with pytest.raises(KafkaError):
        await asyncio.wait_for(ensure_topics_exist(sasl, {"nope": 1}), HANG_GUARD_S)

    settings = sasl_settings(sasl, topic_prefix="sasl.", instance_id="sasl")
    app = App(settings, sasl)  # registers the right credentials for this address
    await app.start(["router", "traditional", "bridge"], grpc_port=0)
    try:
        async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
            resp = await pb_grpc.TestDataServiceStub(ch).GenerateData(
                pb.GenerateRequest(entity="user", count=3), timeout=HANG_GUARD_S
            )
        assert resp.success and resp.record_count == 3
    finally:
        await app.stop()
