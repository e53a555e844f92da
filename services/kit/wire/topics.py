"""The topic catalogue (topics/catalog.toml), the only place topic names come from."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from services.core.models import GenerationPath
from services.core.pools import REPO_ROOT

#: Largest record we produce. Chunk messages are up to a few MB; aiokafka's default
#: (1 MiB) is too small. The broker needs `message.max.bytes` (the embedded one has it)
#: or each topic `max.message.bytes` (the catalogue sets it) >= this.
MAX_MESSAGE_BYTES = 8 * 1024 * 1024
#: What a broker or topic must accept for that: one batch of it plus its framing.
BROKER_MAX_MESSAGE_BYTES = MAX_MESSAGE_BYTES + 64 * 1024
#: Partition count of a topic created without one (the embedded broker's num.partitions).
DEFAULT_PARTITIONS = 4


CATALOG = REPO_ROOT / "topics" / "catalog.toml"
_INSTANCE_RE = re.compile(r"^[A-Za-z0-9._-]{1,100}$")


@dataclass(frozen=True)
class TopicSpec:
    key: str  # catalogue key: requests, traditional, ..., replies
    name: str
    description: str
    value_schema: str
    partitions: int
    replication: int
    retention_ms: int
    cleanup_policy: str
    family: bool = False
    retention_bytes: int = -1  # per partition; -1: no size limit

    def configs(self) -> dict[str, str]:
        """The topic's configs on any Kafka: retention and cleanup, records up to
        MAX_MESSAGE_BYTES, and segments rolled at least daily (or at the retention time,
        when shorter): Kafka deletes and compacts whole closed segments only, so a quiet
        topic would otherwise keep its records for up to a week past its retention."""
        out = {
            "retention.ms": str(self.retention_ms),
            "retention.bytes": str(self.retention_bytes),
            "cleanup.policy": self.cleanup_policy,
            "max.message.bytes": str(BROKER_MAX_MESSAGE_BYTES),
        }
        if self.retention_ms > 0:
            out["segment.ms"] = str(min(self.retention_ms, 86_400_000))
        return out


class Topics:
    """Resolved topic names (with TOPIC_PREFIX) and their settings."""

    def __init__(self, prefix: str = "", path: Path = CATALOG):
        data = tomllib.loads(path.read_text())["topics"]
        self.specs = {
            key: TopicSpec(
                key=key,
                name=prefix + t["name"],
                description=t["description"],
                value_schema=t["value_schema"],
                partitions=t["partitions"],
                replication=t["replication"],
                retention_ms=t["retention_ms"],
                cleanup_policy=t["cleanup_policy"],
                family=t.get("family", False),
                retention_bytes=t.get("retention_bytes", -1),
            )
            for key, t in data.items()
        }
        self.requests = self.specs["requests"].name
        self.results = self.specs["results"].name
        self.deadletter = self.specs["deadletter"].name
        self.control = self.specs["control"].name
        self.deliveries = self.specs["deliveries"].name
        self.outcomes = self.specs["outcomes"].name
        self._replies = self.specs["replies"].name

    def path(self, path: GenerationPath) -> str:
        return self.specs[path.value].name

    def replies(self, instance: str) -> str:
        if not _INSTANCE_RE.match(instance):
            raise ValueError(f"bad instance id {instance!r}")
        return f"{self._replies}.{instance}"

    def is_reply_topic(self, name: str) -> bool:
        """Generators write results only where the catalogue allows, whatever a header says."""
        if name == self.results:
            return True
        prefix = self._replies + "."
        return name.startswith(prefix) and bool(_INSTANCE_RE.match(name[len(prefix) :]))

    def fixed(self) -> list[TopicSpec]:
        """Every topic but the per-instance reply family (created by each bridge)."""
        return [s for s in self.specs.values() if not s.family]
