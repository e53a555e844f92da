"""Against a real Kafka (KRaft) in a container: the same checks as on the embedded broker,
where behaviour could differ (real brokers enforce replication and session-timeout limits).

- `testdata topics create` creates every catalogue topic with its partitions and configs;
- a generator consumer group with two members splits the path topic's partitions and
  still answers every request.

Needs a Docker engine; skipped with the reason where there is none.
"""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from services.app import App
from services.cli import _topics_create
from services.kit.topics import Topics
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import make_settings


def _docker_reason() -> str | None:
    try:
        import docker

        docker.from_env(timeout=3).ping()
    except Exception as exc:  # noqa: BLE001 - any failure means: no engine to use
        return (
            f"no Docker engine reachable ({type(exc).__name__}); testcontainers cannot "
            "start a real Kafka here. The embedded broker covers everything else."
        )
    return None


REASON = _docker_reason()
pytestmark = [pytest.mark.docker, pytest.mark.skipif(REASON is not None, reason=REASON or "")]


@pytest.fixture(scope="module")
def kafka():
    from testcontainers.kafka import KafkaContainer

    with KafkaContainer("confluentinc/cp-kafka:7.6.0").with_kraft() as container:
        yield container.get_bootstrap_server()


async def test_topics_create_applies_the_catalogue(kafka):
    from aiokafka.admin import AIOKafkaAdminClient
    from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType

    settings = make_settings(kafka, topic_prefix="tc.")
    specs = Topics("tc.").fixed()
    # a single-broker cluster cannot hold replication 3: create with what it has
    lines = await _topics_create(settings, replication=1)
    assert all(line.endswith("created") for line in lines), lines
    again = await _topics_create(settings, replication=1)
    assert all(line.endswith("exists") for line in again)
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka)
    await admin.start()
    try:
        described = await admin.describe_topics([t.name for t in specs])
        parts = {d["topic"]: len(d["partitions"]) for d in described}
        assert parts == {t.name: t.partitions for t in specs}
        configs = await admin.describe_configs(
            [ConfigResource(ConfigResourceType.TOPIC, Topics("tc.").requests)]
        )
        values = {c[0]: c[1] for c in configs[0].resources[0][4]}
        assert values["retention.ms"] == "-1"
    finally:
        await admin.close()


async def test_generator_group_with_two_members(kafka):
    settings = make_settings(kafka, topic_prefix="tc2.", instance_id="tc-bridge")
    front = App(settings, kafka)
    await front.start(["router", "bridge"], grpc_port=0)
    gens = [App(settings, kafka), App(settings, kafka)]
    for g in gens:
        await g.start(["traditional"])
    try:
        await asyncio.sleep(5)  # let the group settle on two members
        owned = [set(g.subscribers[0]._consumer.assignment()) for g in gens]
        assert all(owned) and not (owned[0] & owned[1])
        async with grpc.aio.insecure_channel(f"127.0.0.1:{front.grpc_port}") as ch:
            stub = pb_grpc.TestDataServiceStub(ch)
            resps = await asyncio.gather(
                *[
                    stub.GenerateData(
                        pb.GenerateRequest(entity="cart", count=3, seed=i), timeout=60
                    )
                    for i in range(40)
                ]
            )
        assert all(r.success and len(json.loads(r.data)) == 3 for r in resps)
        # both members did work: each saw requests on partitions of its own
        assert all(len(g.subscribers[0]._parts) > 0 for g in gens)
    finally:
        for g in gens:
            await g.stop()
        await front.stop()
