"""The repeated-message filter, on a clock the test moves."""

from __future__ import annotations

import logging

from services.kit.logs import Repeats


class Clock:
    now = 0.0

    def __call__(self) -> float:
        return self.now


def record(msg: str, name: str = "aiokafka", level: int = logging.ERROR) -> logging.LogRecord:
    return logging.LogRecord(name, level, __file__, 1, msg, ("x",), None)


def test_a_repeated_message_passes_once_per_window_then_says_how_many_were_held():
    clock = Clock()
    f = Repeats(window=10.0, clock=clock)
    assert f.filter(record("Unable to update metadata from %s"))
    for _ in range(99):
        clock.now += 0.1
        assert not f.filter(record("Unable to update metadata from %s"))
    clock.now = 10.5
    again = record("Unable to update metadata from %s")
    assert f.filter(again)
    assert again.getMessage() == "Unable to update metadata from x [99 more like this in 10 s]"


def test_different_messages_loggers_and_levels_are_not_held():
    f = Repeats(window=10.0, clock=Clock())
    assert f.filter(record("a"))
    assert f.filter(record("b"))
    assert f.filter(record("a", name="testdata.bridge"))
    assert f.filter(record("a", level=logging.WARNING))
    assert not f.filter(record("a"))
