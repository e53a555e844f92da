"""A Redis for tests: a redis-server subprocess of ours on a free port (`make test`
installs the binary: scripts/install_redis.sh); never one the machine may be running."""

from __future__ import annotations

import socket
import subprocess
import tempfile
import uuid

import redis

from tests.support import output_of, wait_serving


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def answers(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_timeout=0.5).ping())
    except (redis.RedisError, OSError):
        return False


class OwnRedis:
    """`redis-server` on a free port, no persistence; `stop()` kills it."""

    def __init__(self) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        self.log = tempfile.TemporaryFile()  # noqa: SIM115 - closed by stop()
        self.proc = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--save", "", "--daemonize", "no"],
            stdout=self.log,
            stderr=subprocess.STDOUT,
        )
        try:
            wait_serving(
                lambda: answers(self.url),
                self.proc,
                f"redis-server on port {self.port}",
                lambda: output_of(self.log),
            )
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()
        self.log.close()


def session_prefix() -> str:
    return f"testdata-test-{uuid.uuid4().hex[:8]}:"
