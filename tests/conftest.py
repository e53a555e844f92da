"""Session-wide fixtures: ONE embedded broker for the whole run, shared by every test."""

from __future__ import annotations

import pytest

from services.kit.broker import EmbeddedBroker
from services.kit.settings import Settings
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


def make_settings(bootstrap: str, **over) -> Settings:
    """Settings isolated from the machine's env and .env (no stray API keys)."""
    base = dict(
        kafka_bootstrap_servers=bootstrap,
        grpc_port=0,
        http_port=0,
        anthropic_api_key=None,
        use_local_llm=False,
        llm_enabled_local=False,
        instance_id="test-a",
        kafka_fetch_max_wait_ms=10,
    )
    base.update(over)
    return Settings(_env_file=None, **base)
