"""Which reply topics a bridge deletes: only those whose owner's lease ran out long ago."""

from __future__ import annotations

from services.bridge.janitor import stale_reply_topics
from services.kit.runtime.control import Cancellations
from services.kit.wire.messages import Control
from services.kit.wire.topics import Topics

NOW = 10_000_000
GRACE = 60_000


def lease(reply_to: str, until_ms: int) -> Control:
    return Control(
        request_id="", action="lease", reply_to=reply_to, since_ms=0, until_ms=until_ms, at_ms=0
    )


def test_only_topics_whose_lease_ran_out_past_the_grace_are_stale():
    topics = Topics("")
    gone, late, live, unknown, own = (
        topics.replies(n) for n in ("gone", "late", "live", "agent", "own")
    )
    leases = Cancellations()
    leases.add(lease(gone, NOW - GRACE - 1))  # killed over a grace ago
    leases.add(lease(late, NOW - GRACE + 1))  # its renewal may still come
    leases.add(lease(live, NOW + 5_000))
    leases.add(lease(own, 0))  # even a stopped lease on our own name: never ours to delete
    listed = [gone, late, live, unknown, own, topics.results, topics.requests, "other"]
    assert stale_reply_topics(listed, own, topics, leases, NOW, GRACE) == [gone]


def test_a_renewed_lease_replaces_the_one_that_ran_out():
    topics = Topics("p.")
    name = topics.replies("b1")
    leases = Cancellations()
    leases.add(lease(name, NOW - 10 * GRACE))
    leases.add(lease(name, NOW + 5_000))  # a bridge of the same instance id came back
    assert stale_reply_topics([name], topics.replies("me"), topics, leases, NOW, GRACE) == []


def test_a_stopped_bridges_topic_is_stale_after_the_grace():
    topics = Topics("")
    name = topics.replies("stopped")
    leases = Cancellations()
    leases.add(lease(name, 0))  # a clean stop releases the lease (until 0)
    assert stale_reply_topics([name], "x", topics, leases, NOW, GRACE) == [name]
