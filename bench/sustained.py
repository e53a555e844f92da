"""`make bench sustained`: 50 callers for SUSTAINED_MINUTES (default 10), per minute (never
run by default: it takes the minutes it says)."""

from __future__ import annotations

from bench.smallcalls import sustained


def run() -> dict[str, float]:
    return sustained()
