"""Runs every service in its own process against one broker: what `make run` does.

The embedded broker (a Tansu child process) and its retention keeper belong to the
supervisor's process, the services reach it over TCP like any client, and their Prometheus
metrics are aggregated through PROMETHEUS_MULTIPROC_DIR for the bridge's /metrics.
"""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.request

from services.kit.broker import EmbeddedBroker
from services.kit.settings import Settings
from services.kit.topics import Topics

log = logging.getLogger("testdata.supervisor")
WORKERS = ("router", "traditional", "llm")


class Supervisor:
    def __init__(self, settings: Settings, extra_env: dict[str, str] | None = None):
        self.settings = settings
        self.extra_env = extra_env or {}
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = settings.kafka_bootstrap_servers
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.metrics_dir = ""

    def start(self, ready_timeout: float = 90) -> Supervisor:
        if not self.bootstrap:
            fixed = Topics(self.settings.topic_prefix).fixed()
            self.broker = EmbeddedBroker(
                {t.name: t.partitions for t in fixed},
                topic_configs={t.name: t.configs() for t in fixed},
            ).start()
            self.bootstrap = self.broker.bootstrap_servers
        self.metrics_dir = tempfile.mkdtemp(prefix="testdata-metrics-")
        env = {
            **os.environ,
            **self.extra_env,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "PROMETHEUS_MULTIPROC_DIR": self.metrics_dir,
        }
        cmd = [sys.executable, "-m", "services.cli", "service"]
        for name in WORKERS:
            self.procs[name] = subprocess.Popen([*cmd, name], env=env)
        self.procs["bridge"] = subprocess.Popen(
            [
                *cmd,
                "bridge",
                "--grpc-port",
                str(self.settings.grpc_port),
                "--http-port",
                str(self.settings.http_port),
            ],
            env=env,
        )
        try:
            self._wait_ready(ready_timeout)
        except BaseException:
            self.stop()
            raise
        return self

    def _wait_ready(self, timeout: float) -> None:
        url = f"http://127.0.0.1:{self.settings.http_port}/health/ready"
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if (failed := self.exited()) is not None:
                raise RuntimeError(f"service {failed} exited during start-up")
            with contextlib.suppress(OSError), urllib.request.urlopen(url, timeout=1) as resp:
                if resp.status == 200:
                    return
            time.sleep(0.3)
        raise RuntimeError(f"services not ready after {timeout:.0f}s ({url})")

    def exited(self) -> str | None:
        """Name of a service process that has ended, if any."""
        return next((n for n, p in self.procs.items() if p.poll() is not None), None)

    def pid(self, name: str) -> int:
        return self.procs[name].pid

    def stop(self) -> None:
        for p in self.procs.values():
            if p.poll() is None:
                p.terminate()
        for p in self.procs.values():
            with contextlib.suppress(subprocess.TimeoutExpired):
                p.wait(10)
            if p.poll() is None:
                p.kill()
        if self.broker is not None:
            self.broker.stop()
        if self.metrics_dir:
            shutil.rmtree(self.metrics_dir, ignore_errors=True)

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
