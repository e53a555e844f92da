"""Session-wide fixtures: ONE embedded broker for the whole run, shared by every test."""

from __future__ import annotations

import pytest

from services.kit.broker import EmbeddedBroker
from services.kit.topics import Topics


@pytest.fixture(scope="session")
def embedded_broker():
    topics = {t.name: t.partitions for t in Topics().fixed()}
    with EmbeddedBroker(topics=topics) as broker:
        yield broker
