"""Key-level ordering, commit position, backpressure and lag of `offsets`, without a broker."""

from __future__ import annotations

import random

import pytest

from services.kit.runtime.offsets import Assignment, PartitionState

A, B = b"a", b"b"


def offsets(ready: list[tuple[int, str]]) -> list[int]:
    return [o for o, _ in ready]


def test_same_key_waits_for_its_predecessor_while_another_key_runs():
    st: PartitionState[str] = PartitionState()
    st.add(0, A, "a0")
    st.add(1, A, "a1")
    st.add(2, B, "b2")
    assert st.take_ready() == [(0, "a0"), (2, "b2")]
    st.finish(2)
    assert st.take_ready() == []  # a1 still waits for a0
    st.finish(0)
    assert st.take_ready() == [(1, "a1")]


def test_different_keys_run_concurrently_up_to_max_in_flight():
    st: PartitionState[str] = PartitionState(max_in_flight=3)
    for i in range(5):
        st.add(i, bytes([i]), f"m{i}")
    assert offsets(st.take_ready()) == [0, 1, 2]
    assert (st.in_flight, st.queued, st.buffered) == (3, 2, 5)
    assert st.take_ready() == []
    st.finish(1)
    assert offsets(st.take_ready()) == [3]


def test_none_key_is_ordered_among_none_keys_only():
    st: PartitionState[str] = PartitionState()
    st.add(0, None, "n0")
    st.add(1, None, "n1")
    st.add(2, A, "a2")
    assert offsets(st.take_ready()) == [0, 2]
    st.finish(0)
    assert offsets(st.take_ready()) == [1]


def test_commit_stays_below_the_oldest_unfinished_then_jumps():
    st: PartitionState[str] = PartitionState()
    for i in range(10, 14):
        st.add(i, bytes([i]), "")
    st.take_ready()
    assert st.committable() is None  # nothing finished: 10 is where the fetch started
    for i in (11, 12, 13):
        st.finish(i)
    assert st.committable() is None
    assert st.position == 10
    st.finish(10)
    assert st.committable() == 14


def test_commit_is_repeated_until_acknowledged_and_never_reported_again_or_backwards():
    st: PartitionState[str] = PartitionState()
    st.add(0, A, "")
    st.add(1, B, "")
    st.take_ready()
    st.finish(0)
    assert st.committable() == 1
    assert st.committable() == 1  # the commit failed or is still under way: retried
    st.committed(1)
    assert st.committable() is None
    st.finish(1)
    assert st.committable() == 2
    st.committed(2)
    st.committed(1)  # a late, older acknowledgement
    assert st.committable() is None
    st.add(2, A, "")
    assert st.committable() is None  # 2 is unfinished: position stays 2


def test_offsets_must_increase():
    st: PartitionState[str] = PartitionState()
    st.add(5, A, "")
    with pytest.raises(ValueError):
        st.add(5, A, "")
    with pytest.raises(ValueError):
        st.add(4, B, "")
    with pytest.raises(ValueError):
        st.finish(5)  # not in flight yet


def test_pause_at_max_buffered_and_resume_at_half():
    st: PartitionState[str] = PartitionState(max_in_flight=8, max_buffered=4)
    for i in range(3):
        st.add(i, bytes([i]), "")
    assert not st.paused
    st.add(3, bytes([3]), "")
    assert st.paused
    st.take_ready()
    st.finish(0)
    assert st.paused  # 3 buffered > 2
    st.finish(1)
    assert not st.paused  # 2 buffered == half


def test_lag_is_counted_from_the_processed_position():
    st: PartitionState[str] = PartitionState()
    assert st.lag(100) is None
    st.add(90, A, "")
    st.add(91, A, "")
    assert st.lag(100) == 10
    st.take_ready()
    st.finish(90)
    assert st.lag(100) == 9
    assert st.lag(50) == 0


def test_revoke_returns_the_position_and_forgets():
    asg: Assignment[tuple[str, int], str] = Assignment(max_buffered=2)
    p0, p1 = ("t", 0), ("t", 1)
    st = asg.state(p0)
    st.add(7, A, "")
    st.add(8, B, "")
    asg.state(p1).add(3, A, "")
    assert asg.paused() == {p0}
    st.take_ready()
    st.finish(8)
    assert asg.committable() == {}
    assert asg.revoke([p0, ("t", 9)]) == {p0: 7}
    assert asg.get(p0) is None and [p for p, _ in asg.items()] == [p1]
    st.finish(7)  # a task that outlived the revoke: ignored
    assert st.buffered == 0 and st.position is None
    fresh = asg.state(p0)  # reassigned: a new state, refetching from the commit
    assert fresh is not st and fresh.position is None
    fresh.add(7, A, "")
    assert fresh.take_ready() == [(7, "")]


def test_assignment_commits_only_what_advanced():
    asg: Assignment[str, int] = Assignment()
    for part in ("x", "y"):
        st = asg.state(part)
        st.add(0, None, 0)
        st.take_ready()
    asg.state("x").finish(0)
    assert asg.committable() == {"x": 1}
    asg.committed({"x": 1, "gone": 4})
    assert asg.committable() == {}


@pytest.mark.parametrize("seed", range(30))
def test_random_finish_orders_keep_the_invariants(seed: int):
    rng = random.Random(seed)
    max_in_flight = rng.randint(1, 6)
    max_buffered = rng.randint(2, 20)
    st: PartitionState[bytes | None] = PartitionState(max_in_flight, max_buffered)
    keys: list[bytes | None] = [None, b"a", b"b", b"c", b"d", b"e"][: rng.randint(1, 6)]
    unfinished: dict[int, bytes | None] = {}
    running: set[int] = set()
    started: dict[bytes | None, list[int]] = {}
    given: dict[bytes | None, list[int]] = {}
    next_offset, reported, acked = rng.randint(0, 1000), -1, -1
    for _ in range(400):
        roll = rng.random()
        if roll < 0.4 and not st.paused:
            next_offset += rng.randint(1, 3)  # compacted topics leave gaps
            key = rng.choice(keys)
            st.add(next_offset, key, key)
            unfinished[next_offset] = key
            given.setdefault(key, []).append(next_offset)
        elif roll < 0.8 and running:
            done = rng.choice(sorted(running))
            running.remove(done)
            del unfinished[done]
            st.finish(done)
        elif roll < 0.9:
            pos = st.committable()
            if pos is not None:
                assert pos >= reported and pos > acked, "never backwards, never twice"
                reported = pos
                if rng.random() < 0.7:  # else the commit failed: it is offered again
                    st.committed(pos)
                    acked = pos
        for offset, item in st.take_ready():
            assert item == unfinished[offset]
            running.add(offset)
            started.setdefault(item, []).append(offset)

        running_keys = [unfinished[o] for o in running]
        assert len(running_keys) == len(set(running_keys)), "one message per key at a time"
        assert len(running) <= max_in_flight
        if len(running) < max_in_flight:  # no idle capacity while a key could start
            assert set(running_keys) == set(unfinished.values())
        if given:
            assert st.position == (min(unfinished) if unfinished else next_offset + 1)
        assert (st.buffered, st.in_flight) == (len(unfinished), len(running))
        if st.buffered >= max_buffered:
            assert st.paused
        if st.buffered <= max_buffered // 2:
            assert not st.paused
    for key, offs in started.items():
        assert offs == given[key][: len(offs)], "per key, start order is offset order"


def test_held_back_while_an_earlier_message_of_the_partition_is_unfinished():
    st: PartitionState[str] = PartitionState()
    st.add(0, A, "a0")
    st.add(1, B, "b1")
    st.add(2, B, "b2")
    st.take_ready()
    assert st.held_back(1)  # a0 runs: b1's finish cannot be committed
    assert not st.held_back(0)
    st.finish(0)
    assert not st.held_back(1)


def test_progress_counts_only_time_standing_still_with_records_waiting():
    from services.kit.runtime.offsets import Progress

    p = Progress()
    p.observe(None, 0, now=0.0)
    assert p.stalled_for(100.0) == 0.0  # nothing waits
    p.observe(5, 3, now=10.0)  # records arrive: the clock starts
    p.observe(5, 4, now=20.0)
    assert p.stalled_for(30.0) == 20.0
    p.observe(6, 4, now=31.0)  # it moved
    assert p.stalled_for(32.0) == 1.0
    p.observe(6, 0, now=40.0)  # caught up
    assert p.stalled_for(500.0) == 0.0
    p.observe(6, 2, now=600.0)  # new records after a quiet spell: not stuck since 40
    assert p.stalled_for(601.0) == 1.0
