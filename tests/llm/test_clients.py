"""The LLM clients through the real anthropic/openai SDKs against the fake server."""

from __future__ import annotations

import asyncio
import json
import random
import re
import socket
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime
from typing import Any

import pytest

from services.llm.clients import (
    LEGACY_SAMPLING_API_VERSION,
    ClaudeClient,
    Completion,
    LLMClient,
    OpenAICompatClient,
    RetryPolicy,
    build_clients,
    parse_retry_after,
)
from services.llm.errors import LLMPermanentError, LLMUnavailable
from services.llm.jsonparse import parse_records
from tests.fakes.llm_server import Fail, FakeLLMServer, Hang, Reply
from tests.support import llm_settings as make_settings

FAST = RetryPolicy(max_retries=3, base_delay=0.01, max_delay=0.05)
RECORDS = [{"_index": 0, "_scenario": "default", "sku": "ABC-TOP-BLK-M"}]

API = {"claude": "anthropic", "openai_compat": "openai"}


def claude(settings: Any, **kw: Any) -> ClaudeClient:
    return ClaudeClient.from_settings(settings, **{"retry": FAST, **kw})


def local(settings: Any, **kw: Any) -> OpenAICompatClient:
    return OpenAICompatClient.from_settings(settings, **{"retry": FAST, **kw})


@pytest.fixture(params=["claude", "openai_compat"])
def backend(request: pytest.FixtureRequest) -> str:
    return request.param


def client_for(backend: str, settings: Any, **kw: Any) -> ClaudeClient | OpenAICompatClient:
    return claude(settings, **kw) if backend == "claude" else local(settings, **kw)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# ------------------------------------------------------------------------ happy paths


@pytest.mark.parametrize(
    "text",
    [
        json.dumps(RECORDS),
        "```json\n" + json.dumps(RECORDS, indent=2) + "\n```",
        "Sure! Here are the records you asked for:\n" + json.dumps(RECORDS) + "\nEnjoy.",
    ],
    ids=["plain", "fenced", "prose"],
)
async def test_answer_is_parsed_into_records(
    backend: str, server: FakeLLMServer, settings: Any, text: str
) -> None:
    server.script(API[backend], Reply(text))
    client = client_for(backend, settings)
    completion = await client.complete("system", "user")
    assert completion.text == text
    assert completion.backend == backend
    assert completion.attempts == 1
    assert parse_records(completion.text) == RECORDS
    assert server.calls(API[backend]) == 1
    await client.aclose()


async def test_claude_request_carries_settings_and_prompts(
    server: FakeLLMServer, settings: Any
) -> None:
    client = claude(settings)
    await client.complete("SYSTEM PROMPT TEXT", "USER PROMPT TEXT")
    (req,) = server.requests_for("anthropic")
    assert req.path == "/v1/messages"
    assert req.body["model"] == "claude-test-model"
    assert req.body["max_tokens"] == 1234
    assert req.body["system"] == "SYSTEM PROMPT TEXT"
    assert req.body["messages"] == [{"role": "user", "content": "USER PROMPT TEXT"}]
    assert req.headers["authorization"] == "Bearer test"
    # The SDK's default API version rejects sampling parameters: none are sent.
    assert "temperature" not in req.body
    assert req.headers["anthropic-version"] != LEGACY_SAMPLING_API_VERSION
    await client.aclose()


async def test_claude_temperature_opt_in_pins_legacy_api_version(
    server: FakeLLMServer, settings: Any
) -> None:
    client = claude(settings, temperature=settings.claude_temperature)
    await client.complete("s", "u", max_tokens=77)
    (req,) = server.requests_for("anthropic")
    assert req.body["temperature"] == pytest.approx(0.3)
    assert req.body["max_tokens"] == 77
    assert req.headers["anthropic-version"] == LEGACY_SAMPLING_API_VERSION
    await client.aclose()


async def test_openai_request_carries_settings_and_prompts(
    server: FakeLLMServer, settings: Any
) -> None:
    client = local(settings)
    await client.complete("SYSTEM PROMPT TEXT", "USER PROMPT TEXT")
    (req,) = server.requests_for("openai")
    assert req.path == "/v1/chat/completions"
    assert req.body["model"] == "fake/llama-3-8b"
    assert req.body["max_tokens"] == 1234
    assert req.body["temperature"] == pytest.approx(0.3)
    assert req.body["messages"] == [
        {"role": "system", "content": "SYSTEM PROMPT TEXT"},
        {"role": "user", "content": "USER PROMPT TEXT"},
    ]
    assert req.system_prompt == "SYSTEM PROMPT TEXT"
    assert req.headers["authorization"] == "Bearer local-key"
    await client.aclose()


async def test_token_accounting_matches_server(
    backend: str, server: FakeLLMServer, settings: Any
) -> None:
    server.script(
        API[backend],
        Reply("[]", input_tokens=321, output_tokens=45),
        Reply("[]", input_tokens=100, output_tokens=5),
    )
    client = client_for(backend, settings)
    first = await client.complete("s", "u")
    second = await client.complete("s", "u")
    reported = [r.usage for r in server.requests_for(API[backend])]
    assert reported == [
        {"input_tokens": 321, "output_tokens": 45},
        {"input_tokens": 100, "output_tokens": 5},
    ]
    assert (first.input_tokens, first.output_tokens, first.total_tokens) == (321, 45, 366)
    assert (second.input_tokens, second.output_tokens) == (100, 5)
    assert client.usage.input_tokens == 421
    assert client.usage.output_tokens == 50
    assert client.usage.completions == 2
    await client.aclose()


async def test_responder_builds_answer_from_prompt(
    backend: str, server: FakeLLMServer, settings: Any
) -> None:
    def answer(body: dict[str, Any]) -> str:
        user = body["messages"][-1]["content"]
        n = int(re.search(r"give me (\d+)", user).group(1))  # type: ignore[union-attr]
        return json.dumps([{"_index": i, "_scenario": "default"} for i in range(n)])

    server.script(API[backend], answer)
    client = client_for(backend, settings)
    completion = await client.complete("s", "please give me 4 records")
    assert [r["_index"] for r in parse_records(completion.text)] == [0, 1, 2, 3]
    await client.aclose()


async def test_stop_reason_reports_truncation(server: FakeLLMServer, settings: Any) -> None:
    server.script("anthropic", Reply('[{"a": 1}', stop_reason="max_tokens"))
    server.script("openai", Reply('[{"a": 1}', stop_reason="length"))
    c1, c2 = claude(settings), local(settings)
    assert (await c1.complete("s", "u")).truncated
    assert (await c2.complete("s", "u")).truncated
    await c1.aclose()
    await c2.aclose()


# ---------------------------------------------------------------------------- retries


async def test_429_honours_retry_after_seconds(
    backend: str, server: FakeLLMServer, settings: Any
) -> None:
    server.script(API[backend], Fail(429, retry_after=1), Reply("[]"))
    client = client_for(backend, settings)
    started = time.monotonic()
    completion = await client.complete("s", "u")
    elapsed = time.monotonic() - started
    calls = server.requests_for(API[backend])
    assert len(calls) == 2  # the SDK itself did not retry
    assert [c.status for c in calls] == [429, 200]
    assert calls[1].received_at - calls[0].received_at >= 1.0
    assert elapsed >= 1.0
    assert completion.attempts == 2
    assert client.usage.failures == {"rate_limited": 1}
    await client.aclose()


async def test_429_honours_retry_after_ms(server: FakeLLMServer, settings: Any) -> None:
    server.script("openai", Fail(429, retry_after_ms=300, retry_after=30), Reply("[]"))
    client = local(settings)
    completion = await client.complete("s", "u")
    calls = server.requests_for("openai")
    gap = calls[1].received_at - calls[0].received_at
    assert 0.3 <= gap < 5  # the precise ms header wins over the seconds one
    assert completion.attempts == 2
    await client.aclose()


async def test_retry_after_is_capped(server: FakeLLMServer, settings: Any) -> None:
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    server.script("anthropic", Fail(429, retry_after=3600), Reply("[]"))
    policy = RetryPolicy(max_retries=2, base_delay=0.01, max_retry_after=2.5)
    client = claude(settings, retry=policy, sleep=record_sleep)
    assert (await client.complete("s", "u")).attempts == 2
    assert waits == [2.5]
    await client.aclose()


@pytest.mark.parametrize("status", [500, 502, 503, 529])
async def test_5xx_then_success(
    backend: str, server: FakeLLMServer, settings: Any, status: int
) -> None:
    server.script(API[backend], Fail(status), Reply("[]", output_tokens=3))
    client = client_for(backend, settings)
    completion = await client.complete("s", "u")
    assert completion.attempts == 2
    assert completion.output_tokens == 3
    assert server.calls(API[backend]) == 2
    await client.aclose()


async def test_hang_past_timeout_then_success(
    backend: str, server: FakeLLMServer, settings: Any
) -> None:
    server.script(API[backend], Hang(5), Reply(json.dumps(RECORDS)))
    client = client_for(backend, settings, timeout=0.4)
    started = time.monotonic()
    completion = await client.complete("s", "u")
    elapsed = time.monotonic() - started
    assert completion.attempts == 2
    assert parse_records(completion.text) == RECORDS
    assert elapsed >= 0.4  # the first attempt waited its timeout (then was retried)
    assert client.usage.failures == {"timeout": 1}
    await client.aclose()


@pytest.mark.parametrize(
    ("status", "reason"),
    [
        (401, "authentication"),
        (403, "permission"),
        (400, "invalid_request"),
        (404, "not_found"),
        (422, "invalid_request"),
    ],
)
async def test_permanent_errors_are_not_retried(
    backend: str, server: FakeLLMServer, settings: Any, status: int, reason: str
) -> None:
    server.script(API[backend], Fail(status, message="nope"), Reply("[]"))
    client = client_for(backend, settings)
    with pytest.raises(LLMPermanentError) as info:
        await client.complete("s", "u")
    assert info.value.backend == backend
    assert info.value.reason == reason
    assert info.value.status_code == status
    assert backend in str(info.value)
    assert server.calls(API[backend]) == 1
    assert server.pending(API[backend]) == 1  # the success was never asked for
    await client.aclose()


async def test_exhausted_retries_raise_unavailable(
    backend: str, server: FakeLLMServer, settings: Any
) -> None:
    server.script(API[backend], Fail(503), Fail(500), Fail(429))
    policy = RetryPolicy(max_retries=2, base_delay=0.01, max_delay=0.02)
    client = client_for(backend, settings, retry=policy)
    with pytest.raises(LLMUnavailable) as info:
        await client.complete("s", "u")
    err = info.value
    assert err.backend == backend
    assert err.attempts == 3
    assert err.reason == "rate_limited"
    assert err.status_code == 429
    assert server.calls(API[backend]) == 3
    await client.aclose()


async def test_connection_refused_is_unavailable(backend: str) -> None:
    port = closed_port()
    settings = make_settings(
        None,
        anthropic_base_url=f"http://127.0.0.1:{port}",
        vllm_base_url=f"http://127.0.0.1:{port}/v1",
    )
    client = client_for(backend, settings, retry=RetryPolicy(max_retries=1, base_delay=0.01))
    with pytest.raises(LLMUnavailable) as info:
        await client.complete("s", "u")
    assert info.value.reason == "connection"
    assert info.value.attempts == 2
    assert not await client.health()
    await client.aclose()


async def test_backoff_grows_exponentially_with_jitter(
    server: FakeLLMServer, settings: Any
) -> None:
    waits: list[float] = []

    async def record_sleep(seconds: float) -> None:
        waits.append(seconds)

    server.script("anthropic", Fail(500), Fail(500), Fail(500), Reply("[]"))
    policy = RetryPolicy(max_retries=3, base_delay=1.0, max_delay=3.0, jitter=0.5)
    client = claude(settings, retry=policy, sleep=record_sleep, rng=random.Random(7))
    assert (await client.complete("s", "u")).attempts == 4
    assert len(waits) == 3
    for wait, full in zip(waits, [1.0, 2.0, 3.0], strict=True):
        assert full * 0.5 <= wait <= full
    await client.aclose()


def test_parse_retry_after_forms() -> None:
    now = datetime(2025, 1, 1, tzinfo=UTC)
    assert parse_retry_after({"retry-after": "2"}) == 2.0
    assert parse_retry_after({"retry-after": "1.5"}) == 1.5
    assert parse_retry_after({"retry-after-ms": "250", "retry-after": "9"}) == 0.25
    date = format_datetime(now + timedelta(seconds=30), usegmt=True)
    assert parse_retry_after({"retry-after": date}, now=now) == pytest.approx(30)
    assert parse_retry_after({"retry-after": "soon"}) is None
    assert parse_retry_after({}) is None


# -------------------------------------------------------------- concurrency and health


async def test_concurrent_calls_overlap(server: FakeLLMServer, settings: Any) -> None:
    server.fixed_delay_ms = 300
    client = claude(settings)
    started = time.monotonic()
    results = await asyncio.gather(*(client.complete("s", f"u{i}") for i in range(6)))
    elapsed = time.monotonic() - started
    assert all(isinstance(r, Completion) for r in results)
    assert server.max_in_flight >= 2  # run together (no wall-clock bound: load varies)
    assert elapsed >= 0.3
    await client.aclose()


async def test_concurrency_limit_is_respected(server: FakeLLMServer, settings: Any) -> None:
    server.fixed_delay_ms = 100
    client = local(settings, concurrency=2)
    await asyncio.gather(*(client.complete("s", "u") for _ in range(6)))
    assert server.max_in_flight <= 2
    await client.aclose()


async def test_health(backend: str, server: FakeLLMServer, settings: Any) -> None:
    client = client_for(backend, settings)
    assert await client.health()
    await client.aclose()


async def test_aclose_closes_the_http_client(
    backend: str, server: FakeLLMServer, settings: Any
) -> None:
    client = client_for(backend, settings)
    await client.complete("s", "u")  # a pooled keep-alive connection is now open
    sdk = client.sdk
    assert not sdk.is_closed()
    await client.aclose()
    assert sdk.is_closed()  # the SDK's httpx client
    await client.aclose()  # idempotent


async def test_aclose_before_any_call_makes_no_sdk(backend: str) -> None:
    client = client_for(backend, make_settings(None))
    await client.aclose()
    await client.aclose()
    assert client._sdk is None


# ------------------------------------------------------------------- configuration


def test_build_clients_order_and_configuration() -> None:
    def names(**kw: Any) -> list[str]:
        return [c.backend for c in build_clients(make_settings(None, **kw))]

    assert names() == ["claude", "openai_compat"]
    assert names(llm_enabled_local=False) == ["claude"]
    assert names(use_local_llm=True) == ["openai_compat", "claude"]
    assert names(use_local_llm=True, anthropic_api_key=None) == ["openai_compat"]
    assert names(anthropic_api_key="", llm_enabled_local=False) == []
    for client in build_clients(make_settings(None)):
        assert isinstance(client, LLMClient)


def test_clients_read_settings() -> None:
    settings = make_settings(None, anthropic_base_url="http://example.invalid:1")
    c = ClaudeClient.from_settings(settings)
    assert (c.model, c.max_tokens, c.timeout) == ("claude-test-model", 1234, 5.0)
    assert c.base_url == "http://example.invalid:1"
    assert c.temperature is None
    assert c.retry.max_retries == 3
    assert c.is_configured
    assert not ClaudeClient(api_key=None).is_configured
    o = OpenAICompatClient.from_settings(settings)
    assert (o.model, o.base_url, o.temperature) == ("fake/llama-3-8b", "http://127.0.0.1:9/v1", 0.3)


def test_retry_and_temperature_settings_reach_clients() -> None:
    settings = make_settings(
        None,
        llm_retry_base_seconds=0.25,
        llm_retry_max_seconds=4.0,
        claude_send_temperature=True,
    )
    c = ClaudeClient.from_settings(settings)
    assert (c.retry.base_delay, c.retry.max_delay) == (0.25, 4.0)
    assert c.temperature == pytest.approx(0.3)


async def test_unconfigured_client_refuses() -> None:
    client = ClaudeClient(api_key=None)
    with pytest.raises(LLMPermanentError) as info:
        await client.complete("s", "u")
    assert info.value.reason == "not_configured"
    assert not await client.health()
