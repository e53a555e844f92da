"""What the pattern store raises."""

from __future__ import annotations


class StoreUnavailable(RuntimeError):
    """The store cannot be reached or answered too slowly; the reason says which."""


class ModelUnavailable(RuntimeError):
    """No embedding model in this process; the reason says why (keyword-only ranking)."""
