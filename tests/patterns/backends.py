"""Store factories for the shared contract suite (`conftest.BACKENDS`) and backend tests.

Each is an async context manager yielding a started store with nothing in it, closed (and
its server stopped) afterwards. For conftest:

    BACKENDS["weaviate-fake"] = make_weaviate_fake      # (request) -> context manager
    REOPEN["weaviate-fake"] = reopen_weaviate           # a second store, same server
"""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from services.kit.settings import Settings
from services.patterns.weaviate import WeaviateStore
from tests.fakes.weaviate_server import FakeWeaviate
from tests.support import HANG_GUARD_S, make_settings

DIM = 384  # all-MiniLM-L6-v2: the fake refuses vectors of any other length
# A hang guard only for the shared suite on a busy machine; the timeout itself is tested
# on its own.
_TIMEOUT = {"pattern_store_timeout_seconds": HANG_GUARD_S}


def weaviate_settings(server: FakeWeaviate, **over: Any) -> Settings:
    values: dict[str, Any] = {
        "weaviate_url": server.url,
        "weaviate_grpc_port": server.grpc_port,
        "weaviate_api_key": server.api_key,
        "pattern_store_timeout_seconds": 5.0,
    }
    values.update(over)
    return make_settings(**values)


@asynccontextmanager
async def weaviate_fake_store(tmp_path: Path, **store_args: Any) -> AsyncIterator[WeaviateStore]:
    """The Weaviate backend (real client, the process's MiniLM model) against a fresh
    wire-format fake. `tmp_path` is unused: the fake keeps its data in memory."""
    with FakeWeaviate(vector_dim=DIM) as server:
        async with open_weaviate(weaviate_settings(server, **_TIMEOUT), **store_args) as store:
            yield store


def make_weaviate_fake(request: Any) -> AbstractAsyncContextManager[WeaviateStore]:
    """`weaviate_fake_store` in the contract suite's factory shape (a pytest request)."""
    return weaviate_fake_store(request.getfixturevalue("tmp_path"))


def reopen_weaviate(store: Any) -> AbstractAsyncContextManager[WeaviateStore]:
    """Another store on the same server: what a second process (or a restart) sees."""
    assert isinstance(store, WeaviateStore)
    return open_weaviate(store.settings)


@asynccontextmanager
async def open_weaviate(settings: Settings, **store_args: Any) -> AsyncIterator[WeaviateStore]:
    store = WeaviateStore(settings, **store_args)
    await store.start()
    try:
        yield store
    finally:
        await store.aclose()


# ---------------------------------------------------------------------------- real Weaviate
WEAVIATE_IMAGE = "semitechnologies/weaviate:1.32.0"  # the version the fake reports
_container: Any = None


def docker_reason() -> str | None:
    """Why no container can be started here, or None."""
    fallback = "The wire-format fake covers the backend otherwise."
    if not os.environ.get("DOCKER_HOST") and not os.path.exists("/var/run/docker.sock"):
        return f"no Docker engine (no DOCKER_HOST, no /var/run/docker.sock). {fallback}"
    try:
        import docker

        client = docker.from_env(timeout=3)
        try:
            client.ping()
        finally:
            client.close()
    except Exception as exc:  # noqa: BLE001 - any failure means: no engine to use
        return f"no Docker engine reachable ({type(exc).__name__}: {exc}). {fallback}"
    return None


def weaviate_container() -> Any:
    """One real Weaviate per test run, started on first use, stopped at exit."""
    global _container
    if _container is None:
        import atexit

        from testcontainers.community.weaviate import WeaviateContainer

        container = WeaviateContainer(WEAVIATE_IMAGE)
        container.start()
        atexit.register(container.stop)
        _container = container
    return _container


def container_settings(container: Any, **over: Any) -> Settings:
    values: dict[str, Any] = {
        "weaviate_url": f"http://{container.get_http_host()}:{container.get_http_port()}",
        "weaviate_grpc_port": int(container.get_grpc_port()),
        "pattern_store_timeout_seconds": 10.0,
    }
    values.update(over)
    return make_settings(**values)


def make_weaviate_container(request: Any) -> AbstractAsyncContextManager[WeaviateStore]:
    return weaviate_container_store(request.getfixturevalue("tmp_path"))


@asynccontextmanager
async def weaviate_container_store(tmp_path: Path) -> AsyncIterator[WeaviateStore]:
    """The Weaviate backend against a real server in Docker (register it under a `docker`
    mark): its collections are dropped first, so each store starts empty."""
    import pytest

    reason = docker_reason()
    if reason is not None:
        pytest.skip(reason)
    settings = container_settings(weaviate_container())
    await drop_collections(settings)
    async with open_weaviate(settings) as store:
        yield store


async def drop_collections(settings: Settings) -> None:
    """Delete the store's collections on the server the settings point at."""
    import weaviate

    from services.patterns.weaviate_schema import LAYOUTS

    url = urlsplit(settings.weaviate_url or "")
    assert url.hostname and url.port
    client = weaviate.use_async_with_custom(
        http_host=url.hostname,
        http_port=url.port,
        http_secure=False,
        grpc_host=url.hostname,
        grpc_port=settings.weaviate_grpc_port,
        grpc_secure=False,
        skip_init_checks=True,
    )
    await client.connect()
    try:
        for layout in LAYOUTS.values():
            await client.collections.delete(layout.name)
    finally:
        await client.close()
