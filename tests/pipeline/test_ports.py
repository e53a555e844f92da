"""A port that is taken is a clear start-up error, and /health says whose it is."""

from __future__ import annotations

import asyncio
import json
import os
import socket
import urllib.request

import pytest

from services.bridge.inbox import Inbox
from services.bridge.server import overall, serve
from services.kit.ops.errors import StartupError
from services.kit.ops.http import HealthHTTP
from tests.support import HANG_GUARD_S


async def test_a_second_grpc_bind_on_the_same_port_fails(stack):
    # grpc binds with SO_REUSEPORT unless told not to; then this would silently share
    with pytest.raises(StartupError, match=f"gRPC port {stack.grpc_port} .*already in use"):
        await serve(stack.rt, stack.registry, "second", stack.grpc_port)


async def test_http_port_in_use_is_a_start_up_error():
    async def components():
        return {}

    with socket.socket() as held:
        held.bind(("0.0.0.0", 0))
        held.listen()
        port = held.getsockname()[1]
        http = HealthHTTP(components, overall, "svc", "v1", "inst")
        with pytest.raises(StartupError, match=f"HTTP port {port} .*already in use"):
            await http.start(port)


async def test_health_names_the_instance_and_process(stack):
    def get():
        with urllib.request.urlopen(f"http://127.0.0.1:{stack.http_port}/health") as r:
            return json.loads(r.read())

    body = await asyncio.to_thread(get)
    assert body["instance"] == stack.instance == "test-a"
    assert body["pid"] == os.getpid()


async def test_a_reply_reader_stopped_right_after_start_stops(stack):
    """A bridge that fails to start stops its reply reader right after starting it. A
    cancel landing as the reader's first position lookup completed was lost (3.11's
    wait_for drops it), and the process hung instead of exiting with its start-up error."""
    for i in range(30):
        inbox = Inbox(stack.rt, f"stop-at-once-{i}")
        await inbox.start()
        await asyncio.sleep(i % 5 * 0.01)  # stop at different points of its first fetch
        stop = asyncio.ensure_future(inbox.stop())
        # a guard that turns a hang into a failure (a stop takes milliseconds); not
        # wait_for, whose cancel the hung stop would swallow as well
        done, _ = await asyncio.wait({stop}, timeout=HANG_GUARD_S)
        assert done, f"reply reader {i} never stopped"
