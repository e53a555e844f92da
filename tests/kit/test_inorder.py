"""InOrder: a fetch that jumps a hole in a partition's offsets is cut there and retried."""

from __future__ import annotations

from dataclasses import dataclass

from aiokafka import TopicPartition

from services.kit.kafka import InOrder

TP = TopicPartition("t", 0)


@dataclass
class Rec:
    offset: int


class FakeConsumer:
    """Returns scripted fetches and records seeks, as aiokafka's consumer would."""

    def __init__(self, *fetches: list[int], start: int | None = None):
        self.fetches = list(fetches)
        self.seeks: list[int] = []
        self.start = start

    def assignment(self):
        return {TP}

    async def position(self, tp):
        """Where the next fetch starts: as scripted, else its first record."""
        if self.start is not None:
            return self.start
        return self.fetches[0][0] if self.fetches and self.fetches[0] else 0

    async def getmany(self, *tps, timeout_ms=0, max_records=None):
        offsets = self.fetches.pop(0) if self.fetches else []
        return {TP: [Rec(o) for o in offsets]} if offsets else {}


def offsets(batch) -> list[int]:
    return [r.offset for r in batch.get(TP, [])]


async def test_a_hole_is_fetched_again_not_skipped():
    consumer = FakeConsumer([0, 1], [3, 4], [2, 3, 4])
    consumer.seek = lambda tp, off: consumer.seeks.append(off)
    fetch = InOrder(consumer, enabled=True)
    assert offsets(await fetch.getmany()) == [0, 1]
    assert offsets(await fetch.getmany()) == []  # 2 is missing: cut and re-seek
    assert consumer.seeks == [2]
    assert offsets(await fetch.getmany()) == [2, 3, 4]


async def test_the_first_fetch_is_held_to_the_position_too():
    consumer = FakeConsumer([11, 12], [10, 11, 12], start=10)
    consumer.seek = lambda tp, off: consumer.seeks.append(off)
    fetch = InOrder(consumer, enabled=True)
    assert offsets(await fetch.getmany()) == []  # 10 not visible yet: not skipped
    assert consumer.seeks == [10]
    assert offsets(await fetch.getmany()) == [10, 11, 12]


async def test_a_hole_that_never_fills_is_passed_after_patience():
    consumer = FakeConsumer([0], [5], [5])
    consumer.seek = lambda tp, off: consumer.seeks.append(off)
    fetch = InOrder(consumer, enabled=True, patience_s=0.0)
    await fetch.getmany()
    assert offsets(await fetch.getmany()) == []  # first sight of the hole: wait
    assert offsets(await fetch.getmany()) == [5]  # still open: read on past it


async def test_forget_starts_a_new_sequence_and_disabled_passes_through():
    consumer = FakeConsumer([0], [7], [9])
    consumer.seek = lambda tp, off: consumer.seeks.append(off)
    fetch = InOrder(consumer, enabled=True)
    await fetch.getmany()
    fetch.forget([TP])  # e.g. after a rebalance the position moved on
    assert offsets(await fetch.getmany()) == [7]
    assert offsets(await InOrder(consumer, enabled=False).getmany()) == [9]
    assert consumer.seeks == []
