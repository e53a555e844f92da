"""LLM backends behind one small interface, on the official SDKs, with our own retry policy.

`ClaudeClient` speaks the Anthropic Messages API (`anthropic.AsyncAnthropic`),
`OpenAICompatClient` the OpenAI Chat Completions API (`openai.AsyncOpenAI`, e.g. a vLLM
server). Both SDKs run with `max_retries=0`; `complete()` retries here instead so the
policy (what is retried, how long to wait, how many times) is the same for every backend:

* retried, with exponential backoff and jitter: 429 (honouring `retry-after-ms` /
  `retry-after`, capped), 408/409, 5xx, timeouts, connection failures, malformed answers;
* not retried, `LLMPermanentError`: 401/403, 400/404/413/422 and other 4xx;
* retries exhausted: `LLMUnavailable`.

`build_clients(settings.llm)` returns the configured backends in fallback order.
"""

from __future__ import annotations

import asyncio
import contextlib
import email.utils
import logging
import random
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import (
    Any,
    ClassVar,
    Generic,
    NamedTuple,
    Protocol,
    Self,
    TypedDict,
    TypeVar,
    Unpack,
    runtime_checkable,
)

import anthropic
import openai
from pydantic import BaseModel, ConfigDict

from services.kit.settings import LLMSettings
from services.llm.errors import LLMPermanentError, LLMUnavailable

log = logging.getLogger(__name__)

# The anthropic SDK 2.x sends `anthropic-version: 2026-10-21`, which rejects sampling
# parameters (temperature/top_p/top_k) with a 400 even at their defaults; the SDK no
# longer accepts them as arguments. Sending a temperature therefore needs both
# `extra_body` and the previous API version, so it is opt-in (see ClaudeClient).
LEGACY_SAMPLING_API_VERSION = "2023-06-01"


class Completion(BaseModel):
    """One model answer and what it cost."""

    model_config = ConfigDict(frozen=True)

    text: str
    input_tokens: int = 0
    output_tokens: int = 0
    model: str
    backend: str
    attempts: int = 1
    stop_reason: str | None = None
    latency_ms: float = 0.0  # of the successful call only

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens

    @property
    def truncated(self) -> bool:
        """The model stopped because it ran out of output tokens."""
        return self.stop_reason in ("max_tokens", "length")


@runtime_checkable
class LLMClient(Protocol):
    """What the generator needs from a backend."""

    model: str

    @property
    def backend(self) -> str:
        """Short backend name ("claude", "openai_compat"), carried by errors too."""
        ...

    @property
    def is_configured(self) -> bool: ...

    async def complete(
        self, system: str, user: str, *, max_tokens: int | None = None
    ) -> Completion: ...

    async def health(self) -> bool: ...

    async def aclose(self) -> None: ...


@dataclass(frozen=True)
class RetryPolicy:
    """How often and how long to wait between attempts.

    `max_retries` retries after the first attempt (so `max_retries + 1` calls at most).
    Retry n waits `base_delay * 2**(n-1)` capped at `max_delay`, reduced by up to
    `jitter` (a fraction) at random; a server's retry-after hint replaces that wait,
    capped at `max_retry_after`.
    """

    max_retries: int = 3
    base_delay: float = 1.0
    max_delay: float = 30.0
    max_retry_after: float = 60.0
    jitter: float = 0.5

    def delay(self, retry_number: int, retry_after: float | None, rng: random.Random) -> float:
        if retry_after is not None:
            return max(0.0, min(retry_after, self.max_retry_after))
        exp = min(self.max_delay, self.base_delay * 2.0 ** max(0, retry_number - 1))
        return max(0.0, exp * (1.0 - self.jitter * rng.random()))

    @classmethod
    def from_settings(cls, llm: LLMSettings) -> RetryPolicy:
        return cls(
            max_retries=max(0, llm.llm_max_retries),
            base_delay=llm.llm_retry_base_seconds,
            max_delay=llm.llm_retry_max_seconds,
        )


@dataclass
class UsageTotals:
    """Running totals over a client's lifetime (successful calls only for tokens)."""

    calls: int = 0  # HTTP calls made, including failed attempts
    completions: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    failures: dict[str, int] = field(default_factory=dict)

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class _Failure(NamedTuple):
    retryable: bool
    reason: str
    status: int | None = None
    retry_after: float | None = None


class _BadResponse(Exception):
    """The backend answered 200 with something we cannot use (no choices, ...)."""


class _Result(NamedTuple):
    text: str
    input_tokens: int
    output_tokens: int
    model: str
    stop_reason: str | None


def parse_retry_after(headers: Any, *, now: datetime | None = None) -> float | None:
    """Seconds to wait per `retry-after-ms` (preferred) or `retry-after` (seconds or an
    HTTP date); None when absent or unreadable."""
    if headers is None:
        return None
    raw_ms = headers.get("retry-after-ms")
    if raw_ms is not None:
        try:
            return max(0.0, float(raw_ms) / 1000.0)
        except ValueError:
            pass
    raw = headers.get("retry-after")
    if raw is None:
        return None
    try:
        return max(0.0, float(raw))
    except ValueError:
        pass
    try:
        when = email.utils.parsedate_to_datetime(raw)
    except (TypeError, ValueError, IndexError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    return max(0.0, (when - (now or datetime.now(UTC))).total_seconds())


_PERMANENT_STATUS = {
    400: "invalid_request",
    401: "authentication",
    403: "permission",
    404: "not_found",
    413: "invalid_request",
    422: "invalid_request",
}


def classify_error(exc: BaseException) -> _Failure | None:
    """How a failed call should be treated; None for errors that are not the backend's
    (programming errors), which propagate unchanged."""
    if isinstance(exc, TimeoutError):
        return _Failure(True, "timeout")
    if isinstance(exc, _BadResponse):
        return _Failure(True, "bad_response")
    if isinstance(exc, anthropic.APITimeoutError | openai.APITimeoutError):
        return _Failure(True, "timeout")
    if isinstance(exc, anthropic.APIConnectionError | openai.APIConnectionError):
        return _Failure(True, "connection")
    if isinstance(exc, anthropic.APIStatusError | openai.APIStatusError):
        status = exc.status_code
        if status == 429:
            return _Failure(True, "rate_limited", status, parse_retry_after(exc.response.headers))
        if status in (408, 409) or status >= 500:
            reason = {408: "timeout", 409: "conflict", 529: "overloaded"}.get(
                status, "server_error"
            )
            return _Failure(True, reason, status, parse_retry_after(exc.response.headers))
        return _Failure(False, _PERMANENT_STATUS.get(status, "client_error"), status)
    if isinstance(exc, anthropic.APIResponseValidationError | openai.APIResponseValidationError):
        return _Failure(True, "bad_response")
    if isinstance(exc, anthropic.AnthropicError | openai.OpenAIError):
        return _Failure(False, "sdk_error")
    return None


def _describe(exc: BaseException) -> str:
    text = str(exc) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."


class _AsyncSDK(Protocol):
    """What the base class needs of an SDK client: a way to release its connections."""

    async def close(self) -> None: ...


_SdkT = TypeVar("_SdkT", bound=_AsyncSDK)


class ClientOptions(TypedDict, total=False):
    """Constructor arguments every backend takes with the same meaning and default, so
    the subclasses name only what differs (`**options: Unpack[ClientOptions]`)."""

    max_tokens: int
    timeout: float
    retry: RetryPolicy | None
    concurrency: int | None
    sleep: Callable[[float], Awaitable[Any]] | None
    rng: random.Random | None
    default_headers: dict[str, str] | None


class _RetryingClient(Generic[_SdkT]):
    """Retry loop, timeout, concurrency limit, usage accounting and the SDK's lifecycle,
    shared by backends.

    A subclass says which SDK it wraps (`_make_sdk`), how a call and a models listing
    look in it (`_call`, `_list_models`), when it counts as configured, and which
    settings it reads (`_settings_kwargs`). The SDK is made on first use, always with
    `max_retries=0` (the retry policy lives here); `aclose()` releases it.
    """

    backend: ClassVar[str] = "llm"

    def __init__(
        self,
        *,
        api_key: str | None,
        base_url: str | None,
        model: str,
        temperature: float | None,
        max_tokens: int = 4096,
        timeout: float = 60.0,
        retry: RetryPolicy | None = None,
        concurrency: int | None = None,
        sleep: Callable[[float], Awaitable[Any]] | None = None,
        rng: random.Random | None = None,
        default_headers: dict[str, str] | None = None,
    ) -> None:
        self.api_key = api_key
        self.base_url = base_url
        self.model = model
        self.temperature = temperature
        self.max_tokens = max_tokens
        self.timeout = timeout
        self.retry = retry or RetryPolicy()
        self.usage = UsageTotals()
        self._slots = asyncio.Semaphore(concurrency) if concurrency and concurrency > 0 else None
        self._sleep = sleep or asyncio.sleep
        self._rng = rng or random.Random()
        self._default_headers = default_headers
        self._sdk: _SdkT | None = None

    @classmethod
    def _settings_kwargs(cls, llm: LLMSettings) -> dict[str, Any]:
        """This backend's own constructor arguments as configured in `llm`."""
        raise NotImplementedError

    @classmethod
    def from_settings(cls, llm: LLMSettings, **overrides: Any) -> Self:
        """A client as configured; `overrides` (e.g. `retry=`, `sleep=`) win over settings."""
        kwargs: dict[str, Any] = {
            "timeout": llm.llm_timeout_seconds,
            "retry": RetryPolicy.from_settings(llm),
            "concurrency": llm.llm_concurrency,
            **cls._settings_kwargs(llm),
            **overrides,
        }
        return cls(**kwargs)

    def _make_sdk(self, **options: Any) -> _SdkT:
        """The SDK client, built from `options` (the same for every SDK)."""
        raise NotImplementedError

    @property
    def sdk(self) -> _SdkT:
        """The SDK client, made on first use so that building a client opens nothing."""
        if self._sdk is None:
            self._sdk = self._make_sdk(
                api_key=self.api_key,
                base_url=self.base_url,
                max_retries=0,
                timeout=self.timeout,
                default_headers=self._default_headers,
            )
        return self._sdk

    async def aclose(self) -> None:
        """Close the SDK's HTTP connections (on shutdown). Idempotent, and a no-op when no
        call ever made the SDK; a later call would make a fresh one."""
        sdk, self._sdk = self._sdk, None
        if sdk is not None:
            await sdk.close()

    async def _call(self, system: str, user: str, max_tokens: int) -> _Result:
        raise NotImplementedError

    async def complete(
        self, system: str, user: str, *, max_tokens: int | None = None
    ) -> Completion:
        """One completion: `system` instructions, one `user` turn; retried per policy."""
        if not self.is_configured:
            raise LLMPermanentError(
                f"{self.backend}: backend is not configured",
                backend=self.backend,
                reason="not_configured",
            )
        limit = max_tokens or self.max_tokens
        attempt = 0
        while True:
            attempt += 1
            started = 0.0
            try:
                async with self._slot():
                    self.usage.calls += 1
                    started = time.perf_counter()
                    async with asyncio.timeout(self.timeout):
                        result = await self._call(system, user, limit)
            except Exception as exc:
                failure = classify_error(exc)
                if failure is None:
                    raise
                self.usage.failures[failure.reason] = self.usage.failures.get(failure.reason, 0) + 1
                if not failure.retryable:
                    raise LLMPermanentError(
                        f"{self.backend}: {failure.reason}: {_describe(exc)}",
                        backend=self.backend,
                        reason=failure.reason,
                        status_code=failure.status,
                    ) from exc
                if attempt > self.retry.max_retries:
                    raise LLMUnavailable(
                        f"{self.backend}: gave up after {attempt} attempt(s); "
                        f"last failure {failure.reason}: {_describe(exc)}",
                        backend=self.backend,
                        reason=failure.reason,
                        attempts=attempt,
                        status_code=failure.status,
                    ) from exc
                wait = self.retry.delay(attempt, failure.retry_after, self._rng)
                log.warning(
                    "llm call failed; retrying",
                    extra={
                        "backend": self.backend,
                        "reason": failure.reason,
                        "status": failure.status,
                        "attempt": attempt,
                        "retry_in_s": round(wait, 3),
                    },
                )
                await self._sleep(wait)
                continue
            latency_ms = (time.perf_counter() - started) * 1000.0
            self.usage.completions += 1
            self.usage.input_tokens += result.input_tokens
            self.usage.output_tokens += result.output_tokens
            return Completion(
                text=result.text,
                input_tokens=result.input_tokens,
                output_tokens=result.output_tokens,
                model=result.model or self.model,
                backend=self.backend,
                attempts=attempt,
                stop_reason=result.stop_reason,
                latency_ms=latency_ms,
            )

    @contextlib.asynccontextmanager
    async def _slot(self) -> AsyncIterator[None]:
        if self._slots is None:
            yield
        else:
            async with self._slots:
                yield

    @property
    def is_configured(self) -> bool:
        raise NotImplementedError

    async def _list_models(self) -> Any:
        raise NotImplementedError

    async def health(self) -> bool:
        """True when the backend answers a cheap models listing (no tokens spent)."""
        if not self.is_configured:
            return False
        try:
            async with asyncio.timeout(min(self.timeout, 10.0)):
                await self._list_models()
        except Exception as exc:
            if classify_error(exc) is None:
                raise
            return False
        return True

    def __repr__(self) -> str:
        return f"{type(self).__name__}(model={self.model!r}, configured={self.is_configured})"


def _usage_int(usage: Any, name: str) -> int:
    value = getattr(usage, name, None) if usage is not None else None
    return int(value) if isinstance(value, int | float) else 0


class ClaudeClient(_RetryingClient[anthropic.AsyncAnthropic]):
    """Anthropic Messages API.

    `temperature` is sent only when given (not None): the SDK 2.x default API version
    rejects sampling parameters, so a temperature goes out in the request body with
    `anthropic-version` pinned to `LEGACY_SAMPLING_API_VERSION`.
    """

    backend: ClassVar[str] = "claude"

    def __init__(
        self,
        *,
        api_key: str | None,
        model: str = "claude-sonnet-4-20250514",
        temperature: float | None = None,
        base_url: str | None = None,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(
            api_key=api_key or None,
            base_url=base_url or None,
            model=model,
            temperature=temperature,
            **options,
        )

    @classmethod
    def _settings_kwargs(cls, llm: LLMSettings) -> dict[str, Any]:
        # A temperature goes out only on CLAUDE_SEND_TEMPERATURE (see the class docstring).
        send = llm.claude_send_temperature
        key = llm.anthropic_api_key
        return {
            "api_key": key.get_secret_value() if key else None,
            "base_url": llm.anthropic_base_url,
            "model": llm.claude_model,
            "max_tokens": llm.claude_max_tokens,
            "temperature": llm.claude_temperature if send else None,
        }

    def _make_sdk(self, **options: Any) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(**options)

    @property
    def is_configured(self) -> bool:
        return bool(self.api_key)

    async def _call(self, system: str, user: str, max_tokens: int) -> _Result:
        kwargs: dict[str, Any] = {}
        if self.temperature is not None:
            kwargs["extra_body"] = {"temperature": self.temperature}
            kwargs["extra_headers"] = {"anthropic-version": LEGACY_SAMPLING_API_VERSION}
        message = await self.sdk.messages.create(
            model=self.model,
            max_tokens=max_tokens,
            system=system,
            messages=[{"role": "user", "content": user}],
            timeout=self.timeout,
            **kwargs,
        )
        text = "".join(
            getattr(block, "text", "") or ""
            for block in (message.content or [])
            if getattr(block, "type", None) == "text"
        )
        usage = message.usage
        input_tokens = (
            _usage_int(usage, "input_tokens")
            + _usage_int(usage, "cache_creation_input_tokens")
            + _usage_int(usage, "cache_read_input_tokens")
        )
        return _Result(
            text=text,
            input_tokens=input_tokens,
            output_tokens=_usage_int(usage, "output_tokens"),
            model=message.model or self.model,
            stop_reason=message.stop_reason,
        )

    async def _list_models(self) -> Any:
        return await self.sdk.models.list(limit=1)


class OpenAICompatClient(_RetryingClient[openai.AsyncOpenAI]):
    """OpenAI Chat Completions API, as served by vLLM and other compatible servers.

    `base_url` ends in `/v1` (the SDK appends `/chat/completions`). `enabled=False`
    marks the backend as not deployed (then `is_configured` is False).
    """

    backend: ClassVar[str] = "openai_compat"

    def __init__(
        self,
        *,
        base_url: str,
        model: str,
        api_key: str = "EMPTY",
        temperature: float | None = 0.7,
        enabled: bool = True,
        **options: Unpack[ClientOptions],
    ) -> None:
        super().__init__(
            api_key=api_key or "EMPTY",
            base_url=base_url,
            model=model,
            temperature=temperature,
            **options,
        )
        self.enabled = enabled

    @classmethod
    def _settings_kwargs(cls, llm: LLMSettings) -> dict[str, Any]:
        # No VLLM_MAX_TOKENS / VLLM_TEMPERATURE settings exist: the CLAUDE_* values are the
        # generation knobs for every backend.
        return {
            "base_url": llm.vllm_base_url,
            "model": llm.vllm_model,
            "api_key": llm.vllm_api_key.get_secret_value(),
            "max_tokens": llm.claude_max_tokens,
            "temperature": llm.claude_temperature,
            "enabled": llm.use_local_llm or llm.llm_enabled_local,
        }

    def _make_sdk(self, **options: Any) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(**options)

    @property
    def is_configured(self) -> bool:
        return self.enabled and bool(self.base_url) and bool(self.model)

    async def _call(self, system: str, user: str, max_tokens: int) -> _Result:
        kwargs: dict[str, Any] = {}
        if self.temperature is not None:
            kwargs["temperature"] = self.temperature
        response = await self.sdk.chat.completions.create(
            model=self.model,
            messages=[
                {"role": "system", "content": system},
                {"role": "user", "content": user},
            ],
            max_tokens=max_tokens,
            timeout=self.timeout,
            **kwargs,
        )
        if not response.choices:
            raise _BadResponse("answer has no choices")
        choice = response.choices[0]
        usage = response.usage
        return _Result(
            text=(choice.message.content if choice.message else None) or "",
            input_tokens=_usage_int(usage, "prompt_tokens"),
            output_tokens=_usage_int(usage, "completion_tokens"),
            model=response.model or self.model,
            stop_reason=choice.finish_reason,
        )

    async def _list_models(self) -> Any:
        return await self.sdk.models.list()


def build_clients(llm: LLMSettings, **overrides: Any) -> list[LLMClient]:
    """The configured backends in fallback order.

    Claude first, then the OpenAI-compatible server; with USE_LOCAL_LLM the local server
    comes first (Claude stays as a fallback when it has a key). The local server counts
    as configured only when USE_LOCAL_LLM or LLM_ENABLED_LOCAL says one is deployed.
    `overrides` (e.g. `retry=`, `sleep=`) are passed to both constructors.
    """
    claude = ClaudeClient.from_settings(llm, **overrides)
    local = OpenAICompatClient.from_settings(llm, **overrides)
    order: list[LLMClient] = [local, claude] if llm.use_local_llm else [claude, local]
    return [c for c in order if c.is_configured]
