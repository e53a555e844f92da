"""Cluster behaviour on the session's broker, which is Apache Kafka itself (these ran only
with a Docker engine before the embedded broker was real Kafka):

- `testdata topics create` creates every catalogue topic with its partitions and configs
  (retention, size limits, compaction of the control and deliveries topics);
- a generator consumer group with two members splits the path topic's partitions and
  still answers every request.
"""

from __future__ import annotations

import asyncio
import json

import grpc
import pytest

from services.app import App
from services.cli import _topics_create
from services.kit.wire.topics import Topics
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, make_settings, wait_until


@pytest.fixture(scope="module")
def kafka(embedded_broker):
    return embedded_broker.bootstrap_servers


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
        for spec in specs:  # every catalogue setting is what the broker applies
            [resp] = await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, spec.name)]
            )
            applied = {c[0]: c[1] for c in resp.resources[0][4]}
            assert spec.configs().items() <= applied.items(), spec.name
        assert "compact" in applied_policy(
            await admin.describe_configs(
                [ConfigResource(ConfigResourceType.TOPIC, Topics("tc.").control)]
            )
        )
    finally:
        await admin.close()


def applied_policy(described: list) -> str:
    return {c[0]: c[1] for c in described[0].resources[0][4]}["cleanup.policy"]


async def test_generator_group_with_two_members(kafka):
    settings = make_settings(kafka, topic_prefix="tc2.", instance_id="tc-bridge")
    front = App(settings, kafka)
    await front.start(["router", "bridge"], grpc_port=0)
    gens = [App(settings, kafka), App(settings, kafka)]
    for g in gens:
        await g.start(["traditional"])
    try:

        def settled() -> bool:  # the group shares the partitions between its two members
            owned = [set(g.subscribers[0]._consumer.assignment()) for g in gens]
            return all(owned) and not (owned[0] & owned[1])

        await wait_until(settled, "the group settling on two members")
        async with grpc.aio.insecure_channel(f"127.0.0.1:{front.grpc_port}") as ch:
            stub = pb_grpc.TestDataServiceStub(ch)
            resps = await asyncio.gather(
                *[
                    stub.GenerateData(
                        pb.GenerateRequest(entity="cart", count=3, seed=i), timeout=HANG_GUARD_S
                    )
                    for i in range(40)
                ]
            )
        assert all(r.success and len(json.loads(r.data)) == 3 for r in resps)

        # both members did work: each committed progress on partitions of its own
        async def progressed(g: App) -> bool:
            consumer = g.subscribers[0]._consumer
            return any([(await consumer.committed(tp) or 0) > 0 for tp in consumer.assignment()])

        async with asyncio.timeout(HANG_GUARD_S):
            while not all([await progressed(g) for g in gens]):
                await asyncio.sleep(0.2)
    finally:
        for g in gens:
            await g.stop()
        await front.stop()
