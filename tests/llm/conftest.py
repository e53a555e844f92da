"""Fixtures for the LLM tests: a fresh fake LLM server per test and settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest

from services.kit.settings import Settings
from tests.fakes.llm_server import FakeLLMServer


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


def make_settings(server: FakeLLMServer | None = None, **overrides: Any) -> Settings:
    """Settings for tests: no .env, both backends aimed at the fake server, short timeouts."""
    values: dict[str, Any] = {
        "anthropic_api_key": "test",
        "anthropic_base_url": server.url if server else None,
        "vllm_base_url": server.openai_base_url if server else "http://127.0.0.1:9/v1",
        "vllm_api_key": "local-key",
        "vllm_model": "fake/llama-3-8b",
        "claude_model": "claude-test-model",
        "claude_max_tokens": 1234,
        "claude_temperature": 0.3,
        "llm_timeout_seconds": 5.0,
        "llm_max_retries": 3,
        "llm_enabled_local": True,
        "use_local_llm": False,
        "llm_concurrency": 8,
    }
    values.update(overrides)
    return Settings(_env_file=None, **values)


@pytest.fixture
def settings(server: FakeLLMServer) -> Settings:
    return make_settings(server)
