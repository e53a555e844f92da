"""The agent client over both transports, against the running pipeline."""

from __future__ import annotations

import asyncio
import json
import os
import sys
from pathlib import Path

import pytest

from services.client import GenerationFailed, GrpcTestDataClient, KafkaTestDataClient
from services.core.models import GenerateRequest, OutputFormat
from tests.support import HANG_GUARD_S

ROOT = Path(__file__).resolve().parents[2]


async def test_kafka_and_grpc_give_the_same_dataset(stack, settings):
    req = GenerateRequest(entity="order", count=300, seed=4, anchor="2026-01-01T00:00:00Z")
    async with KafkaTestDataClient(
        settings.kafka_bootstrap_servers, topic_prefix=settings.topic_prefix, timeout_s=HANG_GUARD_S
    ) as kc:
        via_kafka = await kc.generate(req)
        streamed = [
            c async for c in kc.stream(req.model_copy(update={"output_format": OutputFormat.CSV}))
        ]
    async with GrpcTestDataClient(f"127.0.0.1:{stack.grpc_port}", timeout_s=HANG_GUARD_S) as gc:
        via_grpc = await gc.generate(req)
    assert via_kafka.records == via_grpc.records and len(via_kafka.records) == 300
    assert via_kafka.metadata.seed == via_grpc.metadata.seed == 4
    assert via_kafka.metadata.data_sha256 == via_grpc.metadata.data_sha256
    assert [c.chunk_index for c in streamed] == list(range(len(streamed)))
    assert streamed[-1].is_final and streamed[0].data.startswith("_index,")


async def test_a_bad_request_raises_with_field_details_on_both_transports(stack, settings):
    bad = GenerateRequest(
        entity="cart",
        count=5,
        constraints={"field_constraints": {"items.quantity": {"min": 9, "max": 2}}},
    )
    async with KafkaTestDataClient(
        settings.kafka_bootstrap_servers, topic_prefix=settings.topic_prefix, timeout_s=HANG_GUARD_S
    ) as kc:
        with pytest.raises(GenerationFailed) as k:
            await kc.generate(bad)
    async with GrpcTestDataClient(f"127.0.0.1:{stack.grpc_port}", timeout_s=HANG_GUARD_S) as gc:
        with pytest.raises(GenerationFailed) as g:
            await gc.generate(bad)
    assert k.value.kind == "invalid_request" and k.value.details
    assert any("items.quantity" in d.path for d in k.value.details)
    assert any("items.quantity" in d.path for d in g.value.details)


async def test_duplicates_are_dropped_and_order_restored(stack, settings):
    async with KafkaTestDataClient(
        settings.kafka_bootstrap_servers, topic_prefix=settings.topic_prefix, timeout_s=HANG_GUARD_S
    ) as kc:
        rid = await kc.publish(GenerateRequest(entity="user", count=2000, seed=9))
        # the same request again under the same id: a redelivery, chunk for chunk
        await kc._producer.send_and_wait(
            kc.topics.requests,
            kc.codec.encode_request(
                GenerateRequest(request_id=rid, entity="user", count=2000, seed=9)
            ),
            key=rid.encode(),
            headers=[("content-type", b"application/avro"), ("reply-to", kc.reply_topic.encode())],
        )
        chunks = [c async for c in kc.chunks(rid)]
    assert [c.chunk_index for c in chunks] == list(range(len(chunks)))
    assert sum(c.record_count for c in chunks) == 2000


async def test_a_request_with_no_answer_times_out(settings):
    async with KafkaTestDataClient(
        settings.kafka_bootstrap_servers, topic_prefix=settings.topic_prefix, timeout_s=1.0
    ) as kc:
        with pytest.raises(GenerationFailed) as e:
            async for _ in kc.chunks("nobody-asked-for-this"):
                pass
    assert e.value.kind == "timeout"


async def test_the_plain_aiokafka_example_runs(stack, settings):
    env = {**os.environ, "KAFKA_BOOTSTRAP_SERVERS": settings.kafka_bootstrap_servers}
    env["PYTHONPATH"] = str(ROOT)
    # asyncio's subprocess: the services under test share this event loop
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        str(ROOT / "examples" / "aiokafka_agent.py"),
        env=env,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), HANG_GUARD_S)
    assert proc.returncode == 0, err.decode()
    records = json.loads(out)
    assert len(records) == 5 and all(r["_scenario"] == "default" for r in records)
