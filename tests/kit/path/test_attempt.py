"""The attempt lease's names and its behaviour without Redis (with Redis:
tests/pipeline/test_redis.py, a redelivered request generated once)."""

from __future__ import annotations

from services.kit.path.attempt import AttemptLease
from services.kit.redis.keystore import KeyStore
from services.kit.runtime.stream import Message


def msg(correlation: bytes | None, offset: int = 7) -> Message:
    headers = (("correlation-id", correlation),) if correlation else ()
    return Message("path.traditional", 0, offset, b"r-1", b"", headers, 0)


def test_an_attempt_is_its_correlation_else_its_position():
    store = KeyStore(None)
    a = AttemptLease(store, "traditional", 60, msg(b"c-1"), "r-1")
    again = AttemptLease(store, "traditional", 60, msg(b"c-1", offset=9), "r-1")
    other = AttemptLease(store, "traditional", 60, msg(b"c-2"), "r-1")
    assert a.lease == again.lease and a.lease != other.lease and a.done != a.lease
    bare = AttemptLease(store, "traditional", 60, msg(None), "r-1")
    assert bare.lease.endswith("@path.traditional:0:7")


async def test_without_redis_every_delivery_runs():
    lease = AttemptLease(KeyStore(None), "traditional", 60, msg(b"c-1"), "r-1")
    assert await lease.claim() and await lease.claim()
    await lease.release()  # nothing to mark: no error
    await lease.hold()  # returns at once without a store
