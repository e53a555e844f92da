"""Reply topics of bridges that are gone are deleted by the bridges still running.

A bridge deletes its own reply topic when it stops; one that is killed cannot. Seen:
every crash left a topic behind (with its records in broker memory) for good. Each bridge
leases its reply topic through the control topic (kit/control.py), so every running
bridge knows which reply topics' owners stopped renewing: those whose lease ran out more
than `reply_topic_grace_seconds` ago are deleted at the next sweep (every
`reply_topic_sweep_seconds`), by whichever bridge gets there first.

What is never deleted: the results topic, this bridge's own topic, and any reply topic
whose lease was never seen (an agent's own topic, or one whose owner's last lease aged
out of the control topic: a bridge dead for longer than the control retention while no
other bridge ran). A sweep runs only while the control reader is current, so a lease
renewed a moment ago is never judged by an older one.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Iterable

from services.kit.ops import metrics
from services.kit.runtime.control import Cancellations, ControlListener
from services.kit.runtime.kafka import delete_topics
from services.kit.runtime.stream import Runtime
from services.kit.wire.topics import Topics

log = logging.getLogger("testdata.bridge.janitor")


def stale_reply_topics(
    listed: Iterable[str],
    own: str,
    topics: Topics,
    leases: Cancellations,
    now_ms: int,
    grace_ms: int,
) -> list[str]:
    """The reply topics in `listed` whose owner's lease ran out over `grace_ms` ago."""
    stale = []
    for name in sorted(listed):
        if name == own or name == topics.results or not topics.is_reply_topic(name):
            continue
        lease = leases.lease(name)
        if lease is not None and lease.until_ms + grace_ms < now_ms:
            stale.append(name)
    return stale


async def sweep(rt: Runtime, own: str, control: ControlListener) -> list[str]:
    """One sweep: the stale reply topics deleted (none while the reader is behind)."""
    if not await control.control_current():
        return []
    listed = await rt.list_topics()
    if listed is None:
        return []
    grace_ms = int(rt.settings.reply_topic_grace_seconds * 1000)
    now_ms = int(time.time() * 1000)
    stale = stale_reply_topics(listed, own, rt.topics, control.cancellations, now_ms, grace_ms)
    if not stale:
        return []
    if problem := await delete_topics(rt.bootstrap, stale):
        log.warning("reply topics of gone bridges not deleted (%s): %s", problem, stale)
        return []
    log.info("deleted %d reply topic(s) of bridges that are gone: %s", len(stale), stale)
    metrics.REPLY_TOPICS_DELETED.inc(len(stale))
    return stale


async def sweep_forever(rt: Runtime, own: str, control: ControlListener) -> None:
    while True:
        await asyncio.sleep(rt.settings.reply_topic_sweep_seconds)
        try:
            await sweep(rt, own, control)
        except asyncio.CancelledError:
            raise
        except Exception:
            log.warning("sweeping reply topics failed", exc_info=True)
