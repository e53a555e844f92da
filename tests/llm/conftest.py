"""Fixtures for the LLM tests: a fresh fake LLM server per test and settings pointing at it."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from services.kit.settings import Settings
from tests.fakes.llm_server import FakeLLMServer
from tests.support import llm_settings


@pytest.fixture
def server() -> Iterator[FakeLLMServer]:
    with FakeLLMServer() as srv:
        yield srv


@pytest.fixture
def settings(server: FakeLLMServer) -> Settings:
    return llm_settings(server)
