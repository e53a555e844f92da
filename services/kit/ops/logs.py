"""Logging that stays readable when a dependency fails in a loop, and that a caller
cannot write lines into.

Seen: a request id with a newline in it forged a log line of the attacker's choosing.
`OneLine` escapes every control character of a message (its arguments are caller data:
request ids, entities, topic names), so each record is exactly one line; a traceback,
which is ours, is appended as is.

Seen: with the broker killed, aiokafka logged "Unable to update metadata" ~10 times a
second per client, ~120 KB/s, burying the one line that said what happened. `Repeats`
lets each message (its logger, level and unformatted text) through once per `window`
seconds and says, on the next one let through, how many like it it held back.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

#: Seconds between two copies of one repeated message.
WINDOW_SECONDS = 10.0
#: Distinct messages tracked at once (the oldest is forgotten first): a bound on memory.
MAX_TRACKED = 1024


#: Control characters as escapes: \n, \r, \t by name, the rest as \xNN (or \uNNNN).
_ESCAPES = {c: repr(chr(c))[1:-1] for c in [*range(0x20), 0x7F, *range(0x80, 0xA0)]}
_ESCAPES.update({0x2028: "\\u2028", 0x2029: "\\u2029"})  # line separators too


class OneLine(logging.Formatter):
    """A formatter whose messages never span lines (see the module docstring)."""

    def formatMessage(self, record: logging.LogRecord) -> str:
        return super().formatMessage(record).translate(_ESCAPES)


def one_line_handlers(fmt: str) -> None:
    """Give every root handler a OneLine formatter of `fmt` and the Repeats filter."""
    for handler in logging.getLogger().handlers:
        handler.setFormatter(OneLine(fmt))
        handler.addFilter(Repeats())


class Repeats(logging.Filter):
    def __init__(self, window: float = WINDOW_SECONDS, clock: Callable[[], float] = time.monotonic):
        super().__init__()
        self.window, self.clock = window, clock
        self._seen: dict[tuple[str, int, str], tuple[float, int]] = {}

    def filter(self, record: logging.LogRecord) -> bool:
        key = (record.name, record.levelno, str(record.msg))
        now = self.clock()
        last = self._seen.get(key)
        if last is not None and now - last[0] < self.window:
            self._seen[key] = (last[0], last[1] + 1)
            return False
        self._seen.pop(key, None)
        self._seen[key] = (now, 0)
        if len(self._seen) > MAX_TRACKED:
            del self._seen[next(iter(self._seen))]
        if last is not None and last[1]:
            record.msg = f"{record.msg} [{last[1]} more like this in {now - last[0]:.0f} s]"
        return True
