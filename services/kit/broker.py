"""Embedded Kafka broker: librdkafka's in-process mock cluster.

Why: the services need *a* Kafka for local runs and tests, and this machine has no
broker package and no Docker. librdkafka (shipped inside the confluent-kafka wheel)
contains a mock cluster that opens real TCP listeners on 127.0.0.1 and speaks enough
of the protocol for aiokafka/FastStream: produce (incl. idempotent), fetch, headers,
single-member consumer groups with offset commits, ListOffsets, auto-created topics.

We drive it through librdkafka's C API (`rdkafka_mock.h`) via ctypes rather than via a
confluent client configured with `test.mock.num.brokers`, because only the C API can
pre-create a topic with a chosen partition count (`rd_kafka_mock_topic_create`); the
broker refuses CreateTopics and auto-creates every unknown topic with 4 partitions.
If those symbols are unavailable we fall back to the client-config way.

Limits you must design around (librdkafka 2.16, see /tmp/notes-broker.md):
  * data lives in memory only and dies with the process;
  * each partition keeps only the newest ~5 MiB (and <=100k batches); older batches are
    silently dropped, so a consumer lagging more than that loses data;
  * the listen port is random (kernel-assigned) on every start;
  * a second member joining a consumer group fails (one member per group only).
"""

from __future__ import annotations

import argparse
import contextlib
import ctypes
import ctypes.util
import glob
import logging
import os
import signal
import socket
import sys
import threading
from types import TracebackType
from typing import Any, ClassVar, Self

log = logging.getLogger(__name__)

#: Partition count the mock broker uses for topics it auto-creates (fixed in librdkafka).
MOCK_AUTO_CREATE_PARTITIONS = 4
#: Per-partition retention of the mock broker (bytes); older batches are dropped.
MOCK_PARTITION_MAX_BYTES = 5 * 1024 * 1024

_RD_KAFKA_PRODUCER = 0
_ERR_NO_ERROR = 0
_ERR_TOPIC_ALREADY_EXISTS = 36


def _librdkafka_path() -> str | None:
    """Path of the librdkafka that confluent-kafka loaded (the wheel bundles its own)."""
    import confluent_kafka  # loads librdkafka into the process

    with contextlib.suppress(OSError), open("/proc/self/maps") as maps:
        for line in maps:
            fields = line.split(maxsplit=5)
            path = fields[5].strip() if len(fields) == 6 else ""
            if os.path.basename(path).startswith("librdkafka") and os.path.exists(path):
                return path
    pkg_dir = os.path.dirname(confluent_kafka.__file__)
    for pattern in ("../confluent_kafka.libs/librdkafka*", ".dylibs/librdkafka*"):
        hits = sorted(glob.glob(os.path.join(pkg_dir, pattern)))
        if hits:
            return os.path.normpath(hits[0])
    return ctypes.util.find_library("rdkafka")


class _Lib:
    """ctypes bindings for the few librdkafka (mock) functions we need."""

    _instance: ClassVar[_Lib | None] = None

    def __init__(self, path: str) -> None:
        c = ctypes
        lib = c.CDLL(path)
        lib.rd_kafka_conf_new.restype = c.c_void_p
        lib.rd_kafka_conf_new.argtypes = []
        lib.rd_kafka_conf_set.restype = c.c_int
        lib.rd_kafka_conf_set.argtypes = [
            c.c_void_p,
            c.c_char_p,
            c.c_char_p,
            c.c_char_p,
            c.c_size_t,
        ]
        lib.rd_kafka_conf_destroy.restype = None
        lib.rd_kafka_conf_destroy.argtypes = [c.c_void_p]
        lib.rd_kafka_new.restype = c.c_void_p
        lib.rd_kafka_new.argtypes = [c.c_int, c.c_void_p, c.c_char_p, c.c_size_t]
        lib.rd_kafka_destroy.restype = None
        lib.rd_kafka_destroy.argtypes = [c.c_void_p]
        lib.rd_kafka_mock_cluster_new.restype = c.c_void_p
        lib.rd_kafka_mock_cluster_new.argtypes = [c.c_void_p, c.c_int]
        lib.rd_kafka_mock_cluster_destroy.restype = None
        lib.rd_kafka_mock_cluster_destroy.argtypes = [c.c_void_p]
        lib.rd_kafka_mock_cluster_bootstraps.restype = c.c_char_p
        lib.rd_kafka_mock_cluster_bootstraps.argtypes = [c.c_void_p]
        lib.rd_kafka_mock_topic_create.restype = c.c_int
        lib.rd_kafka_mock_topic_create.argtypes = [c.c_void_p, c.c_char_p, c.c_int, c.c_int]
        lib.rd_kafka_err2str.restype = c.c_char_p
        lib.rd_kafka_err2str.argtypes = [c.c_int]
        self.lib = lib
        # Optional (newer librdkafka): default group join delay is 3 s, which makes every
        # consumer start slow. Tolerate its absence.
        self.set_rebalance_delay = getattr(
            lib, "rd_kafka_mock_group_initial_rebalance_delay_ms", None
        )
        if self.set_rebalance_delay is not None:
            self.set_rebalance_delay.restype = None
            self.set_rebalance_delay.argtypes = [c.c_void_p, c.c_int32]

    @classmethod
    def get(cls) -> _Lib:
        if cls._instance is None:
            path = _librdkafka_path()
            if not path:
                raise OSError("librdkafka not found (is confluent-kafka installed?)")
            cls._instance = cls(path)
        return cls._instance


class EmbeddedBroker:
    """An in-process Kafka-protocol broker on 127.0.0.1 (librdkafka mock cluster).

    Use as ``with EmbeddedBroker() as b: ... b.bootstrap_servers``, or start()/stop().
    The cluster runs on librdkafka's own threads; nothing needs polling, and it keeps
    serving until stop() (or process exit). Clients in other processes can use the
    bootstrap address too, as long as this process lives.
    """

    _registry: ClassVar[dict[str, EmbeddedBroker]] = {}
    _registry_lock: ClassVar[threading.Lock] = threading.Lock()

    def __init__(
        self,
        num_brokers: int = 1,
        *,
        topics: dict[str, int] | None = None,
        group_initial_rebalance_delay_ms: int = 0,
    ) -> None:
        """`topics` maps names to partition counts, created at start().

        `group_initial_rebalance_delay_ms`: the mock defaults to 3000 ms (like Kafka);
        0 makes a consumer's first group join immediate.
        """
        self.num_brokers = num_brokers
        self._initial_topics = dict(topics or {})
        self._rebalance_delay_ms = group_initial_rebalance_delay_ms
        self._rk: int | None = None
        self._mcluster: int | None = None
        self._client: Any = None  # fallback backend: a confluent Producer owning the mock
        self._bootstrap: str | None = None
        self._lock = threading.Lock()

    # -- lifecycle -------------------------------------------------------------------
    @property
    def bootstrap_servers(self) -> str:
        """``host:port[,host:port]`` of the mock brokers (random port, 127.0.0.1)."""
        if self._bootstrap is None:
            raise RuntimeError("EmbeddedBroker is not started")
        return self._bootstrap

    @property
    def running(self) -> bool:
        return self._bootstrap is not None

    def start(self) -> Self:
        """Create the mock cluster and wait until its listener accepts TCP connections."""
        with self._lock:
            if self._bootstrap is not None:
                return self
            try:
                self._start_ctypes()
            except (OSError, AttributeError, RuntimeError) as exc:
                log.warning("mock cluster via C API unavailable (%s); using client config", exc)
                self._start_client()
            assert self._bootstrap is not None
            _wait_listening(self._bootstrap)
            with self._registry_lock:
                self._registry[self._bootstrap] = self
        for name, partitions in self._initial_topics.items():
            self.create_topic(name, partitions)
        log.info("embedded Kafka broker listening on %s", self._bootstrap)
        return self

    def _start_ctypes(self) -> None:
        L = _Lib.get()
        lib = L.lib
        conf = lib.rd_kafka_conf_new()
        errstr = ctypes.create_string_buffer(512)
        # log_level 4: hide the notice about the (intentionally) empty bootstrap.servers.
        for key, value in (("client.id", "embedded-broker"), ("log_level", "4")):
            if lib.rd_kafka_conf_set(conf, key.encode(), value.encode(), errstr, 512) != 0:
                lib.rd_kafka_conf_destroy(conf)
                raise RuntimeError(f"rd_kafka_conf_set {key}: {errstr.value.decode()}")
        rk = lib.rd_kafka_new(_RD_KAFKA_PRODUCER, conf, errstr, 512)  # takes ownership of conf
        if not rk:
            raise RuntimeError(f"rd_kafka_new failed: {errstr.value.decode()}")
        mcluster = lib.rd_kafka_mock_cluster_new(rk, self.num_brokers)
        if not mcluster:
            lib.rd_kafka_destroy(rk)
            raise RuntimeError("rd_kafka_mock_cluster_new failed")
        if L.set_rebalance_delay is not None:
            L.set_rebalance_delay(mcluster, self._rebalance_delay_ms)
        self._rk, self._mcluster = rk, mcluster
        self._bootstrap = lib.rd_kafka_mock_cluster_bootstraps(mcluster).decode()

    def _start_client(self) -> None:
        """Fallback: a confluent client with `test.mock.num.brokers` owns the cluster.

        The client must stay referenced (its destruction destroys the cluster); its
        metadata (list_topics) is the reliable way to learn the listener addresses.
        """
        from confluent_kafka import Producer

        self._client = Producer(
            {
                "test.mock.num.brokers": self.num_brokers,
                "log_level": 4,
                "client.id": "embedded-broker",
            }
        )
        md = self._client.list_topics(timeout=10)
        self._bootstrap = ",".join(f"{b.host}:{b.port}" for b in md.brokers.values())

    def stop(self) -> None:
        """Destroy the cluster: listeners close, all data is gone. Idempotent."""
        with self._lock:
            if self._bootstrap is None:
                return
            with self._registry_lock:
                self._registry.pop(self._bootstrap, None)
            if self._mcluster is not None:
                lib = _Lib.get().lib
                lib.rd_kafka_mock_cluster_destroy(self._mcluster)
                lib.rd_kafka_destroy(self._rk)
                self._mcluster = self._rk = None
            if self._client is not None:
                self._client.flush(1)
                self._client = None
            self._bootstrap = None

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
    def create_topic(self, name: str, partitions: int = 1, replication_factor: int = 1) -> bool:
        """Create `name` with exactly `partitions` partitions (the broker refuses CreateTopics).

        Returns False if it already existed (its partition count is then unchanged).
        """
        if self._mcluster is None:
            raise NotImplementedError(
                "chosen partition counts need the librdkafka mock C API; "
                f"topics are auto-created with {MOCK_AUTO_CREATE_PARTITIONS} partitions"
            )
        lib = _Lib.get().lib
        err = lib.rd_kafka_mock_topic_create(
            self._mcluster, name.encode(), partitions, min(replication_factor, self.num_brokers)
        )
        if err == _ERR_TOPIC_ALREADY_EXISTS:
            return False
        if err != _ERR_NO_ERROR:
            raise RuntimeError(f"mock topic create {name!r}: {lib.rd_kafka_err2str(err).decode()}")
        return True

    @classmethod
    def for_bootstrap(cls, bootstrap_servers: str) -> EmbeddedBroker | None:
        """The running in-process broker serving `bootstrap_servers`, if any."""
        with cls._registry_lock:
            return cls._registry.get(bootstrap_servers)


def _wait_listening(bootstrap: str, timeout: float = 5.0) -> None:
    host, _, port = bootstrap.split(",")[0].rpartition(":")
    with socket.create_connection((host, int(port)), timeout=timeout):
        pass


def main(argv: list[str] | None = None) -> int:
    """Run a standalone embedded broker until SIGINT/SIGTERM; print its bootstrap address."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--brokers", type=int, default=1)
    parser.add_argument(
        "--topic",
        action="append",
        default=[],
        metavar="NAME[:PARTITIONS]",
        help="pre-create a topic (default 1 partition); repeatable",
    )
    parser.add_argument("--bootstrap-file", help="also write the bootstrap address to this file")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s %(message)s")

    topics: dict[str, int] = {}
    for spec in args.topic:
        name, _, parts = spec.partition(":")
        topics[name] = int(parts or 1)

    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    with EmbeddedBroker(args.brokers, topics=topics) as broker:
        if args.bootstrap_file:
            tmp = f"{args.bootstrap_file}.tmp"
            with open(tmp, "w") as fh:
                fh.write(broker.bootstrap_servers + "\n")
            os.replace(tmp, args.bootstrap_file)
        print(broker.bootstrap_servers, flush=True)
        while not stop.wait(1.0):
            pass
    if args.bootstrap_file:
        with contextlib.suppress(OSError):
            os.unlink(args.bootstrap_file)
    return 0


if __name__ == "__main__":
    sys.exit(main())
