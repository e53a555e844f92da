"""The HTTP side: /health, /health/live, /health/ready and /metrics, on plain asyncio.

Four GET routes do not justify a web framework. When the services run as several
processes (`testdata run`), PROMETHEUS_MULTIPROC_DIR makes /metrics aggregate them all.
"""

from __future__ import annotations

import asyncio
import errno
import json
import os
from collections.abc import Awaitable, Callable, Mapping

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from prometheus_client.multiprocess import MultiProcessCollector

from services.kit.metrics import REGISTRY
from services.kit.procstate import StartupError

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
    bridge from another instance that holds that port."""

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

    async def start(self, port: int, host: str = "127.0.0.1") -> int:
        try:
            self.server = await asyncio.start_server(self._handle, host, port)
        except OSError as exc:
            reason = "already in use" if exc.errno == errno.EADDRINUSE else str(exc)
            raise StartupError(f"HTTP port {port} on {host} is unavailable: {reason}") from exc
        return int(self.server.sockets[0].getsockname()[1])

    async def stop(self) -> None:
        if self.server:
            self.server.close()
            await self.server.wait_closed()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            line = await asyncio.wait_for(reader.readline(), 5)
            while (await asyncio.wait_for(reader.readline(), 5)) not in (b"\r\n", b"\n", b""):
                pass
            method, path, *_ = [*line.decode("latin-1").split(), "", ""]
            status, ctype, body = await self._route(method, path.split("?")[0])
        except Exception as exc:  # noqa: BLE001 - answer 500 rather than drop the socket
            status, ctype, body = 500, "text/plain", f"{type(exc).__name__}: {exc}".encode()
        head = (
            f"HTTP/1.1 {status} {_REASONS.get(status, 'OK')}\r\nContent-Type: {ctype}\r\n"
            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n"
        )
        writer.write(head.encode() + body)
        await writer.drain()
        writer.close()

    async def _route(self, method: str, path: str) -> tuple[int, str, bytes]:
        if method != "GET":
            return 405, "text/plain", b"GET only"
        if path == "/metrics":
            return 200, CONTENT_TYPE_LATEST, metrics_payload()
        if path == "/health/live":
            return 200, "application/json", b'{"status": "alive"}'
        if path in ("/health", "/health/ready"):
            comps = dict(await self.components())
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


_REASONS = {
    200: "OK",
    404: "Not Found",
    405: "Method Not Allowed",
    500: "Internal Server Error",
    503: "Service Unavailable",
}
