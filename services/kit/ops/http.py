"""The HTTP side: /health, /health/live, /health/ready and /metrics, on plain asyncio.

Four GET routes do not justify a web framework. When the services run as several
processes (`testdata run`), PROMETHEUS_MULTIPROC_DIR makes /metrics aggregate them all.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import json
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from services.kit.ops.errors import StartupError
from services.kit.ops.metrics import REGISTRY
from services.kit.ops.procstate import FROZEN

log = logging.getLogger("testdata.http")
#: Connections served at once; one more is answered 503 and closed.
MAX_CONNECTIONS = 64
#: Seconds a client has to send its request (and to read its answer).
READ_TIMEOUT_S = 5.0
#: Health components are waited for this long on the service's loop.
COMPONENTS_TIMEOUT_S = 5.0

Components = Callable[[], Awaitable[Mapping[str, str]]]
Overall = Callable[[Mapping[str, str]], str]


def metrics_payload() -> bytes:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        registry = CollectorRegistry()
        MultiProcessCollector(registry)
        return generate_latest(registry)
    return generate_latest(REGISTRY)


class HealthHTTP:
    """/health reports `instance` and `pid` so a supervisor polling a port can tell its own
    bridge from another instance that holds that port.

    Served from a thread of its own, with its own event loop: seen, a flood of HTTP
    requests on the bridge's loop cost unary p99 6x, and slow clients held 500
    connections. Here at most MAX_CONNECTIONS are open at once (one more is answered 503
    and closed at once); each has READ_TIMEOUT_S to send its request. /metrics and
    /health/live never touch the service's loop; the health components are computed on it
    one computation at a time, and a loop that does not answer within COMPONENTS_TIMEOUT_S
    is itself the finding (`event_loop: unhealthy: frozen`)."""

    def __init__(
        self,
        components: Components,
        overall: Overall,
        service: str,
        version: str,
        instance: str = "",
    ):
        self.components = components
        self.overall = overall
        self.service = service
        self.version = version
        self.instance = instance
        self.server: asyncio.Server | None = None
        self.port = 0
        self.open = 0  # connections being served now
        self._owner: asyncio.AbstractEventLoop | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._stop: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._inflight: asyncio.Future[Mapping[str, str]] | None = None

    async def start(self, port: int, host: str = "127.0.0.1") -> int:
        self._owner = asyncio.get_running_loop()
        self._thread = threading.Thread(
            target=self._serve, args=(host, port), name="health-http", daemon=True
        )
        self._thread.start()
        await asyncio.to_thread(self._started.wait)
        if self._error is not None:
            raise self._error
        return self.port

    def _serve(self, host: str, port: int) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            loop.run_until_complete(self._run(host, port))
        finally:
            self._started.set()  # also when the start failed
            loop.close()

    async def _run(self, host: str, port: int) -> None:
        self._stop = asyncio.Event()
        try:
            self.server = await asyncio.start_server(self._handle, host, port, backlog=128)
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else str(exc)
            self._error = StartupError(f"HTTP port {port} on {host} is unavailable: {reason}")
            return
        self.port = int(self.server.sockets[0].getsockname()[1])
        self._started.set()
        await self._stop.wait()
        self.server.close()
        await self.server.wait_closed()

    async def stop(self) -> None:
        if self._loop is not None and self._stop is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # its loop closed meanwhile
                self._loop.call_soon_threadsafe(self._stop.set)
        if self._thread is not None:
            await asyncio.to_thread(self._thread.join)

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if self.open >= MAX_CONNECTIONS:  # bounded: refuse at once, read nothing
            with contextlib.suppress(OSError):
                writer.write(_response(503, "text/plain", b"busy: too many connections"))
                writer.close()
            return
        self.open += 1
        try:
            try:
                line = await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)
                while (await asyncio.wait_for(reader.readline(), READ_TIMEOUT_S)) not in (
                    b"\r\n",
                    b"\n",
                    b"",
                ):
                    pass
            except (TimeoutError, OSError, ValueError):
                return  # too slow, or gone: nothing to answer
            method, path, *_ = [*line.decode("latin-1").split(), "", ""]
            try:
                status, ctype, body = await self._route(method, path.split("?")[0])
            except Exception:
                log.exception("answering %s %s failed", method, path)
                status, ctype, body = 500, "text/plain", b"internal error; see the log"
            with contextlib.suppress(OSError):
                writer.write(_response(status, ctype, body))
                await asyncio.wait_for(writer.drain(), READ_TIMEOUT_S)
        except TimeoutError:
            pass  # a client that does not read its answer
        finally:
            self.open -= 1
            writer.close()

    async def _components(self) -> Mapping[str, str]:
        """The service's components, computed on its own loop. One computation at a time:
        requests arriving while one runs share its answer, so a flood of /health costs
        the service one computation after another, never many at once."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._compute())
        return await asyncio.shield(self._inflight)

    async def _compute(self) -> Mapping[str, str]:
        assert self._owner is not None
        asked = asyncio.run_coroutine_threadsafe(_as_dict(self.components), self._owner)
        try:
            return await asyncio.wait_for(asyncio.wrap_future(asked), COMPONENTS_TIMEOUT_S)
        except TimeoutError:
            asked.cancel()
            return {
                "event_loop": f"{FROZEN}: the service's event loop did not answer within "
                f"{COMPONENTS_TIMEOUT_S:g} s"
            }

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"GET only"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, metrics_payload()
        if path == "/health/live":
            return 200, "application/json", b'{"status": "alive"}'
        if path in ("/health", "/health/ready"):
            comps = dict(await self._components())
            status = self.overall(comps)
            body = json.dumps(
                {
                    "status": status,
                    "service": self.service,
                    "version": self.version,
                    "instance": self.instance,
                    "pid": os.getpid(),
                    "components": comps,
                }
            ).encode()
            code = 503 if path == "/health/ready" and status == "unhealthy" else 200
            return code, "application/json", body
        return 404, "text/plain", b"not found"


async def _as_dict(components: Components) -> Mapping[str, str]:
    return dict(await components())


def _response(status: int, ctype: str, body: bytes) -> bytes:
    head = (
        f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: {ctype}\r\n"
        f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
    )
    return head.encode() + body


_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
