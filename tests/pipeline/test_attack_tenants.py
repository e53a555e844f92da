"""Attacks across tenants past the bridge: ids in flight, the result cache, idempotency
keys, the results log, and agents on Kafka claiming a tenant or a bridge's reply topic.

Seen: tenants stopped at the bridge. A second tenant's call with an id the first had in
flight was refused (ALREADY_EXISTS: it learned the id was in use); the result cache was
shared, so another tenant's identical request was answered with the first one's data;
results copies carried no tenant; and an agent on Kafka could have its request answered
on a bridge's reply topic, with chunks the services signed. Now the bridge vouches for each
request's tenant (kit/tenancy.py), and everything past it uses that tenant."""

from __future__ import annotations

import asyncio
import json
import uuid

import grpc
import pytest

from services.app import App
from services.core.models import GenerateRequest
from services.kit.ops import metrics
from services.kit.wire.headers import TENANT
from services.kit.wire.tenancy import LOCAL
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, auth, eventually, make_settings, tokens_file, wait_until

from .conftest import rid

pytestmark = [pytest.mark.process, pytest.mark.slow]

TEAM_A, TEAM_B, TEAM_S = "team-a", "team-b", "team-s"


@pytest.fixture(scope="module")
async def tenants(embedded_broker, redis_url, tmp_path_factory):
    url, key_prefix = redis_url
    tokens = tokens_file(tmp_path_factory.mktemp("tenants"))
    tag = uuid.uuid4().hex[:8]
    settings = make_settings(
        embedded_broker.bootstrap_servers,
        topic_prefix=f"ten{tag}.",
        instance_id=f"ten-{tag}",
        auth_tokens_file=tokens,
        redis_url=url,
        redis_key_prefix=f"{key_prefix}ten{tag}:",
    )
    app = await App(settings, embedded_broker.bootstrap_servers).start(
        ["router", "traditional", "bridge"], grpc_port=0
    )
    ch = grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}")
    yield app, pb_grpc.TestDataServiceStub(ch)
    await ch.close()
    await app.stop()


async def test_two_tenants_may_use_one_request_id_at_once(tenants):
    _, stub = tenants
    shared = rid("shared")

    async def stream(token: str, entity: str) -> list[dict]:
        req = pb.GenerateRequest(request_id=shared, entity=entity, count=3000)
        call = stub.GenerateDataStream(req, metadata=auth(token), timeout=HANG_GUARD_S)
        return [r async for c in call for r in json.loads(c.data)]

    carts, users = await asyncio.gather(stream(TEAM_A, "cart"), stream(TEAM_B, "user"))
    assert len(carts) == len(users) == 3000
    assert all("items" in c for c in carts) and all("email" in u for u in users)


async def test_another_tenants_cache_entry_is_a_miss(tenants):
    _, stub = tenants
    req = pb.GenerateRequest(entity="user", count=3, seed=77, use_cache=True)
    first = await stub.GenerateData(req, metadata=auth(TEAM_A), timeout=HANG_GUARD_S)
    again = await stub.GenerateData(req, metadata=auth(TEAM_A), timeout=HANG_GUARD_S)
    other = await stub.GenerateData(req, metadata=auth(TEAM_B), timeout=HANG_GUARD_S)
    assert not first.metadata.cache_hit and again.metadata.cache_hit
    assert not other.metadata.cache_hit


async def test_another_tenants_idempotency_key_is_not_theirs(tenants):
    _, stub = tenants
    key = (("idempotency-key", rid("idem")),)
    mine = pb.GenerateRequest(entity="user", count=2, seed=1)
    theirs = pb.GenerateRequest(entity="product", count=2, seed=2)
    a = await stub.GenerateData(mine, metadata=(*auth(TEAM_A), *key), timeout=HANG_GUARD_S)
    b = await stub.GenerateData(theirs, metadata=(*auth(TEAM_B), *key), timeout=HANG_GUARD_S)
    assert a.request_id != b.request_id and "email" not in json.loads(b.data)[0]


async def test_results_copies_carry_the_callers_tenant(tenants, tail):
    app, stub = tenants
    async with tail(app.rt.topics.results) as results:
        resp = await stub.GenerateData(
            pb.GenerateRequest(entity="user", count=2), metadata=auth(TEAM_B), timeout=HANG_GUARD_S
        )
        got = await results.until(lambda rs: any(r.key == resp.request_id.encode() for r in rs))
    mine = [r for r in got if r.key == resp.request_id.encode()]
    assert {dict(r.headers)[TENANT] for r in mine} == {b"team-b"}


async def test_an_agent_cannot_claim_a_tenant(tenants, tail, agent_producer, codec):
    app, _ = tenants
    request_id = rid("claim")
    req = GenerateRequest(request_id=request_id, entity="user", count=2)
    async with tail(app.rt.topics.results) as results:
        await agent_producer.send_and_wait(
            app.rt.topics.requests,
            codec.encode_request(req),
            key=request_id.encode(),
            headers=[("content-type", b"application/avro"), (TENANT, b"team-a")],
        )
        got = await results.until(lambda rs: any(r.key == request_id.encode() for r in rs))
    mine = [r for r in got if r.key == request_id.encode()]
    assert {dict(r.headers)[TENANT] for r in mine} == {LOCAL.encode()}


async def test_an_agent_cannot_be_answered_on_a_bridges_reply_topic(
    tenants, tail, agent_producer, codec
):
    app, _ = tenants
    reply_topic = app.servicer.inbox.topic
    leases = app.control.cancellations
    await wait_until(lambda: leases.lease(reply_topic) is not None, "the bridge's lease seen")
    forged = metrics.FORGED_RECORDS.labels("request")._value.get()
    request_id = rid("hijack")
    req = GenerateRequest(request_id=request_id, entity="user", count=2)
    async with tail(app.rt.topics.deadletter) as dead, tail(reply_topic) as replies:
        await agent_producer.send_and_wait(
            app.rt.topics.requests,
            codec.encode_request(req),
            key=request_id.encode(),
            headers=[
                ("content-type", b"application/avro"),
                ("reply-to", reply_topic.encode()),
                ("correlation-id", b"copied-from-the-requests-topic"),
            ],
        )
        seen: list = []

        async def answered() -> bool:
            for tail_ in (dead, replies):
                for records in (await tail_.consumer.getmany(timeout_ms=100)).values():
                    seen.extend(r for r in records if r.key == request_id.encode())
            return bool(seen)

        await eventually(answered)
    assert [r.topic for r in seen] == [app.rt.topics.deadletter]
    letter = codec.decode_dead_letter(seen[0].value)
    assert "reply-to is a bridge's topic" in letter.reason
    assert metrics.FORGED_RECORDS.labels("request")._value.get() == forged + 1
