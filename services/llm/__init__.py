"""The LLM generation path (`testdata service llm`); its public face is what hybrid composes:
the engine, its availability, backend clients, prompts and output parsing."""

from services.llm.availability import LLMAvailability
from services.llm.clients import (
    ClaudeClient,
    Completion,
    LLMClient,
    OpenAICompatClient,
    RetryPolicy,
    build_clients,
)
from services.llm.engine import LLMEngine
from services.llm.errors import LLMError, LLMOutputError, LLMPermanentError, LLMUnavailable
from services.llm.jsonparse import parse_records
from services.llm.prompts import SYSTEM_PROMPT, Template, build_prompt, select_template

__all__ = [
    "SYSTEM_PROMPT",
    "ClaudeClient",
    "Completion",
    "LLMAvailability",
    "LLMClient",
    "LLMEngine",
    "LLMError",
    "LLMOutputError",
    "LLMPermanentError",
    "LLMUnavailable",
    "OpenAICompatClient",
    "RetryPolicy",
    "Template",
    "build_clients",
    "build_prompt",
    "parse_records",
    "select_template",
]
