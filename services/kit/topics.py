"""The topic catalogue (topics/catalog.toml), the only place topic names come from."""

from __future__ import annotations

import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from services.core.models import GenerationPath
from services.core.pools import REPO_ROOT

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

    def configs(self) -> dict[str, str]:
        return {"retention.ms": str(self.retention_ms), "cleanup.policy": self.cleanup_policy}


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
