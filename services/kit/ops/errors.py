"""What the operations kit raises."""

from __future__ import annotations


class StartupError(RuntimeError):
    """A service cannot start as configured (e.g. its port is taken): exit, don't retry."""
