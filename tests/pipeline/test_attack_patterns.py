"""Attack: seeding the patterns another tenant's RAG requests receive.

Seen: any caller could, by having a dataset learned, put records into what other callers'
learn_from_history requests were varied from. A learned pattern is now its tenant's
(the outcome carries the tenant the bridge vouched for); retrieval finds a tenant's own
and the shared ones only, unless an operator shares a tenant's (PATTERNS_SHARED_TENANTS).
"""

from __future__ import annotations

import uuid

import grpc
import pytest

from services.app import SERVICES, App
from services.core.models import GenerateRequest
from services.patterns.scope import scope_of
from services.patterns.store import Collection
from services.proto.testdata.v1 import test_data_pb2 as pb
from services.proto.testdata.v1 import test_data_pb2_grpc as pb_grpc
from tests.support import HANG_GUARD_S, auth, make_settings, tokens_file

from .test_learning import eventually, has, learner_of, traditional

pytestmark = [pytest.mark.process, pytest.mark.slow]

TEAM_A, TEAM_B, TEAM_S = "team-a", "team-b", "team-s"


@pytest.fixture(scope="module")
async def tenants(embedded_broker, tmp_path_factory):
    tokens = tokens_file(tmp_path_factory.mktemp("patterns"))
    tag = uuid.uuid4().hex[:8]
    settings = make_settings(
        embedded_broker.bootstrap_servers,
        topic_prefix=f"pat{tag}.",
        instance_id=f"pat-{tag}",
        auth_tokens_file=tokens,
        learn_paths=["traditional"],  # learn the fast path's datasets too
        patterns_shared_tenants=["team-s"],
        pattern_store_refresh_seconds=0.2,
    )
    app = await App(settings, embedded_broker.bootstrap_servers).start(SERVICES, grpc_port=0)
    async with grpc.aio.insecure_channel(f"127.0.0.1:{app.grpc_port}") as ch:
        yield app, pb_grpc.TestDataServiceStub(ch)
    await app.stop()


async def learned_by(app, stub, token: str, domain: str) -> str:
    served = await stub.GenerateData(
        traditional(domain, 11), metadata=auth(token), timeout=HANG_GUARD_S
    )
    assert served.success
    await eventually(lambda: has(app, domain, 1))
    (pattern,) = await learner_of(app).store.list_patterns(Collection.PATTERNS, domain=domain)
    scope = scope_of(GenerateRequest(domain=domain, entity="cart"), app.registry.get("cart"))
    await eventually(lambda: app.pattern_gap(scope) is None)  # the router's cached counts
    return pattern.id


async def from_history(stub, token: str, domain: str) -> pb.GenerateResponse:
    later = pb.GenerateRequest(
        domain=domain, entity="cart", count=8, seed=5, learn_from_history=True
    )
    return await stub.GenerateData(later, metadata=auth(token), timeout=HANG_GUARD_S)


async def test_a_tenants_learned_pattern_is_never_another_tenants_example(tenants):
    app, stub = tenants
    learned = await learned_by(app, stub, TEAM_A, "tenancy")
    (pattern,) = await learner_of(app).store.get(Collection.PATTERNS, [learned])
    assert pattern.tenant == "team-a"
    theirs = await from_history(stub, TEAM_B, "tenancy")
    assert theirs.success and learned not in theirs.metadata.pattern_ids
    mine = await from_history(stub, TEAM_A, "tenancy")
    assert mine.metadata.generation_path == "rag" and list(mine.metadata.pattern_ids) == [learned]


async def test_an_operator_shared_tenants_patterns_serve_everyone(tenants):
    app, stub = tenants
    learned = await learned_by(app, stub, TEAM_S, "shared")
    (pattern,) = await learner_of(app).store.get(Collection.PATTERNS, [learned])
    assert pattern.tenant == ""
    theirs = await from_history(stub, TEAM_B, "shared")
    assert theirs.metadata.generation_path == "rag"
    assert list(theirs.metadata.pattern_ids) == [learned]
