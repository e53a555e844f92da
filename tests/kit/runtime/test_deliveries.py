"""The delivery counter's state (kit/deliveries.py), without a broker."""

from __future__ import annotations

import pytest

from services.kit.runtime.deliveries import Attempts, Delivery, Position, next_attempt, window_for

G = "testdata.path.traditional.generator-traditional"
T = "testdata.path.traditional"
T0 = 1_780_000_000_000  # epoch ms


def at(offset: int, partition: int = 3, group: str = G) -> Position:
    return Position(group, T, partition, offset)


def attempts(**kw) -> Attempts:
    table = Attempts(**kw)
    table.track(G)
    return table


def test_a_first_delivery_is_attempt_one_and_each_marker_counts_one_more():
    table = attempts()
    assert table.get(at(7), T0) is None and next_attempt(None) == 1
    table.note(at(7), 1, T0)
    table.note(at(7), 2, T0 + 5_000)
    known = table.get(at(7), T0 + 6_000)
    assert known is not None and next_attempt(known) == 3
    assert known.first_ms == T0 and known.last_ms == T0 + 5_000
    assert table.get(at(8), T0) is None and table.get(at(7, partition=4), T0) is None


def test_markers_read_late_twice_or_out_of_order_keep_the_highest_attempt():
    table = attempts()
    table.note(at(7), 2, T0 + 5_000)  # another member's marker arrives first
    table.note(at(7), 1, T0)
    table.note(at(7), 2, T0 + 5_000)  # our own, written and read back
    known = table.get(at(7), T0 + 6_000)
    assert known is not None and (known.started, known.first_ms) == (2, T0)


def test_only_the_tracked_groups_are_kept():
    table = attempts()
    table.note(at(7, group="testdata.requests.router"), 1, T0)
    assert len(table) == 0 and not table.wants("testdata.requests.router")
    table.track("testdata.requests.router")
    table.note(at(7, group="testdata.requests.router"), 1, T0)
    assert table.get(at(7, group="testdata.requests.router"), T0) is not None
    assert table.get(at(7), T0) is None  # same offset, other group: another message


def test_a_marker_key_names_the_position_and_nothing_else_parses():
    pos = at(2**40, partition=11)
    assert Position.from_key(pos.key) == pos
    with pytest.raises(ValueError):
        Position.from_key("not-a-marker-key")


def test_attempts_are_forgotten_a_window_after_the_latest_one():
    table = attempts(window_s=60)
    table.note(at(7), 1, T0)
    table.note(at(7), 2, T0 + 50_000)  # a later attempt keeps the message remembered
    assert table.get(at(7), T0 + 110_000) is not None
    assert table.get(at(7), T0 + 111_000) is None  # a gap longer than the window: anew


def test_memory_is_bounded_in_age_and_in_number():
    table = attempts(window_s=60)
    for i in range(100):
        table.note(at(i), 1, T0)
    table.note(at(1000), 1, T0 + 61_000)  # a window later: the first 100 become the old ones
    table.note(at(1001), 1, T0 + 122_000)  # two windows: they are dropped
    assert len(table) == 2 and table.get(at(5), T0 + 122_000) is None
    capped = attempts(max_entries=50)
    for i in range(200):
        capped.note(at(i), 1, T0)
    assert len(capped) <= 51
    assert capped.get(at(199), T0) is not None  # the latest are kept, the oldest go


def test_one_delivery_past_the_limit_is_exhausted_and_says_why():
    assert not Delivery(at(7), 3, T0, limit=3).exhausted
    four = Delivery(at(7), 4, T0, limit=3)
    assert four.exhausted
    assert four.reason().startswith("delivered 4 times: 3 attempts were started and none")
    assert "MAX_DELIVERIES is 3" in four.reason()


def test_the_window_covers_an_attempt_running_out_its_budget_and_another_waiting():
    assert window_for(300) == 660


def test_a_finished_marker_makes_the_message_finished_and_never_exhausted():
    """A message that finished behind an unfinished one is remembered as finished, in any
    marker order, and a delivery of it is never exhausted (it is skipped instead)."""
    table = attempts()
    table.note(at(7), 1, T0)
    table.note(at(7), 1, T0 + 1_000, finished=True)
    table.note(at(7), 3, T0 + 2_000)  # a later start marker read after it: still finished
    known = table.get(at(7), T0 + 3_000)
    assert known is not None and known.finished and known.started == 3
    assert not Delivery(at(7), 4, T0, limit=3, finished=True).exhausted
    assert Delivery(at(7), 4, T0, limit=3).exhausted
    table.note(at(8), 2, T0)
    unfinished = table.get(at(8), T0)
    assert unfinished is not None and not unfinished.finished
