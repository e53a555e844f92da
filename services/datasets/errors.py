"""What the datasets tools raise."""

from __future__ import annotations


class Incomplete(Exception):
    pass


class ChunkGone(LookupError):
    """A chunk the first pass saw is no longer on the log (retention took it)."""


class Unfit(ValueError):
    """A value Parquet's column type cannot hold."""
