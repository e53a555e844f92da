"""The repeated-message filter, on a clock the test moves."""

from __future__ import annotations

import logging
import subprocess
import sys

from services.kit.ops.logs import OneLine, Repeats


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


def test_a_message_never_spans_lines_whatever_its_arguments_hold():
    """Seen: a request id with a newline forged a log line of the caller's choosing."""
    fmt = OneLine("%(levelname)s %(message)s")
    forged = "abc\n2026-12-07 INFO [router] forged\r\x1b[31m\u2028"
    rec = logging.LogRecord("x", logging.WARNING, __file__, 1, "request %s done", (forged,), None)
    line = fmt.format(rec)
    assert "\n" not in line and "\r" not in line and "\x1b" not in line and "\u2028" not in line
    assert line == "WARNING request abc\\n2026-12-07 INFO [router] forged\\r\\x1b[31m\\u2028 done"


def test_a_traceback_stays_as_python_wrote_it():
    try:
        raise ValueError("bad\nvalue")
    except ValueError:
        rec = logging.LogRecord("x", logging.ERROR, __file__, 1, "failed", (), sys.exc_info())
    out = OneLine("%(message)s").format(rec)
    assert out.startswith("failed\nTraceback (most recent call last):")


def test_the_services_log_through_one_line_formatters():
    code = (
        "import logging; from services.cli import _setup_logging; _setup_logging('info', 'svc');"
        "logging.getLogger('t').warning('id %s', 'a\\nforged')"
    )
    err = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stderr
    assert err.count("\n") == 1 and "id a\\nforged" in err
