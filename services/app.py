"""The deployables and their lifecycle: `App(settings, bootstrap).start(["router", ...])`.

`SERVICES` names every deployable as the command line does (`testdata service <name>`);
`PATHS` maps each generation path to its service class. Adding a path is one package with
a `PathService` subclass and one entry in `PATHS`. The learner consumes what every path
reports on the outcomes topic. `testdata run` puts each service in its
own process (both cores work); tests run several in one event loop.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from typing import TYPE_CHECKING

import grpc

from services.core.models import GenerationPath
from services.core.pools import GENERATOR_VERSION, get_pools
from services.core.registry import SchemaRegistry
from services.deployables import BRIDGE, LEARNER, PATH_SERVICES, SERVICES
from services.hybrid.service import HybridService
from services.kit.ops.disk import disk_probe
from services.kit.ops.http import HealthHTTP
from services.kit.ops.procstate import supervisor_probes
from services.kit.path.generation import Availability, PathService
from services.kit.redis.keystore import KeyStore
from services.kit.runtime.control import ControlListener, DeliveryGuard
from services.kit.runtime.deliveries import Attempts, window_for
from services.kit.runtime.kafka import ensure_topics_exist
from services.kit.runtime.stream import Runtime, Subscriber
from services.kit.settings import Settings
from services.learner.service import LearnerService
from services.llm.service import LLMService
from services.patterns.availability import StoreAvailability
from services.patterns.scope import Scope
from services.rag.service import RagService
from services.router.service import RouterService
from services.traditional.service import TraditionalService

if TYPE_CHECKING:
    from services.bridge.server import TestDataServicer

log = logging.getLogger("testdata.app")
HealthProbe = Callable[[], Awaitable[Mapping[str, str]]]

#: Every generation path that has a service, by the path it serves.
PATHS: dict[GenerationPath, type[PathService]] = {
    GenerationPath.TRADITIONAL: TraditionalService,
    GenerationPath.LLM: LLMService,
    GenerationPath.RAG: RagService,
    GenerationPath.HYBRID: HybridService,
}
if tuple(p.value for p in PATHS) != PATH_SERVICES:  # the names the CLI knows without us
    raise ImportError(f"services.deployables.PATH_SERVICES must list {[p.value for p in PATHS]}")


async def ensure_catalog_topics(runtime: Runtime) -> None:
    """Every fixed topic of the catalogue, with its partition count where we can choose."""
    fixed = runtime.topics.fixed()
    await ensure_topics_exist(
        runtime.bootstrap,
        {t.name: t.partitions for t in fixed},
        replication_factor=max(t.replication for t in fixed),
        configs={t.name: t.configs() for t in fixed},
    )


async def _joined(sub: Subscriber, task: asyncio.Task[None]) -> None:
    """Until `sub` has joined its group (however long a loaded broker takes), or its task
    ended, which is then the error to start-up with."""
    ready = asyncio.ensure_future(sub.wait_ready())
    try:
        await asyncio.wait([ready, task], return_when=asyncio.FIRST_COMPLETED)
    finally:
        ready.cancel()
    if not (ready.done() and not ready.cancelled()):
        task.result()  # raises what ended it
        raise RuntimeError(f"{sub.name} stopped before joining its group")


class App:
    def __init__(self, settings: Settings, bootstrap: str):
        self.settings = settings
        self.rt = Runtime(settings, bootstrap)
        self.registry = SchemaRegistry.load()
        self.probes: dict[GenerationPath, Availability] = {}
        self.paths: list[PathService] = []
        self.subscribers: list[Subscriber] = []
        self.tasks: list[asyncio.Task[None]] = []
        self.grpc_server: grpc.aio.Server | None = None
        self.grpc_port: int | None = None
        self.servicer: TestDataServicer | None = None
        self.http: HealthHTTP | None = None
        self.http_port: int | None = None
        self.instance = settings.instance_id or uuid.uuid4().hex[:12]
        self._refresher: asyncio.Task[None] | None = None
        self.control: ControlListener | None = None  # in processes running a consumer
        self.guard: DeliveryGuard | None = None  # with it, unless MAX_DELIVERIES is 0
        self.learner: LearnerService | None = None
        self.keystore = KeyStore.from_settings(settings.redis)

    # ---- availability of the paths (one probe per path per process) --------------------
    def probe(self, path: GenerationPath) -> Availability:
        if path not in self.probes:
            self.probes[path] = PATHS[path].probe(self.settings)
        return self.probes[path]

    def availability(self) -> Mapping[GenerationPath, str | None]:
        """Per path: None when it can serve, else why not (what the router needs)."""
        return {
            p: self.probe(p).reason if p in PATHS else f"no {p.value} path service in this release"
            for p in GenerationPath
        }

    async def _refresh_probes(self) -> None:
        """The router routes to a path only while its probe says it can serve."""
        while True:
            await asyncio.sleep(self.settings.llm_health_interval_seconds)
            for probe in list(self.probes.values()):
                try:
                    await probe.refresh()
                except Exception:
                    log.warning("availability probe failed", exc_info=True)

    def pattern_gap(self, scope: Scope) -> str | None:
        """Why the pattern store cannot serve requests of `scope` (None if it can), from
        the RAG path's cached counts: the router never waits on the store."""
        probe = self.probe(GenerationPath.RAG) if GenerationPath.RAG in PATHS else None
        return probe.gap(scope) if isinstance(probe, StoreAvailability) else None

    def _probe_components(self) -> list[HealthProbe]:
        """What the bridge's HealthCheck reports besides itself: the paths' probes, and
        the learner when it runs in this process."""
        probes: list[HealthProbe] = [self.probe(p).components for p in PATHS]
        if self.learner is not None:
            probes.append(self.learner.components)
        return probes

    # ---- lifecycle -------------------------------------------------------------------
    def _listener(self) -> ControlListener:
        """The process's one control listener (and delivery guard), made on first use."""
        if self.control is None:
            s = self.settings
            attempts = (
                Attempts(window_for(s.generation_budget_seconds)) if s.max_deliveries else None
            )
            self.control = ControlListener(self.rt, attempts=attempts)
            if attempts is not None:
                self.guard = DeliveryGuard(self.rt, self.control, s.max_deliveries)
        return self.control

    def _build(self, name: str) -> Subscriber:
        if name == LEARNER:  # stores outcomes until the store takes them: no delivery limit
            self.learner = LearnerService(self.rt, self.registry)
            return self.learner.subscriber()
        listener = self._listener()
        if name == "router":
            for p in PATHS:
                self.probe(p)
            sub = RouterService(
                self.rt, self.registry, self.availability, self.pattern_gap
            ).subscriber()
        else:
            path = GenerationPath(name)
            service = PATHS[path](self.rt, self.registry, self.probe(path), listener.cancellations)
            service.keystore = self.keystore
            self.paths.append(service)
            sub = service.subscriber()
        if self.guard is not None and listener.attempts is not None:
            listener.attempts.track(sub.group)
            sub.deliveries = self.guard
        return sub

    async def start(
        self, services: Iterable[str], *, grpc_port: int | None = None, http_port: int | None = None
    ) -> App:
        from services.bridge.server import overall, serve

        names = list(services)
        unknown = set(names) - set(SERVICES)
        if unknown:
            raise ValueError(f"unknown services {sorted(unknown)}; known: {list(SERVICES)}")
        get_pools()  # build value pools before the first request, not during it
        self.rt.compress = any(p.value in names for p in PATHS)
        await self.rt.start()
        await ensure_catalog_topics(self.rt)
        self.subscribers = [self._build(n) for n in names if n != BRIDGE]
        if BRIDGE in names and self.control is None:  # its janitor reads the leases
            self.control = ControlListener(self.rt)
        if self.control is not None:
            await self.control.start()
        if self.guard is not None:
            await self.guard.start()
        if self.learner is not None:
            await self.learner.start()
        for probe in self.probes.values():
            await probe.refresh()
        for sub in self.subscribers:
            self.tasks.append(asyncio.create_task(sub.run(), name=sub.name))
        if "router" in names:
            self._refresher = asyncio.create_task(self._refresh_probes(), name="path-probes")
        for sub, task in zip(self.subscribers, self.tasks, strict=True):
            await _joined(sub, task)
        components = self._components
        if BRIDGE in names:
            port = self.settings.grpc_port if grpc_port is None else grpc_port
            self.grpc_server, self.servicer, self.grpc_port = await serve(
                self.rt,
                self.registry,
                self.instance,
                port,
                [
                    *self._probe_components(),
                    *supervisor_probes(self.settings.heartbeat_stale_seconds),
                    disk_probe(
                        [
                            self.settings.data_dir,
                            self.settings.kafka_data_dir,
                            self.settings.pattern_store_path,
                        ],
                        self.settings.min_free_disk_mb,
                    ),
                ],
                host=self.settings.bind_host,
                keystore=self.keystore,
                control=self.control,
            )
            components = self.servicer.components
        if http_port is not None:
            self.http = HealthHTTP(
                components, overall, self.settings.service_name, GENERATOR_VERSION, self.instance
            )
            self.http_port = await self.http.start(http_port, self.settings.http_bind_host)
        return self

    def stuck(self) -> list[str]:
        """This process's consumers that hold lag without progress (for its heartbeat)."""
        after = self.settings.stuck_after_seconds
        return [
            f"{sub.name} {', '.join(found)}"
            for sub in self.subscribers
            if (found := sub.stuck(after))
        ]

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
            elif stuck := sub.stuck(self.settings.stuck_after_seconds):
                out[sub.name] = f"unhealthy: stuck: {'; '.join(stuck)}"
            else:
                out[sub.name] = "healthy"
        if self.control is not None:
            out["control"] = "healthy" if self.control.healthy else "unhealthy: not reading"
        if self.control is not None and self.control.attempts is not None:
            tracked = f"{len(self.control.attempts)} attempts tracked"
            ready = await self.control.caught_up(0)
            out["deliveries"] = f"healthy: {tracked}" if ready else f"catching up: {tracked}"
        for probe in self.probes.values():
            out.update(await probe.components())
        if self.learner is not None:
            out.update(await self.learner.components())
        if self.keystore.configured:  # generators' leases: degraded (runs may repeat) if down
            out["redis"] = await self.keystore.component()
        return out

    async def stop(self) -> None:
        if self._refresher is not None:
            self._refresher.cancel()
        if self.grpc_server is not None:
            await self.grpc_server.stop(grace=1)
        if self.servicer is not None:
            await self.servicer.inbox.stop()
        await self.keystore.aclose()
        if self.http is not None:
            await self.http.stop()
        for sub in self.subscribers:
            sub.stop()
        for t in self.tasks:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await asyncio.wait_for(t, 5)
        if self.guard is not None:
            await self.guard.stop()
        if self.control is not None:
            await self.control.stop()
        if self.learner is not None:
            await self.learner.aclose()
        for probe in self.probes.values():
            with contextlib.suppress(Exception):
                await probe.aclose()
        await self.rt.stop()

    async def wait(self) -> None:
        """Until a service task ends (which is a failure worth exiting for)."""
        if self.tasks:
            done, _ = await asyncio.wait(self.tasks, return_when=asyncio.FIRST_COMPLETED)
            for t in done:
                if exc := t.exception():
                    raise exc
        else:
            await asyncio.Event().wait()
