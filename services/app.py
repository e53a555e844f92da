"""Assembles services into a running process: `App(settings, bootstrap).start([...])`.

One process may run any subset of: router, traditional, llm, bridge. `testdata run`
puts each in its own process (both cores work); tests run them in one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING

import grpc

from services.core.models import GenerationPath
from services.core.pools import GENERATOR_VERSION, get_pools
from services.core.registry import SchemaRegistry
from services.kit.http import HealthHTTP
from services.kit.kafka import ensure_topics_exist
from services.kit.procstate import supervisor_probes
from services.kit.settings import Settings
from services.kit.stream import Runtime, Subscriber

if TYPE_CHECKING:
    from services.bridge.server import TestDataServicer

log = logging.getLogger("testdata.app")
SERVICES = ("router", "traditional", "llm", "bridge")
NO_PATTERN_STORE = "no pattern store in this release (RAG paths are not built yet)"


async def ensure_catalog_topics(runtime: Runtime) -> None:
    """Every fixed topic of the catalogue, with its partition count where we can choose."""
    fixed = runtime.topics.fixed()
    await ensure_topics_exist(
        runtime.bootstrap,
        {t.name: t.partitions for t in fixed},
        replication_factor=max(t.replication for t in fixed),
        configs={t.name: t.configs() for t in fixed},
    )


class LLMAvailability:
    """Whether the LLM path can serve: configured backends, re-probed periodically."""

    def __init__(self, settings: Settings):
        from services.llm.clients import build_clients

        self.clients = build_clients(settings)
        self.interval_s = settings.llm_health_interval_seconds
        self.status: dict[str, str] = {}
        self.reason: str | None = (
            None
            if self.clients
            else "no LLM backend configured (set ANTHROPIC_API_KEY, or "
            "USE_LOCAL_LLM with VLLM_BASE_URL)"
        )
        self._checked = 0.0

    async def refresh(self) -> None:
        if not self.clients or time.monotonic() - self._checked < self.interval_s:
            return
        self._checked = time.monotonic()
        results = {}
        for c in self.clients:
            try:
                ok = await asyncio.wait_for(c.health(), 3)
                results[f"llm_{c.backend}"] = "healthy" if ok else "unhealthy: probe failed"
            except Exception as exc:  # noqa: BLE001 - unreachable backend is an answer
                results[f"llm_{c.backend}"] = f"unhealthy: {type(exc).__name__}"
        self.status = results
        healthy = [k for k, v in results.items() if v == "healthy"]
        self.reason = (
            None
            if healthy
            else "LLM backends unhealthy: " + "; ".join(f"{k} {v}" for k, v in results.items())
        )

    async def components(self) -> Mapping[str, str]:
        await self.refresh()
        if not self.clients:
            return {"llm": f"not configured: {self.reason}"}
        return self.status


class App:
    def __init__(self, settings: Settings, bootstrap: str):
        self.settings = settings
        self.rt = Runtime(settings, bootstrap)
        self.registry = SchemaRegistry.load()
        self.llm = LLMAvailability(settings)
        self.subscribers: list[Subscriber] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.grpc_server: grpc.aio.Server | None = None
        self.grpc_port: int | None = None
        self.servicer: TestDataServicer | None = None
        self.http: HealthHTTP | None = None
        self.http_port: int | None = None
        self.instance = settings.instance_id or uuid.uuid4().hex[:12]
        self._probe: asyncio.Task[None] | None = None

    def availability(self) -> Mapping[GenerationPath, str | None]:
        return {
            GenerationPath.TRADITIONAL: None,
            GenerationPath.LLM: self.llm.reason,
            GenerationPath.RAG: NO_PATTERN_STORE,
            GenerationPath.HYBRID: NO_PATTERN_STORE,
        }

    async def start(
        self, services: Iterable[str], *, grpc_port: int | None = None, http_port: int | None = None
    ) -> App:
        from services.bridge.server import overall, serve
        from services.generator.service import TraditionalService
        from services.llm.service import LLMService
        from services.router.service import RouterService

        names = list(services)
        unknown = set(names) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {SERVICES}")
        get_pools()  # build value pools before the first request, not during it
        self.rt.compress = "traditional" in names or "llm" in names
        await self.rt.start()
        await ensure_catalog_topics(self.rt)
        await self.llm.refresh()
        if "router" in names:
            self.subscribers.append(
                RouterService(self.rt, self.registry, self.availability).subscriber()
            )
        if "traditional" in names:
            self.subscribers.append(TraditionalService(self.rt, self.registry).subscriber())
        if "llm" in names:
            self.subscribers.append(LLMService(self.rt, self.registry, self.llm).subscriber())
        for sub in self.subscribers:
            self.tasks.append(asyncio.create_task(sub.run(), name=sub.name))
        if "router" in names and self.llm.clients:
            self._probe = asyncio.create_task(self._probe_llm(), name="llm-probe")
        for sub in self.subscribers:
            await sub.wait_ready()
        components = self._components
        if "bridge" in names:
            port = self.settings.grpc_port if grpc_port is None else grpc_port
            probes = [self.llm.components, *supervisor_probes()]
            self.grpc_server, self.servicer, self.grpc_port = await serve(
                self.rt, self.registry, self.instance, port, probes
            )
            components = self.servicer.components
        if http_port is not None:
            self.http = HealthHTTP(
                components, overall, self.settings.service_name, GENERATOR_VERSION, self.instance
            )
            self.http_port = await self.http.start(http_port)
        return self

    async def _probe_llm(self) -> None:
        """The router routes to the LLM path only while a backend answers its probe."""
        while True:
            await asyncio.sleep(self.llm.interval_s)
            try:
                await self.llm.refresh()
            except Exception:
                log.warning("LLM health probe failed", exc_info=True)

    async def _components(self) -> Mapping[str, str]:
        out = {
            "kafka": "healthy" if self.rt.producer else "unhealthy: not started",
            "schema_registry": f"healthy: {len(self.registry.names())} entities",
        }
        for sub, task in zip(self.subscribers, self.tasks, strict=True):
            if task.done():
                out[sub.name] = "unhealthy: stopped"
            elif not sub.healthy:
                out[sub.name] = f"unhealthy: stalled on {sorted(sub.stalled)}"
            else:
                out[sub.name] = "healthy"
        out.update(await self.llm.components())
        return out

    async def stop(self) -> None:
        if self._probe is not None:
            self._probe.cancel()
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=1)
        if self.servicer is not None:
            await self.servicer.inbox.stop()
        if self.http is not None:
            await self.http.stop()
        for sub in self.subscribers:
            sub.stop()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 5)
        await self.rt.stop()

    async def wait(self) -> None:
        """Until a service task ends (which is a failure worth exiting for)."""
        if self.tasks:
            done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if t.exception():
                    raise t.exception()  # type: ignore[misc]
        else:
            await asyncio.Event().wait()
