"""Session-wide fixtures: ONE embedded broker (Apache Kafka) for the whole run, shared by
every test."""

from __future__ import annotations

import pytest

from services.kit.broker import EmbeddedBroker
from services.kit.topics import Topics

#: Retention is checked every second here (30 s in `make run`), so tests see it applied.
TEST_BROKER_CONFIGS = {"log.retention.check.interval.ms": "1000"}


@pytest.fixture(scope="session")
def embedded_broker():
    fixed = Topics().fixed()
    with EmbeddedBroker(
        {t.name: t.partitions for t in fixed},
        topic_configs={t.name: t.configs() for t in fixed},
        server_overrides=TEST_BROKER_CONFIGS,
    ) as broker:
        yield broker
