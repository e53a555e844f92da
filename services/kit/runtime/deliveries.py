"""How many times each consumed message was started: the pure state behind MAX_DELIVERIES.

Kafka counts no deliveries, and the deliveries worth counting are those after a crash:
the process that started the message died with whatever it knew (a poison message can
take the process down, an expired session hands the partition to another member). So
every attempt is recorded *before* its work starts, as a marker on the deliveries topic
(written and read in kit/control.py), and every process folds the markers it reads into
`Attempts`. A message is known by its position, (group, topic, partition, offset): a
redelivery has the same position; a request its caller sends again, even under the same
request id, is a new message at a new position and starts at attempt 1.

Pure: no clock reads (callers pass epoch ms), no I/O, so the rules are unit-tested
without a broker, like offsets.py.

What is remembered is bounded twice. In age: markers older than `window_s` are forgotten
(two generations of tables, swapped every window, so an entry lives one to two windows);
a message delivered again after a longer gap starts counting anew, so at most
max_deliveries attempts per window. In number: past `max_entries` the older generation is
dropped early, which under very high load shortens the window the same way. Each entry
costs ~100 bytes (offset -> one packed int, per partition).
"""

from __future__ import annotations

from typing import NamedTuple

Stream = tuple[str, str, int]  # (group, topic, partition)


def window_for(budget_s: float) -> float:
    """How long markers are remembered: the longest expected gap between two deliveries
    of a message is one attempt running out its budget, plus one waiting up to a budget
    for a free slot, plus a session timeout and a restart."""
    return 2 * budget_s + 60


class Position(NamedTuple):
    """Where a consumer group met a message: what identifies its deliveries."""

    group: str
    topic: str
    partition: int
    offset: int

    @property
    def key(self) -> str:
        """The marker's Kafka key (topic and group names never contain "/")."""
        return f"{self.group}/{self.topic}/{self.partition}/{self.offset}"

    @classmethod
    def from_key(cls, key: str) -> Position:
        """Inverse of `key`; ValueError for anything else."""
        group, topic, partition, offset = key.rsplit("/", 3)
        return cls(group, topic, int(partition), int(offset))


class Known(NamedTuple):
    """What the markers read so far say about one message."""

    started: int  # attempts started: the highest attempt number recorded
    first_ms: int  # when the first recorded attempt started (second precision)
    last_ms: int  # when the latest one started (second precision)
    finished: bool = False  # an attempt finished (its outputs were acknowledged)


def next_attempt(known: Known | None) -> int:
    """The number of this delivery: 1 for the first. Above MAX_DELIVERIES the message must
    not be started again: every earlier attempt was started and none finished (one that
    finished is committed, or, when an earlier message held its commit back, has a
    finished marker: see `Delivery.finished`)."""
    return (known.started if known is not None else 0) + 1


class Delivery(NamedTuple):
    """One delivery of a message to a consumer group, as the markers number it."""

    position: Position
    number: int  # 1 for the first delivery
    first_ms: int  # when its first attempt started (now, for a first delivery)
    limit: int  # MAX_DELIVERIES
    #: An earlier attempt finished (its offset was held back by an unfinished message
    #: before it, then its process died): skip it, it is done.
    finished: bool = False

    @property
    def exhausted(self) -> bool:
        """One too many: dead-letter it and answer its caller instead of starting it.
        Never for a finished message: only attempts that all died count."""
        return not self.finished and self.number > self.limit

    def reason(self) -> str:
        return (
            f"delivered {self.number} times: {self.number - 1} attempts were started and "
            "none finished (the consumer died or lost the partition each time); "
            f"MAX_DELIVERIES is {self.limit}"
        )


_FINISHED = 0x80  # the top bit of the low byte; attempts counted up to 127


def _pack(started: int, first_s: int, last_s: int, finished: bool = False) -> int:
    return (first_s << 40) | (last_s << 8) | min(started, 127) | (_FINISHED if finished else 0)


def _unpack(value: int) -> Known:
    return Known(
        value & 0x7F,
        (value >> 40) * 1000,
        ((value >> 8) & 0xFFFFFFFF) * 1000,
        bool(value & _FINISHED),
    )


class Attempts:
    """Delivery attempts per message position, for the consumer groups `track`ed."""

    def __init__(self, window_s: float = 660.0, max_entries: int = 200_000) -> None:
        if window_s <= 0 or max_entries < 1:
            raise ValueError("window_s and max_entries must be positive")
        self.window_ms = int(window_s * 1000)
        self.max_entries = max_entries
        self.groups: set[str] = set()
        self._new: dict[Stream, dict[int, int]] = {}
        self._old: dict[Stream, dict[int, int]] = {}
        self._new_since_ms: int | None = None
        self._size = 0  # entries in both generations (a message may be in both)

    def track(self, group: str) -> None:
        """Keep the markers of this group (a process keeps only its own groups')."""
        self.groups.add(group)

    def wants(self, group: str) -> bool:
        return group in self.groups

    def note(self, pos: Position, attempt: int, at_ms: int, finished: bool = False) -> None:
        """Attempt `attempt` at `pos` started (or, `finished`, finished) at `at_ms`;
        markers may come in any order and more than once (the highest attempt wins, and
        once finished, a message stays finished)."""
        if pos.group not in self.groups:
            return
        self._rotate(at_ms)
        stream = (pos.group, pos.topic, pos.partition)
        known = self.get(pos, at_ms)
        at_s = at_ms // 1000
        if known is None:
            value = _pack(attempt, at_s, at_s, finished)
        else:
            value = _pack(
                max(attempt, known.started),
                min(at_s, known.first_ms // 1000),
                max(at_s, known.last_ms // 1000),
                finished or known.finished,
            )
        table = self._new.setdefault(stream, {})
        if pos.offset not in table:
            self._size += 1
        table[pos.offset] = value
        if self._size > self.max_entries:
            self._drop_old(at_ms)

    def get(self, pos: Position, now_ms: int) -> Known | None:
        """What is known of `pos` within the window; None if nothing."""
        stream = (pos.group, pos.topic, pos.partition)
        for generation in (self._new, self._old):
            value = generation.get(stream, {}).get(pos.offset)
            if value is not None:
                known = _unpack(value)
                return known if now_ms - known.last_ms <= self.window_ms else None
        return None

    def __len__(self) -> int:
        return self._size

    def _rotate(self, now_ms: int) -> None:
        if self._new_since_ms is None:
            self._new_since_ms = now_ms
        elif now_ms - self._new_since_ms >= self.window_ms:
            self._drop_old(now_ms)

    def _drop_old(self, now_ms: int) -> None:
        """The older generation goes; the newer one becomes it."""
        self._size -= sum(len(t) for t in self._old.values())
        self._old, self._new = self._new, {}
        self._new_since_ms = now_ms
