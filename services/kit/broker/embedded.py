"""Embedded Kafka broker: Apache Kafka itself (KRaft, one node, logs on disk), a child JVM.

Why: what `make run` and the tests exercise should be what users deploy. The jars are a
pinned Apache Kafka release installed by `make install` (services/kit/broker/kafkadist.py); the
broker runs as one combined broker+controller node on 127.0.0.1.

A data directory holds everything of one broker:
  kraft/               log.dirs: topic partitions, the metadata log, meta.properties
  server.properties    written at every start (the ports are chosen then)
  log4j2.properties    the broker's logging: to broker.log, rolled at 10 MB
  broker.log           the broker's own log; jvm.out: what the JVM printed itself
  owner.lock, owner    our lock on the directory and the pid holding it
Without a data directory the broker lives in a temporary one, removed at stop().

Life cycle: locked (owner.lock taken before anything is read or written; a second broker
on the same directory fails at once with DirInUse naming the holder's pid) -> formatted
(first start only: kafka.tools.StorageTool) -> spawned -> serving (its Metadata lists the
broker) -> topics created -> running -> stopped (SIGTERM: a controlled shutdown, logs
closed cleanly; SIGKILL only if that does not end). The child gets SIGTERM when the thread
that started it dies (PR_SET_DEATHSIG), so a crashed or killed owner leaves no broker
behind. Start-up waits as long as the JVM is alive and has not failed: a loaded machine
makes it slow, not broken.

Durability: producers use acks=all, so an acknowledged record is in the broker's log
(the OS page cache); the broker flushes to disk every second (log.flush.interval.ms), so
SIGKILL of any process loses nothing acknowledged and a power cut at most the last second.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import concurrent.futures
import contextlib
import ctypes
import logging
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import Any, Self, TypeVar

from services.kit.broker import kafkadist
from services.kit.broker.dirlock import DirLock
from services.kit.broker.errors import (
    BrokerStartFailed,
    DirInUse,
    KafkaNotInstalled,
    StartCancelled,
)
from services.kit.broker.salvage import Report, salvage
from services.kit.runtime.kafka import create_topics
from services.kit.wire.topics import BROKER_MAX_MESSAGE_BYTES, DEFAULT_PARTITIONS

log = logging.getLogger(__name__)

_PR_SET_DEATHSIG = 1
_T = TypeVar("_T")


def death_signal(sig: int = signal.SIGTERM) -> Callable[[], None] | None:
    """A preexec_fn that makes the child get `sig` when its parent dies (Linux only).

    libc is loaded here, in the parent: the child only calls a resolved function pointer.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_DEATHSIG, sig, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _free_ports(n: int, avoid: int = 0) -> list[int]:
    """`n` distinct free ports (none equal to `avoid`): the sockets are held open together,
    so the kernel cannot hand out one port twice (two listeners on one port fail the
    broker's config check)."""
    with contextlib.ExitStack() as stack:
        ports: list[int] = []
        while len(ports) < n:
            s = stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM))
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
            if port != avoid:
                ports.append(port)
        return ports


def _bindable(port: int) -> bool:
    """Nobody listens on 127.0.0.1:`port` right now (a check, not a reservation)."""
    try:
        with socket.create_server(("127.0.0.1", port)):
            return True
    except OSError:
        return False


def _api_versions_ok(port: int, timeout: float) -> bool:
    """One Kafka ApiVersions v0 round trip: the broker is listening and answering."""
    request = struct.pack(">hhih", 18, 0, 1, -1)  # api key, version, correlation id, client id
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=timeout) as sock:
            sock.sendall(struct.pack(">i", len(request)) + request)
            header = sock.recv(8)
    except OSError:
        return False
    return len(header) == 8 and struct.unpack(">ii", header)[1] == 1


def _run(coro: Coroutine[Any, Any, _T]) -> _T:
    """Run a coroutine to completion from sync code, even inside a running event loop."""
    with concurrent.futures.ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()


#: What Kafka logs once its server is up (KafkaRaftServer, at INFO).
STARTED_LINE = b"Kafka Server started"


async def _has_broker(bootstrap: str) -> bool:
    """The cluster's Metadata lists a broker: it has registered with its controller."""
    from aiokafka.client import AIOKafkaClient

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        return bool(client.cluster.brokers())
    except Exception:  # noqa: BLE001 - not serving yet: asked again
        return False
    finally:
        await client.close()


async def _coordinator_ready(bootstrap: str) -> bool:
    """The group coordinator answers (its offsets topic exists and is loaded): consumers
    that join right after start-up then find it at once, instead of logging
    GroupCoordinatorNotAvailable errors while a fresh broker creates the topic."""
    from aiokafka.client import AIOKafkaClient, CoordinationType

    client = AIOKafkaClient(bootstrap_servers=bootstrap, request_timeout_ms=5000)
    try:
        await client.bootstrap()
        await client.coordinator_lookup(CoordinationType.GROUP, "testdata-broker-start")
        return True
    except Exception:  # noqa: BLE001 - not yet: asked again
        return False
    finally:
        await client.close()


def server_properties(
    kraft_dir: Path,
    port: int,
    controller_port: int,
    extra_listeners: Mapping[str, tuple[str, int]] | None = None,
) -> dict[str, str]:
    """The broker's configuration: one KRaft node on 127.0.0.1, sized for one machine.
    `extra_listeners`: name -> (security protocol, port) beside the plaintext one (a
    secured listener, configured further with `server_overrides`).

    Internal topics get one replica and few partitions (the defaults, 50 each, make the
    first start slow); groups start without the 3 s initial rebalance delay; records up to
    MAX_MESSAGE_BYTES; retention is checked every 30 s; the log is flushed every second.
    """
    extra = extra_listeners or {}
    more = "".join(f",{name}://127.0.0.1:{p}" for name, (_, p) in extra.items())
    protocols = "".join(f",{name}:{protocol}" for name, (protocol, _) in extra.items())
    return {
        "node.id": "1",
        "process.roles": "broker,controller",
        "controller.quorum.voters": f"1@127.0.0.1:{controller_port}",
        "listeners": f"PLAINTEXT://127.0.0.1:{port},CONTROLLER://127.0.0.1:{controller_port}"
        + more,
        "advertised.listeners": f"PLAINTEXT://127.0.0.1:{port}" + more,
        "controller.listener.names": "CONTROLLER",
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": "PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT" + protocols,
        "log.dirs": str(kraft_dir),
        "num.partitions": str(DEFAULT_PARTITIONS),
        "num.network.threads": "2",
        "num.io.threads": "4",
        "offsets.topic.replication.factor": "1",
        "offsets.topic.num.partitions": "12",
        "transaction.state.log.replication.factor": "1",
        "transaction.state.log.min.isr": "1",
        "transaction.state.log.num.partitions": "4",
        "share.coordinator.state.topic.replication.factor": "1",
        "share.coordinator.state.topic.min.isr": "1",
        "group.initial.rebalance.delay.ms": "0",
        "group.min.session.timeout.ms": "1000",
        "message.max.bytes": str(BROKER_MAX_MESSAGE_BYTES),
        "replica.fetch.max.bytes": str(BROKER_MAX_MESSAGE_BYTES),
        "log.retention.check.interval.ms": "30000",
        "log.flush.interval.ms": "1000",
        "auto.leader.rebalance.enable": "false",
    }


def _log4j2_properties(log_file: Path) -> str:
    return "\n".join(
        [
            "status = warn",
            "appender.file.type = RollingFile",
            "appender.file.name = file",
            f"appender.file.fileName = {log_file}",
            f"appender.file.filePattern = {log_file}.%i",
            "appender.file.layout.type = PatternLayout",
            "appender.file.layout.pattern = [%d] %p %m (%c)%n",
            "appender.file.policies.type = Policies",
            "appender.file.policies.size.type = SizeBasedTriggeringPolicy",
            "appender.file.policies.size.size = 10MB",
            "appender.file.strategy.type = DefaultRolloverStrategy",
            "appender.file.strategy.max = 3",
            "rootLogger.level = INFO",
            "rootLogger.appenderRef.file.ref = file",
            # per-request and per-partition chatter
            "logger.state.name = state.change.logger",
            "logger.state.level = WARN",
            "logger.cleaner.name = kafka.log.LogCleaner",
            "logger.cleaner.level = WARN",
            "",
        ]
    )


#: The JVM's memory besides the heap, each capped: buffers outside the heap, class
#: metadata, compiled code. With the heap fixed and committed at start (below), these make
#: the broker's resident size a stated figure that steady load does not grow.
OFF_HEAP_CAPS = {
    "MaxDirectMemorySize": "128m",
    "MaxMetaspaceSize": "128m",
    "ReservedCodeCacheSize": "96m",
}


def _jvm_options(heap_mb: int, log4j: Path) -> list[str]:
    """The heap fixed at `heap_mb` and touched at start (Kafka's own advice is -Xms =
    -Xmx): seen, a heap that started at half its cap grew the broker's RSS by 15% over
    a 30-minute soak as G1 spread into regions it had not used yet."""
    return [
        f"-Xmx{heap_mb}m",
        f"-Xms{heap_mb}m",
        "-XX:+AlwaysPreTouch",
        *(f"-XX:{k}={v}" for k, v in OFF_HEAP_CAPS.items()),
        "-XX:+UseG1GC",
        "-XX:MaxGCPauseMillis=20",
        "-XX:+ExitOnOutOfMemoryError",
        "-Djava.awt.headless=true",
        f"-Dlog4j2.configurationFile={log4j}",
    ]


def _write_properties(path: Path, props: Mapping[str, str]) -> None:
    tmp = path.with_suffix(".tmp")
    tmp.write_text("".join(f"{k}={v}\n" for k, v in props.items()))
    tmp.replace(path)


class DataDir:
    """One broker's directory, locked for the life of this object (kit.broker.dirlock)."""

    def __init__(self, root: Path):
        self.root = root
        self._lock = DirLock(root, "Kafka data directory")

    kraft = property(lambda self: self.root / "kraft")
    properties = property(lambda self: self.root / "server.properties")
    log4j = property(lambda self: self.root / "log4j2.properties")
    log_file = property(lambda self: self.root / "broker.log")
    jvm_out = property(lambda self: self.root / "jvm.out")

    def lock(self) -> None:
        """Take the directory, before anything in it is read or written."""
        self._lock.acquire()

    def unlock(self) -> None:
        self._lock.release()

    @property
    def formatted(self) -> bool:
        return (self.kraft / "meta.properties").is_file()


class EmbeddedBroker:
    """An Apache Kafka broker child process on 127.0.0.1 (see the module docstring).

    Use as ``with EmbeddedBroker() as b: ... b.bootstrap_servers``, or start()/stop().
    Clients in any process can use the bootstrap address while this object is running.
    """

    def __init__(
        self,
        topics: Mapping[str, int] | None = None,
        *,
        topic_configs: Mapping[str, Mapping[str, str]] | None = None,
        data_dir: str | os.PathLike[str] | None = None,
        port: int = 0,
        port_fallback: bool = False,
        heap_mb: int = 512,
        server_overrides: Mapping[str, str] | None = None,
        extra_listeners: Mapping[str, tuple[str, int]] | None = None,
        start_timeout_s: float | None = None,
        stop_timeout_s: float = 60.0,
    ) -> None:
        """`topics` maps names to partition counts, created at start() with `topic_configs`.

        `data_dir`: kept across starts (None: a temporary one, removed at stop()).
        `port`: the client port (0: a free one); with `port_fallback`, a taken `port` means
        another free one instead of a failed start (`testdata run` prefers 9092 but runs
        anyway; `bootstrap_servers` says which it got). `server_overrides`: broker configs over
        `server_properties` (tests shorten the retention check); `extra_listeners`: see
        `server_properties` (a SASL or TLS listener beside the plaintext one).
        `start_timeout_s`: None waits as long as the broker process lives.
        """
        self._initial_topics = dict(topics or {})
        self._topic_configs = {k: dict(v) for k, v in (topic_configs or {}).items()}
        self._own_dir = data_dir is None
        self._dir = DataDir(Path(data_dir)) if data_dir is not None else None
        self._port = port
        self._port_fallback = port_fallback
        self._heap_mb = heap_mb
        self._overrides = dict(server_overrides or {})
        self._extra_listeners = dict(extra_listeners or {})
        self._start_timeout_s = start_timeout_s
        self._stop_timeout_s = stop_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._bootstrap: str | None = None
        self._lock = threading.Lock()
        #: what the start found damaged in the data directory (kit.broker.salvage)
        self.salvaged = Report()

    # -- lifecycle -------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:port`` of the broker."""
        if self._bootstrap is None:
            raise RuntimeError("EmbeddedBroker is not started")
        return self._bootstrap

    @property
    def running(self) -> bool:
        return self._bootstrap is not None and self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the broker JVM, while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def data_dir(self) -> Path | None:
        return self._dir.root if self._dir is not None else None

    @property
    def log_path(self) -> Path | None:
        """The broker's own log (kept with a data directory, removed with a temporary one)."""
        return self._dir.log_file if self._dir is not None else None

    def start(self, cancelled: Callable[[], bool] = lambda: False) -> Self:
        """Lock the directory, format it on first use, spawn the broker, wait until it
        serves, create the initial topics. `cancelled` is polled while waiting."""
        with self._lock:
            if self._bootstrap is not None:
                return self
            try:
                if self._dir is None:
                    self._dir = DataDir(Path(tempfile.mkdtemp(prefix="kafka-")))
                self._dir.lock()
                if not self._own_dir:
                    self.salvaged = salvage(self._dir.kraft, self._dir.root / "quarantine")
                    if self.salvaged.damaged:
                        log.warning("data directory: %s", self.salvaged.summary())
                java, classpath = kafkadist.java(), kafkadist.classpath()
                self._spawn(java, classpath, cancelled)
                if self._initial_topics:
                    _run(
                        create_topics(
                            self.bootstrap_servers,
                            self._initial_topics,
                            configs=self._topic_configs,
                        )
                    )
                self._wait_alive(
                    lambda: _run(_coordinator_ready(self.bootstrap_servers)), cancelled
                )
            except BaseException:
                self._stop_locked()
                raise
        log.info("embedded Kafka broker (pid %s) on %s", self.pid, self._bootstrap)
        return self

    @property
    def exited(self) -> int | None:
        """The exit status of a broker that was started and died since (None otherwise)."""
        if self._bootstrap is None or self._proc is None:
            return None
        return self._proc.poll()

    def restart(self, cancelled: Callable[[], bool] = lambda: False) -> Self:
        """Start a broker that died again: same data directory (its topics and records
        come back from the log), same client port (clients reconnect to the address they
        know). Raises BrokerStartFailed if it does not serve again."""
        with self._lock:
            if self._bootstrap is None or self._proc is None or self._proc.poll() is None:
                return self  # never started, stopped, or still running
            known = self._bootstrap
            self._port = int(known.rsplit(":", 1)[1])
            self._port_fallback = False
            self._bootstrap = None
            try:
                self._spawn(kafkadist.java(), kafkadist.classpath(), cancelled)
                self._wait_alive(
                    lambda: _run(_coordinator_ready(self.bootstrap_servers)), cancelled
                )
            except BaseException:
                # still the broker that died at `known`: `exited` says so, a later
                # restart tries again
                if self._proc is not None and self._proc.poll() is None:
                    self._proc.kill()
                    self._proc.wait()
                self._bootstrap = known
                raise
        log.info("embedded Kafka broker restarted (pid %s) on %s", self.pid, self._bootstrap)
        return self

    def _format(self, java: str, classpath: str) -> None:
        """First start of a directory: write meta.properties and the metadata log."""
        assert self._dir is not None
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        done = subprocess.run(
            [
                java,
                *_jvm_options(128, self._dir.log4j),
                *("-cp", classpath, "kafka.tools.StorageTool", "format"),
                f"--cluster-id={cluster_id}",  # "=": an id may start with "-"
                *("-c", str(self._dir.properties), "--ignore-formatted"),
            ],
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            check=False,
            start_new_session=True,  # a terminal's Ctrl-C is for the owner, which stops it
            preexec_fn=death_signal(),
        )
        if done.returncode != 0:  # the exception's own line, not its last stack frame
            lines = (done.stderr or done.stdout).strip().splitlines()
            why = [ln for ln in lines if ln.strip() and not ln.lstrip().startswith("at ")]
            raise BrokerStartFailed(
                f"formatting {self._dir.kraft} failed: "
                + (why[-1].strip() if why else f"exit status {done.returncode}")
            )

    def _spawn(self, java: str, classpath: str, cancelled: Callable[[], bool]) -> None:
        d = self._dir
        assert d is not None
        d.log4j.write_text(_log4j2_properties(d.log_file))
        # a free port may be taken before Kafka binds it: then another
        fixed = bool(self._port) and not self._port_fallback
        attempts = 1 if fixed else 3
        for attempt in range(attempts):
            wanted = fixed or (attempt == 0 and self._port and _bindable(self._port))
            if wanted:
                port, (controller,) = self._port, _free_ports(1, avoid=self._port)
            else:
                port, controller = _free_ports(2, avoid=self._port)
            props = server_properties(d.kraft, port, controller, self._extra_listeners)
            _write_properties(d.properties, {**props, **self._overrides})
            if not d.formatted:
                self._format(java, classpath)
            if cancelled():
                raise StartCancelled("interrupted during start-up")
            log_start = d.log_file.stat().st_size if d.log_file.exists() else 0
            with d.jvm_out.open("wb") as out:
                self._proc = subprocess.Popen(
                    [
                        java,
                        *_jvm_options(self._heap_mb, d.log4j),
                        *("-cp", classpath, "kafka.Kafka", str(d.properties)),
                    ],
                    stdin=subprocess.DEVNULL,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    preexec_fn=death_signal(),  # only prctl runs in the child
                    # A terminal's Ctrl-C goes to the owner alone: it stops its clients
                    # first, then the broker (a broker gone first fills their logs).
                    start_new_session=True,
                )
            if self._wait_serving(port, cancelled, log_start):
                self._bootstrap = f"127.0.0.1:{port}"
                return
            reason = self._exit_reason(log_start)
            if "Address already in use" in reason and attempt + 1 < attempts:
                log.info("port %d was taken before the broker bound it; trying another", port)
                continue
            raise BrokerStartFailed(f"the Kafka broker did not start: {reason}")

    def _wait_serving(self, port: int, cancelled: Callable[[], bool], log_start: int = 0) -> bool:
        """True once the broker serves; False if it exited. Waits as long as it lives.
        Serving means its own log says it started, not only that something answers on
        the port: another broker that bound the port first would answer too, while this
        one exits (Address already in use), and is then retried on another port."""
        assert self._proc is not None and self._dir is not None
        deadline = (
            time.monotonic() + self._start_timeout_s if self._start_timeout_s else float("inf")
        )
        bootstrap = f"127.0.0.1:{port}"
        while self._proc.poll() is None:
            if cancelled():
                raise StartCancelled("interrupted during start-up")
            if time.monotonic() > deadline:
                raise BrokerStartFailed(
                    f"the Kafka broker did not serve within {self._start_timeout_s:g} s; "
                    f"see {self.log_path}"
                )
            if (
                self._logged_started(log_start)
                and _api_versions_ok(port, timeout=2.0)
                and _run(_has_broker(bootstrap))
            ):
                return True
            time.sleep(0.05)
        return False

    def _logged_started(self, log_start: int) -> bool:
        """This start's broker log (from `log_start`) says "Kafka Server started"."""
        assert self._dir is not None
        try:
            with self._dir.log_file.open("rb") as fh:
                fh.seek(log_start)
                return STARTED_LINE in fh.read()
        except OSError:
            return False

    def _wait_alive(self, check: Callable[[], bool], cancelled: Callable[[], bool]) -> None:
        """Until `check()` holds, as long as the broker lives (its exit is the failure)."""
        while not check():
            if cancelled():
                raise StartCancelled("interrupted during start-up")
            if self._proc is None or self._proc.poll() is not None:
                raise BrokerStartFailed(f"the Kafka broker exited; see {self.log_path}")
            time.sleep(0.1)

    def _exit_reason(self, log_start: int) -> str:
        """One line on why the broker exited: its last error, or its exit status."""
        assert self._proc is not None and self._dir is not None
        code = self._proc.wait()
        lines: list[str] = []
        for path, start in ((self._dir.log_file, log_start), (self._dir.jvm_out, 0)):
            with contextlib.suppress(OSError), path.open("rb") as fh:
                fh.seek(start)
                lines += fh.read().decode(errors="replace").splitlines()
        if any("Address already in use" in line for line in lines):
            return "Address already in use"
        for line in reversed(lines):
            if " ERROR " in line or "Exception" in line or line.startswith("Error"):
                return line.strip()[:300]
        return f"exit status {code}; see {self._dir.log_file}"

    def stop(self) -> None:
        """Stop the broker (a controlled shutdown); a temporary directory is removed."""
        with self._lock:
            self._stop_locked()

    def _stop_locked(self) -> None:
        self._bootstrap = None
        proc, self._proc = self._proc, None
        if proc is not None and proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(self._stop_timeout_s)
            except subprocess.TimeoutExpired:
                log.warning("the Kafka broker did not stop in %gs; killed", self._stop_timeout_s)
                proc.kill()
                proc.wait()
        if self._dir is not None:
            self._dir.unlock()
            if self._own_dir:
                shutil.rmtree(self._dir.root, ignore_errors=True)
                self._dir = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"EmbeddedBroker({self._bootstrap or 'stopped'})"

    # -- topics ----------------------------------------------------------------------
    def create_topic(
        self,
        name: str,
        partitions: int = 1,
        replication_factor: int = 1,
        configs: Mapping[str, str] | None = None,
    ) -> bool:
        """Create `name` with `partitions` partitions; False if it already existed
        (its partition count is then unchanged)."""
        created = _run(
            create_topics(
                self.bootstrap_servers,
                {name: partitions},
                replication_factor=replication_factor,
                configs={name: configs or {}},
            )
        )
        return created[name]


def main(argv: list[str] | None = None) -> int:
    """Run a standalone embedded broker until SIGINT/SIGTERM; print its bootstrap address."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="NAME[:PARTITIONS]",
        help="pre-create a topic (default 1 partition); repeatable",
    )
    parser.add_argument("--bootstrap-file", help="also write the bootstrap address to this file")
    parser.add_argument("--data-dir", help="keep the broker's data here (default: temporary)")
    parser.add_argument("--port", type=int, default=0, help="client port (default: a free one)")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    topics: dict[str, int] = {}
    for spec in args.topic:
        name, _, parts = spec.partition(":")
        topics[name] = int(parts or 1)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    try:
        broker = EmbeddedBroker(topics, data_dir=args.data_dir, port=args.port)
        broker.start(cancelled=stop.is_set)
    except (BrokerStartFailed, DirInUse, KafkaNotInstalled) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    with broker:
        if args.bootstrap_file:
            tmp = f"{args.bootstrap_file}.tmp"
            with open(tmp, "w") as fh:
                fh.write(broker.bootstrap_servers + "\n")
            os.replace(tmp, args.bootstrap_file)
        print(broker.bootstrap_servers, flush=True)
        while not stop.wait(1.0):
            if not broker.running:
                log.error("the broker process exited")
                return 1
    if args.bootstrap_file:
        with contextlib.suppress(OSError):
            os.unlink(args.bootstrap_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
