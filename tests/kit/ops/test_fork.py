"""Processes that run gRPC can still start children: a forked child never aborts in
gRPC's poller before its exec (seen as "service bridge exited during start-up with code
-6" when a supervisor in a test process started its services)."""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap

from tests.support import HANG_GUARD_S

SCRIPT = textwrap.dedent(
    """
    import asyncio, subprocess
    import services  # every entry point imports the package first
    import grpc

    async def main():
        channel = grpc.aio.insecure_channel("127.0.0.1:9")  # gRPC's threads now run
        try:
            await asyncio.wait_for(channel.channel_ready(), 0.3)
        except Exception:
            pass
        codes = []
        for _ in range(60):  # as the supervisor starts services: Popen with preexec_fn
            p = subprocess.Popen(["true"], preexec_fn=lambda: None)
            codes.append(p.wait())
        print(sorted(set(codes)))

    asyncio.run(main())
    """
)


def test_children_of_a_process_running_grpc_start_cleanly():
    env = {k: v for k, v in os.environ.items() if k != "GRPC_ENABLE_FORK_SUPPORT"}
    out = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        capture_output=True,
        text=True,
        timeout=HANG_GUARD_S,
        env=env,
    )
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip() == "[0]", out.stdout + out.stderr  # no child killed by a signal
    assert "epoll_wait error" not in out.stderr, out.stderr
