"""When to restart a dead service process, and when to call it crash-looping.

Pure bookkeeping over the times it is told about (no clock, no processes): the
supervisor owns the processes and the clock, and its decisions stay testable in
microseconds.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field


@dataclass
class RestartPolicy:
    """Exponential backoff between restarts, forgotten once a run lasts `stable_after_s`.

    A process that exits `loop_exits` times within `loop_window_s` is crash-looping; it
    stays so (and keeps being restarted at the capped delay) until one run lasts
    `stable_after_s`, because exits spaced by the capped delay would otherwise age out
    of the window and make a permanently broken service look merely "restarting".
    """

    initial_delay_s: float = 0.5
    max_delay_s: float = 30.0
    stable_after_s: float = 60.0
    loop_exits: int = 5
    loop_window_s: float = 60.0
    crash_looping: bool = field(default=False, init=False)
    #: exits since the process last stayed up `stable_after_s`
    exits: int = field(default=0, init=False)
    _delay: float = field(default=0.0, init=False, repr=False)
    _recent: deque[float] = field(default_factory=deque, init=False, repr=False)
    _started: float | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self._delay = self.initial_delay_s

    def started(self, now: float) -> None:
        """The process was (re)started at `now`."""
        self._started = now

    def settle(self, now: float) -> bool:
        """Forget past exits if the running process has stayed up long enough.

        Returns True when that cleared a crash-looping state (the caller reports it).
        """
        if self._started is None or now - self._started < self.stable_after_s:
            return False
        was_looping = self.crash_looping
        self._delay = self.initial_delay_s
        self.crash_looping = False
        self.exits = 0
        self._recent.clear()
        return was_looping

    def exited(self, now: float) -> float:
        """Record an exit at `now`; returns how long to wait before the restart."""
        self.settle(now)  # a long run before this exit resets the backoff
        self._started = None
        self.exits += 1
        self._recent.append(now)
        while self._recent and now - self._recent[0] > self.loop_window_s:
            self._recent.popleft()
        if len(self._recent) >= self.loop_exits:
            self.crash_looping = True
        delay, self._delay = self._delay, min(self.max_delay_s, self._delay * 2)
        return delay
