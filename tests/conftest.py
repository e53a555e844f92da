"""Session-wide fixtures: ONE embedded broker for the whole run, shared by every test."""

from __future__ import annotations

import pytest

from services.kit.broker import EmbeddedBroker
from services.kit.topics import Topics


@pytest.fixture(scope="session")
def embedded_broker():
    fixed = Topics().fixed()
    with EmbeddedBroker(
        {t.name: t.partitions for t in fixed},
        topic_configs={t.name: t.configs() for t in fixed},
        retention_check_s=None,  # tests sweep with their own RetentionKeeper
    ) as broker:
        yield broker
