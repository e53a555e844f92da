"""The pattern store: what RAG and hybrid retrieve and the learner writes.

`store.py` is the contract; `embedded.py` (SQLite + a packaged embedding model, the
default) and `weaviate.py` (when `WEAVIATE_URL` is set) implement it. Backends are
imported on demand: the Weaviate client alone costs ~1 s to import.
"""

from __future__ import annotations

from services.kit.settings import StoreSettings
from services.patterns.errors import StoreUnavailable
from services.patterns.store import Collection, Hit, Pattern, PatternStore, StoreStats

__all__ = [
    "Collection",
    "Hit",
    "Pattern",
    "PatternStore",
    "StoreStats",
    "StoreUnavailable",
    "open_store",
]


def open_store(settings: StoreSettings) -> PatternStore:
    """The configured backend, not yet started (call `await store.start()`)."""
    if settings.weaviate_url:
        from services.patterns.weaviate import WeaviateStore

        return WeaviateStore(settings)
    from services.patterns.embedded import EmbeddedStore

    return EmbeddedStore.from_settings(settings)
