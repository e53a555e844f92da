"""Runs every service in its own process against one broker, and keeps them running.

The embedded broker (an Apache Kafka child process, its logs in KAFKA_DATA_DIR) belongs
to the supervisor's process, the services reach it over TCP like any client, and their Prometheus
metrics are aggregated through PROMETHEUS_MULTIPROC_DIR for the bridge's /metrics.

A service process that dies is restarted (RestartPolicy's backoff); the broker and the
other services are left alone, because the services are at-least-once consumers that
resume from committed offsets: a restarted generator finishes the streams the dead one
left. What the supervisor sees goes to a state file that the bridge reports in /health.
"""

from __future__ import annotations

import contextlib
import errno
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
import uuid
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

from services.deployables import BRIDGE, SERVICES
from services.kit.broker.embedded import EmbeddedBroker, death_signal
from services.kit.broker.errors import BrokerStartFailed, StartCancelled
from services.kit.ops.procstate import (
    CRASH_LOOPING,
    EXIT_INTERRUPTED,
    EXIT_STARTUP,
    EXIT_TEMPFAIL,
    EXIT_UNAVAILABLE,
    RESTARTING,
    RUNNING,
    STATE_ENV,
    ProcState,
    Ready,
    read_ready,
    startup_error_path,
    write_states,
)
from services.kit.ops.restart import RestartPolicy
from services.kit.settings import Settings
from services.kit.wire.topics import Topics

log = logging.getLogger("testdata.supervisor")
#: After a failed restart of the embedded broker, the next try waits this long.
BROKER_RETRY_SECONDS = 5.0


class StartupFailed(RuntimeError):
    """`testdata run` cannot come up; the message names the service and the cause, and
    `code` is the exit code of that cause (a service's own exit code when it exited)."""

    def __init__(self, message: str, code: int = 1):
        super().__init__(message)
        self.code = code


class StartupInterrupted(StartupFailed):
    """Asked to stop (Ctrl-C) before every service was up: not a failure."""

    def __init__(self) -> None:
        super().__init__("interrupted during start-up", EXIT_INTERRUPTED)


@dataclass
class Service:
    """One supervised service: its command, its current process, its restart history."""

    name: str
    argv: list[str]
    env: dict[str, str]
    policy: RestartPolicy
    proc: subprocess.Popen[bytes] | None = None
    restart_at: float | None = None  # monotonic time of the pending restart
    restarts: int = 0
    last_exit: int | None = None
    since: float = field(default_factory=time.time)

    def spawn(self, now: float) -> int:
        # Its own session: a terminal's Ctrl-C is the supervisor's to act on (services
        # first, then the broker); it dies with the supervisor all the same.
        self.proc = subprocess.Popen(
            self.argv, env=self.env, start_new_session=True, preexec_fn=death_signal()
        )
        self.policy.started(now)
        self.restart_at = None
        self.since = time.time()
        return self.proc.pid

    def state(self) -> ProcState:
        if self.policy.crash_looping:
            state = CRASH_LOOPING
        else:
            state = RESTARTING if self.proc is None else RUNNING
        return ProcState(
            state=state,
            pid=self.proc.pid if self.proc is not None else None,
            restarts=self.restarts,
            last_exit=self.last_exit,
            since=self.since,
            exits=self.policy.exits,
            stable_s=self.policy.stable_after_s,
        )


class Supervisor:
    """Embedded broker (unless a bootstrap is configured) plus one process per service.

    `start()` returns once every service has joined its groups and *this* supervisor's
    bridge answers /health/ready; `watch()`
    (or `step()` called periodically) restarts what dies; `stop()` ends the services,
    then the broker.
    """

    def __init__(
        self,
        settings: Settings,
        extra_env: Mapping[str, str] | None = None,
        *,
        service_env: Mapping[str, Mapping[str, str]] | None = None,
        policy: Callable[[], RestartPolicy] = RestartPolicy,
    ):
        self.settings = settings
        self.extra_env = dict(extra_env or {})
        self.service_env = service_env or {}
        self.policy = policy
        self.broker: EmbeddedBroker | None = None
        self.bootstrap = settings.kafka_bootstrap_servers
        # Names this run's bridge, so readiness cannot be confused with another instance.
        self.instance = settings.instance_id or f"run-{uuid.uuid4().hex[:12]}"
        # Every process of the run signs and checks result chunks with one key (kit/signing.py).
        key = settings.signing_key()
        self.signing_key = key.decode() if key else secrets.token_hex(32)
        self.services: dict[str, Service] = {}
        self.run_dir: Path | None = None
        #: what the start found damaged and repaired under the data directory, besides
        #: the broker's own (the banner and /health's data_dir say it)
        self.data_notes: list[str] = []
        #: the services start() still waits for: an exit of one of them fails the start
        self._starting: set[str] = set()
        #: the bridge's ports as it reported them (GRPC_PORT/HTTP_PORT 0 pick free ones)
        self.grpc_port: int | None = None
        self.http_port: int | None = None
        self._stopped = False
        self.broker_restarts = 0
        self._broker_retry_at = 0.0

    # ---- lifecycle ---------------------------------------------------------------------
    def start(
        self,
        ready_timeout: float | None = None,
        cancelled: Callable[[], bool] = lambda: False,
        *,
        wait_for: Iterable[str] | None = None,
    ) -> Supervisor:
        """Check the ports, start the broker and every service, and return once each of
        `wait_for` (default: all) has joined its groups and the bridge answers ready.

        Waits as long as they make progress; fails (StartupFailed, naming the service and
        the cause) when one exits, when a port is taken, when the broker never answers,
        or after `ready_timeout` seconds (default READY_TIMEOUT_SECONDS; 0: no bound).
        """
        waited = list(SERVICES if wait_for is None else wait_for)
        timeout = self.settings.ready_timeout_seconds if ready_timeout is None else ready_timeout
        try:
            self._check_ports()  # before anything starts: a taken port is said at once
            if not self.bootstrap:
                self._start_broker(cancelled)
            self.run_dir = Path(tempfile.mkdtemp(prefix="testdata-run-"))
            self.metrics_dir.mkdir()
            env = self._env()
            now = time.monotonic()
            for name in SERVICES:
                own = {**env, **self.service_env.get(name, {})}
                self.services[name] = Service(name, self._argv(name), own, self.policy())
                self.services[name].spawn(now)
            self._write_state()
            self._wait_ready(waited, timeout, cancelled)
        except BaseException:
            self.stop()
            raise
        return self

    def _start_broker(self, cancelled: Callable[[], bool]) -> None:
        fixed = Topics(self.settings.topic_prefix).fixed()
        self.broker = EmbeddedBroker(
            {t.name: t.partitions for t in fixed},
            topic_configs={t.name: t.configs() for t in fixed},
            data_dir=self.settings.kafka_data_dir or None,
            port=self.settings.kafka_port,
            port_fallback=True,  # 9092 preferred; taken, another (the run file says it)
            heap_mb=self.settings.kafka_heap_mb,
        )
        try:
            self.broker.start(cancelled)
        except StartCancelled:
            raise StartupInterrupted() from None
        except RuntimeError as exc:  # BrokerStartFailed, KafkaNotInstalled, DirInUse
            raise StartupFailed(f"embedded Kafka broker: {exc}", EXIT_UNAVAILABLE) from exc
        self.bootstrap = self.broker.bootstrap_servers

    def _check_ports(self) -> None:
        """The bridge's ports can be bound now (a check in a few milliseconds, before the
        broker and six processes start only to find one taken)."""
        host, s = self.settings.bind_host, self.settings
        ports = [("gRPC", "GRPC_PORT", s.grpc_port), ("HTTP", "HTTP_PORT", s.http_port)]
        if s.grpc_port and s.grpc_port == s.http_port:
            raise StartupFailed(f"GRPC_PORT and HTTP_PORT are both {s.grpc_port}", EXIT_STARTUP)
        for what, env, port in ports:
            if not port:
                continue  # 0: a free one, picked by the bridge
            try:
                with socket.create_server((host, port)):
                    pass
            except OSError as exc:
                why = "already in use" if exc.errno == errno.EADDRINUSE else exc.strerror
                raise StartupFailed(
                    f"{what} port {port} on {host} is {why} (another testdata run?); "
                    f"stop it, or choose another with {env} or --{what.lower()}-port",
                    EXIT_STARTUP,
                ) from None

    def watch(self, should_stop: Callable[[], bool], interval_s: float = 0.2) -> None:
        """The supervisor's main loop: restart what dies until asked to stop."""
        while not should_stop():
            self.step()
            time.sleep(interval_s)

    def step(self) -> None:
        """One round: note exited processes, start the restarts that are due, publish."""
        if self._stopped:
            return
        now = time.monotonic()
        self._check_broker(now)
        changed = [self._check(svc, now) for svc in self.services.values()]
        if any(changed):
            self._write_state()

    def stop(self) -> None:
        """Services first (they stop consuming and flush through the broker), then it."""
        if self._stopped:
            return
        self._stopped = True
        procs = [s.proc for s in self.services.values() if s.proc is not None]
        for p in procs:
            if p.poll() is None:
                p.terminate()
        for p in procs:
            try:
                p.wait(self.settings.stop_timeout_seconds)
            except subprocess.TimeoutExpired:
                log.warning("service pid %d did not stop; killed", p.pid)
                p.kill()
                p.wait()
        if self.broker is not None:
            self.broker.stop()
        if self.run_dir is not None:
            shutil.rmtree(self.run_dir, ignore_errors=True)

    def kill(self) -> None:
        """Force: SIGKILL every service and the broker now (a second Ctrl-C). A `stop()`
        waiting on them returns at once; Kafka recovers its logs at the next start."""
        procs = [s.proc for s in self.services.values() if s.proc is not None]
        if self.broker is not None and self.broker.pid is not None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.broker.pid, signal.SIGKILL)
        for p in procs:
            with contextlib.suppress(ProcessLookupError):
                p.kill()

    def __enter__(self) -> Supervisor:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # ---- views -------------------------------------------------------------------------
    @property
    def state_path(self) -> Path:
        assert self.run_dir is not None, "not started"
        return self.run_dir / "state.json"

    @property
    def metrics_dir(self) -> Path:
        assert self.run_dir is not None, "not started"
        return self.run_dir / "metrics"

    def pid(self, name: str) -> int | None:
        """The service's current process id; None while it waits for a restart."""
        proc = self.services[name].proc
        return proc.pid if proc is not None else None

    def states(self) -> dict[str, ProcState]:
        return {name: svc.state() for name, svc in self.services.items()}

    # ---- internals ---------------------------------------------------------------------
    def _env(self) -> dict[str, str]:
        return {
            **os.environ,
            **self.extra_env,
            "KAFKA_BOOTSTRAP_SERVERS": self.bootstrap,
            "PROMETHEUS_MULTIPROC_DIR": str(self.metrics_dir),
            STATE_ENV: str(self.state_path),
            "INSTANCE_ID": self.instance,
            "CHUNK_SIGNING_KEY": self.signing_key,
        }

    def _argv(self, name: str) -> list[str]:
        argv = [sys.executable, "-m", "services.cli", "service", name]
        if name == "bridge":
            ports = ["--grpc-port", str(self.settings.grpc_port)]
            argv += [*ports, "--http-port", str(self.settings.http_port)]
        return argv

    def _check_broker(self, now: float) -> None:
        """The embedded broker is supervised like a service: one that died is started
        again on its port and data directory (its records come back from its log; the
        services reconnect to the address they know). Meanwhile calls in flight fail
        with UNAVAILABLE and a retry hint (the bridge watches the broker). The restart
        blocks this loop: nothing else can work without the broker anyway."""
        broker = self.broker
        if broker is None or broker.exited is None or now < self._broker_retry_at:
            return
        log.error("the embedded Kafka broker exited (status %s); restarting it", broker.exited)
        try:
            broker.restart()
            self.broker_restarts += 1
        except BrokerStartFailed as exc:
            self._broker_retry_at = time.monotonic() + BROKER_RETRY_SECONDS
            log.error(
                "the embedded Kafka broker did not restart: %s; trying again in %.0f s",
                exc,
                BROKER_RETRY_SECONDS,
            )

    def _check(self, svc: Service, now: float) -> bool:
        """Advance one service; True when its reported state changed."""
        if svc.proc is not None:
            code = svc.proc.poll()
            if code is None:
                return svc.policy.settle(now)  # a long run ends a crash-looping state
            self._exited(svc, code, now)
            return True
        if svc.restart_at is not None and now >= svc.restart_at:
            pid = svc.spawn(now)
            svc.restarts += 1
            log.info("service %s restarted (pid %d)", svc.name, pid)
            return True
        return False

    def _exited(self, svc: Service, code: int, now: float) -> None:
        assert svc.proc is not None
        pid, svc.proc = svc.proc.pid, None
        svc.last_exit, svc.since = code, time.time()
        self._forget_metrics(pid)
        if svc.name in self._starting:  # not up yet: a restart would only hide the cause
            raise StartupFailed(self._startup_message(svc, code), code)
        delay = svc.policy.exited(now)
        svc.restart_at = now + delay
        looping = " (crash-looping)" if svc.policy.crash_looping else ""
        log.log(
            logging.ERROR if looping else logging.WARNING,
            "service %s (pid %d) exited with code %d%s; restarting in %.1f s",
            svc.name,
            pid,
            code,
            looping,
            delay,
        )

    def _startup_message(self, svc: Service, code: int) -> str:
        with contextlib.suppress(OSError):
            text = startup_error_path(self.state_path, svc.name).read_text().strip()
            if text:
                return f"service {svc.name} cannot start: {text}"
        return f"service {svc.name} exited during start-up with code {code} (see its log above)"

    def _forget_metrics(self, pid: int) -> None:
        """Drop a dead process's live gauges from the aggregated /metrics."""
        from prometheus_client import multiprocess

        with contextlib.suppress(OSError):
            multiprocess.mark_process_dead(pid, str(self.metrics_dir))

    def _write_state(self) -> None:
        data = "; ".join(
            n
            for n in (self.broker.salvaged.summary() if self.broker else "", *self.data_notes)
            if n
        )
        write_states(self.state_path, self.states(), data)

    def _wait_ready(self, names: list[str], timeout: float, cancelled: Callable[[], bool]) -> None:
        """Until every service of `names` has reported ready and OUR bridge answers
        /health/ready. A service that exits meanwhile fails the start with its reason."""
        deadline = time.monotonic() + timeout if timeout else float("inf")
        self._starting = set(names)
        try:
            while True:
                if cancelled():
                    raise StartupInterrupted()
                self.step()  # raises StartupFailed when a waited-for service exits
                waiting = [n for n in names if not self._is_ready(n)]
                if not waiting:
                    return
                if time.monotonic() > deadline:
                    raise StartupFailed(
                        f"not ready after READY_TIMEOUT_SECONDS={timeout:g}: "
                        f"{', '.join(waiting)} still starting",
                        EXIT_TEMPFAIL,
                    )
                time.sleep(0.1)
        finally:
            self._starting = set()

    def ready(self, name: str) -> Ready | None:
        """What the service's current process reported when it became ready."""
        svc, path = self.services.get(name), self.state_path
        if svc is None or svc.proc is None:
            return None
        found = read_ready(path, name)
        return found if found is not None and found.pid == svc.proc.pid else None

    def _is_ready(self, name: str) -> bool:
        found = self.ready(name)
        if found is None:
            return False
        if name != BRIDGE:
            return True
        self.grpc_port, self.http_port = found.grpc_port, found.http_port
        return self._bridge_answers(found)

    def _bridge_answers(self, found: Ready) -> bool:
        """OUR bridge answers /health/ready: its instance and pid, not whoever has the port."""
        url = f"http://127.0.0.1:{found.http_port}/health/ready"
        try:
            with urllib.request.urlopen(url, timeout=5) as resp:
                body = json.loads(resp.read())
        except (OSError, ValueError):
            return False
        return (
            isinstance(body, dict)
            and body.get("instance") == self.instance
            and body.get("pid") == found.pid
        )
