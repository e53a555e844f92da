"""Reply topics of bridges that are gone are deleted by a bridge still running.

Seen: every killed bridge left its reply topic behind for good (300 in one test run), with
its records in broker memory. A killed bridge stops renewing its lease; here one is
simulated by a lease that ran out, beside a live lease and a topic with none."""

from __future__ import annotations

import asyncio
import time
import uuid

from services.app import App
from services.bridge.janitor import sweep
from services.kit.runtime.control import publish_lease
from services.kit.runtime.kafka import ensure_topics_exist
from tests.support import eventually, make_settings


async def test_a_running_bridge_deletes_the_reply_topics_of_gone_bridges_only(embedded_broker):
    tag = uuid.uuid4().hex[:8]
    settings = make_settings(
        embedded_broker.bootstrap_servers,
        topic_prefix=f"jan{tag}.",
        instance_id=f"jan-{tag}",
        reply_topic_sweep_seconds=0.2,
        reply_topic_grace_seconds=1,
    )
    app = App(settings, embedded_broker.bootstrap_servers)
    topics, rt = app.rt.topics, app.rt
    gone, live, agents = (topics.replies(f"{n}-{tag}") for n in ("gone", "live", "agent"))
    await rt.start()
    await ensure_topics_exist(rt.bootstrap, {gone: 1, live: 1, agents: 1})
    now = int(time.time() * 1000)
    await publish_lease(rt, gone, now - 60_000, seconds=-30)  # ran out 30 s ago: killed
    await publish_lease(rt, live, now)

    async def renew() -> None:
        while True:
            await asyncio.sleep(0.5)
            await publish_lease(rt, live, now)

    renewing = asyncio.create_task(renew())
    await app.start(["bridge"], grpc_port=0)
    try:

        async def deleted() -> bool:
            listed = await rt.list_topics()
            return listed is not None and gone not in listed

        await eventually(deleted, f"{gone} deleted")
        assert app.control is not None
        assert await sweep(rt, app.servicer.inbox.topic, app.control) == []  # nothing else
        listed = await rt.list_topics()
        assert listed is not None
        assert {live, agents, app.servicer.inbox.topic} <= listed
    finally:
        renewing.cancel()
        await app.stop()
