"""Per-partition bookkeeping for a consumer: key-level ordering, commits, backpressure, lag.

Pure state, no asyncio, no aiokafka, no I/O (as aiokafka's own `SubscriptionState`), so
the rules are unit-tested without a broker and the Subscriber only drives it.

Why key-level ordering (Confluent's parallel consumer calls it that): processing a whole
partition one message at a time makes a 5-record request wait behind a 300k-record one
that happens to share its partition. Only messages with the same key need their order
kept (a key is one conversation), so within a partition messages of different keys run
concurrently, up to `max_in_flight`, and those of one key run one at a time, oldest first.
A key of None is one more key: None-key messages are ordered among themselves.

Why commits lag behind concurrent work: Kafka stores one offset per partition, meaning
"everything below is done". So the committable position is the lowest unfinished offset
(or the last finished + 1 when nothing is unfinished); messages finished above it are
processed again after a crash (at-least-once, as before).

Offsets must be given in increasing order (a partition delivers them so); an offset at or
below one already given raises ValueError. After a seek or a rebalance, drop the state
(`Assignment.revoke`) and start a new one: redelivery is the broker's concern.
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Hashable, ItemsView, Iterable, Mapping
from typing import Generic, TypeVar

T = TypeVar("T")
P = TypeVar("P", bound=Hashable)


class Progress:
    """Whether a partition's processed position moves while records wait behind it.

    Seen: a router stuck on one partition showed healthy and ready. `observe` is fed the
    position and lag (every poll); `stalled_for` is how long the position has stood
    still while the lag was above zero (0 when nothing waits). No clock of its own."""

    def __init__(self) -> None:
        self.position: int | None = None
        self.lag = 0
        self.since = 0.0

    def observe(self, position: int | None, lag: int, now: float) -> None:
        if position != self.position or lag == 0 or self.lag == 0:
            self.since = now
        self.position, self.lag = position, lag

    def stalled_for(self, now: float) -> float:
        return now - self.since if self.lag else 0.0


class PartitionState(Generic[T]):
    """One partition's messages from fetch to commit; `T` is whatever the driver runs.

    A message is *queued* when added, *in flight* once `take_ready` handed it out, and
    forgotten once `finish`ed. `paused` turns on when `buffered` (queued + in flight)
    reaches `max_buffered` and off when it falls to half of it or below; the hysteresis
    keeps the consumer from flapping pause/resume on every message.
    """

    def __init__(self, max_in_flight: int = 16, max_buffered: int = 64) -> None:
        if max_in_flight < 1 or max_buffered < 1:
            raise ValueError("max_in_flight and max_buffered must be at least 1")
        self.max_in_flight = max_in_flight
        self.max_buffered = max_buffered
        self.paused = False
        self._items: dict[int, tuple[bytes | None, T]] = {}  # unfinished: queued or in flight
        self._keys: dict[bytes | None, deque[int]] = {}  # unfinished offsets per key, oldest first
        self._ready: list[int] = []  # heap: the oldest offset of each key with none in flight
        self._running: set[int] = set()
        self._last: int | None = None  # highest offset added
        self._floor: int | None = None  # position known committed (or fetched from)
        self._closed = False

    def add(self, offset: int, key: bytes | None, item: T) -> None:
        """A fetched message. Raises ValueError unless `offset` is above all given before."""
        if self._closed:
            raise RuntimeError("partition state was closed")
        if self._last is not None and offset <= self._last:
            raise ValueError(f"offset {offset} is not after {self._last}")
        if self._floor is None:
            # The fetch started here: nothing below it is ours to commit.
            self._floor = offset
        self._last = offset
        self._items[offset] = (key, item)
        q = self._keys.get(key)
        if q is None:
            self._keys[key] = deque((offset,))
            heapq.heappush(self._ready, offset)
        else:
            q.append(offset)
        if len(self._items) >= self.max_buffered:
            self.paused = True

    def take_ready(self) -> list[tuple[int, T]]:
        """The messages that may start now, oldest first (the oldest holds the commit
        back); they count as in flight until `finish`ed."""
        out: list[tuple[int, T]] = []
        while self._ready and len(self._running) < self.max_in_flight:
            offset = heapq.heappop(self._ready)
            self._running.add(offset)
            out.append((offset, self._items[offset][1]))
        return out

    def finish(self, offset: int) -> None:
        """The handler of an in-flight message returned (or it was dead-lettered); the
        key's next message becomes ready. Ignored once closed, so a task outliving its
        revoked partition does no harm; otherwise an offset not in flight raises."""
        if self._closed:
            return
        if offset not in self._running:
            raise ValueError(f"offset {offset} is not in flight")
        self._running.remove(offset)
        key, _ = self._items.pop(offset)
        q = self._keys[key]
        q.popleft()
        if q:
            heapq.heappush(self._ready, q[0])
        else:
            del self._keys[key]
        if self.paused and len(self._items) <= self.max_buffered // 2:
            self.paused = False

    def held_back(self, offset: int) -> bool:
        """An earlier message of this partition is unfinished: `offset` cannot be committed
        when it finishes (a crash then delivers it again)."""
        return any(q[0] < offset for q in self._keys.values())

    @property
    def position(self) -> int | None:
        """Next offset to commit: every offset below it is finished (None before any
        message). A min over keys, each a deque in offset order, so memory stays bounded
        by `buffered` however far finished work runs ahead of the oldest message."""
        if self._keys:
            return min(q[0] for q in self._keys.values())
        return None if self._last is None else self._last + 1

    def committable(self) -> int | None:
        """`position` if it advanced past the last `committed` one, else None. Asking
        again before `committed` returns it again, so a failed commit is simply retried."""
        pos = self.position
        if pos is None or self._floor is None or pos <= self._floor:
            return None
        return pos

    def committed(self, offset: int) -> None:
        """The broker accepted a commit of `offset`; an older acknowledgement arriving
        late never moves the mark back."""
        if self._floor is None or offset > self._floor:
            self._floor = offset

    def lag(self, highwater: int) -> int | None:
        """Records behind the partition end counted from what is processed, not
        committed, so a stalled partition shows as growing lag. None before any message."""
        pos = self.position
        return None if pos is None else max(0, highwater - pos)

    @property
    def buffered(self) -> int:
        """Queued + in flight."""
        return len(self._items)

    @property
    def in_flight(self) -> int:
        return len(self._running)

    @property
    def queued(self) -> int:
        return len(self._items) - len(self._running)

    def close(self) -> int | None:
        """Forget everything; returns the `position` to commit for the next owner."""
        pos = self.position
        self._items.clear()
        self._keys.clear()
        self._ready.clear()
        self._running.clear()
        self._last = self._floor = None
        self.paused = False
        self._closed = True
        return pos


class Assignment(Generic[P, T]):
    """The partitions of one consumer-group member, keyed by any hashable `P` (e.g.
    aiokafka's TopicPartition, or a (topic, partition) tuple).

    No `assign`: a partition's state is made by `state()` on its first fetched records,
    so the listener needs to report revokes only. Tasks should keep the `PartitionState`
    they got work from and `finish` on it: after a revoke that is a closed state and the
    call is ignored, even if the partition came back meanwhile with a new state.
    """

    def __init__(self, max_in_flight: int = 16, max_buffered: int = 64) -> None:
        self.max_in_flight = max_in_flight
        self.max_buffered = max_buffered
        self._parts: dict[P, PartitionState[T]] = {}

    def state(self, part: P) -> PartitionState[T]:
        """The partition's state, created on first use."""
        st = self._parts.get(part)
        if st is None:
            st = self._parts[part] = PartitionState(self.max_in_flight, self.max_buffered)
        return st

    def get(self, part: P) -> PartitionState[T] | None:
        return self._parts.get(part)

    def items(self) -> ItemsView[P, PartitionState[T]]:
        return self._parts.items()

    def revoke(self, parts: Iterable[P]) -> dict[P, int]:
        """Drop the partitions; returns their positions (those known) to commit."""
        out: dict[P, int] = {}
        for part in parts:
            st = self._parts.pop(part, None)
            pos = st.close() if st is not None else None
            if pos is not None:
                out[part] = pos
        return out

    def committable(self) -> dict[P, int]:
        """The positions that advanced since their last commit."""
        out: dict[P, int] = {}
        for part, st in self._parts.items():
            pos = st.committable()
            if pos is not None:
                out[part] = pos
        return out

    def committed(self, offsets: Mapping[P, int]) -> None:
        """The broker accepted these commits; partitions revoked meanwhile are skipped."""
        for part, offset in offsets.items():
            st = self._parts.get(part)
            if st is not None:
                st.committed(offset)

    def paused(self) -> set[P]:
        """The partitions whose fetching should be paused now; all others should fetch."""
        return {part for part, st in self._parts.items() if st.paused}
