"""What a generation path's runtime raises."""

from __future__ import annotations

from services.core.report import ErrorKind


class PathIncomplete(RuntimeError):
    """A path's generator ended with more or fewer records than the plan has."""


class Abandoned(Exception):
    """Nobody waits for the rest: the caller cancelled, or the deadline passed."""

    def __init__(self, kind: ErrorKind, reason: str):
        super().__init__(reason)
        self.kind = kind


class OverBudget(Exception):
    """The request ran past its generation budget: it is dead-lettered, its caller told."""
