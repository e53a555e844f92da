"""The HTTP endpoints run apart from the service's event loop, with bounded connections.

Seen: /health and /metrics on the bridge's loop, so a flood of HTTP requests cost unary
p99 6x and slow clients could hold 500 connections; and a frozen loop went unnoticed."""

from __future__ import annotations

import asyncio
import json
import socket
import threading
import time
import urllib.error
import urllib.request

from services.bridge.server import overall
from services.kit.ops import http
from services.kit.ops.http import HealthHTTP
from tests.support import HANG_GUARD_S, wait_until


def get(port: int, path: str) -> tuple[int, bytes]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=HANG_GUARD_S) as r:
            return r.status, r.read()
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read()


async def served() -> HealthHTTP:
    async def components():
        return {"kafka": "healthy"}

    server = HealthHTTP(components, overall, "svc", "v1", "inst")
    await server.start(0)
    return server


async def test_a_blocked_service_loop_still_answers_liveness_and_health_names_it(monkeypatch):
    monkeypatch.setattr(http, "COMPONENTS_TIMEOUT_S", 0.5)
    server = await served()
    try:
        assert (await asyncio.to_thread(get, server.port, "/health/ready"))[0] == 200
        answers: dict[str, tuple[int, bytes]] = {}
        asked = threading.Thread(
            target=lambda: answers.update(
                live=get(server.port, "/health/live"),
                metrics=get(server.port, "/metrics"),
                ready=get(server.port, "/health/ready"),
            )
        )
        asked.start()
        deadline = time.monotonic() + HANG_GUARD_S
        while asked.is_alive() and time.monotonic() < deadline:
            time.sleep(0.05)  # this loop is blocked (a frozen service) while they are asked
        asked.join()
        assert answers["live"][0] == 200 and answers["metrics"][0] == 200
        code, body = answers["ready"]
        assert code == 503
        assert json.loads(body)["components"]["event_loop"].startswith("unhealthy: frozen")
    finally:
        await server.stop()


async def test_connections_beyond_the_limit_are_refused_at_once(monkeypatch):
    monkeypatch.setattr(http, "MAX_CONNECTIONS", 4)
    server = await served()
    idle = [socket.create_connection(("127.0.0.1", server.port)) for _ in range(4)]
    try:
        await wait_until(lambda: server.open == 4, "the server taking all four")
        code, body = await asyncio.to_thread(get, server.port, "/health/live")
        assert code == 503 and b"too many connections" in body
    finally:
        for s in idle:
            s.close()
    await wait_until(lambda: server.open == 0, "the server letting them go")
    assert (await asyncio.to_thread(get, server.port, "/health/live"))[0] == 200
    await server.stop()


async def test_a_disk_below_its_free_space_floor_fails_readiness_naming_it(tmp_path):
    """Seen: a full disk killed a writer while health stayed green. The floor is set
    above what this disk has free, so it is 'full' by the service's own measure."""
    from services.kit.ops.disk import disk_probe, free_mb

    free = free_mb(tmp_path)
    assert free is not None
    comps = await disk_probe([str(tmp_path / "kafka")], free + 1_000_000)()
    assert comps["disk"].startswith("unhealthy: disk full: ")
    assert str(tmp_path) in comps["disk"] and "MIN_FREE_DISK_MB" in comps["disk"]
    assert overall({"kafka": "healthy", **comps}) == "unhealthy"
    assert free_mb(tmp_path.parent / "proc-like") is not None
    assert await disk_probe(["/proc/no-such-dir/x"], 1e12)() == {
        "disk": "healthy: no data directory on a disk"  # /proc holds no data: not judged
    }
    comps = await disk_probe([str(tmp_path)], 0)()
    assert comps["disk"].startswith("healthy: ") and overall({"kafka": "healthy", **comps}) == (
        "healthy"
    )
