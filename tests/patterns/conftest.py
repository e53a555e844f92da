"""Pattern-store fixtures: the contract suite runs once per backend in `BACKENDS`.

A backend is one entry: a factory taking the requesting test's `request` (for tmp_path or
a server fixture via `request.getfixturevalue`) and returning an async context manager
that yields a started, EMPTY store and closes it afterwards. Adding a backend to every
contract test is one line here.

`REOPEN` (optional per backend) opens a second instance on the first one's data: the
persistence and cross-instance visibility tests run only for backends listed there.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path

import pytest

from services.patterns.embedded import EmbeddedStore
from services.patterns.store import PatternStore
from tests.patterns.backends import (
    docker_reason,
    make_weaviate_container,
    make_weaviate_fake,
    reopen_weaviate,
)
from tests.support import HANG_GUARD_S

# A hang guard only: the suite shares a small machine with other test runs; the timeout
# is tested on its own (test_embedded.py).
TIMEOUT_S = HANG_GUARD_S

Factory = Callable[[pytest.FixtureRequest], AbstractAsyncContextManager[PatternStore]]
Reopen = Callable[[PatternStore], AbstractAsyncContextManager[PatternStore]]


@asynccontextmanager
async def open_embedded(path: Path) -> AsyncIterator[EmbeddedStore]:
    store = EmbeddedStore(path, timeout_seconds=TIMEOUT_S)
    await store.start()
    try:
        yield store
    finally:
        await store.aclose()


def make_embedded(request: pytest.FixtureRequest) -> AbstractAsyncContextManager[PatternStore]:
    tmp_path: Path = request.getfixturevalue("tmp_path")
    return open_embedded(tmp_path / "store" / "patterns.sqlite")


def reopen_embedded(store: PatternStore) -> AbstractAsyncContextManager[PatternStore]:
    assert isinstance(store, EmbeddedStore)
    return open_embedded(store.path)


BACKENDS: dict[str, Factory] = {
    "embedded": make_embedded,
    "weaviate-fake": make_weaviate_fake,
}
REOPEN: dict[str, Reopen] = {
    "embedded": reopen_embedded,
    "weaviate-fake": reopen_weaviate,
}
if docker_reason() is None:  # a real Weaviate in Docker (test_weaviate_container.py says why not)
    BACKENDS["weaviate-docker"] = make_weaviate_container
    REOPEN["weaviate-docker"] = reopen_weaviate


@pytest.fixture(params=sorted(BACKENDS))
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


@pytest.fixture
async def store(backend: str, request: pytest.FixtureRequest) -> AsyncIterator[PatternStore]:
    async with BACKENDS[backend](request) as s:
        yield s
