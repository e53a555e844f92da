"""Errors of the LLM layer. Every one names the backend and a short machine-readable reason."""

from __future__ import annotations


class LLMError(Exception):
    """Base of every error this package raises."""

    def __init__(self, message: str, *, backend: str = "", reason: str = "") -> None:
        super().__init__(message)
        self.backend = backend
        self.reason = reason


class LLMPermanentError(LLMError):
    """The backend refused the request in a way retrying cannot fix.

    Authentication/permission failures and invalid requests (400/404/422 ...). `reason`
    is one of "authentication", "permission", "invalid_request", "not_found",
    "client_error", "sdk_error"; `status_code` is the HTTP status when there was one.
    """

    def __init__(
        self,
        message: str,
        *,
        backend: str = "",
        reason: str = "",
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, backend=backend, reason=reason)
        self.status_code = status_code


class LLMUnavailable(LLMError):
    """The backend could not answer within the retry budget (rate limits, timeouts,
    connection failures, 5xx). `reason` is the last failure's kind ("rate_limited",
    "timeout", "connection", "server_error", ...); `attempts` how many calls were made."""

    def __init__(
        self,
        message: str,
        *,
        backend: str = "",
        reason: str = "",
        attempts: int = 0,
        status_code: int | None = None,
    ) -> None:
        super().__init__(message, backend=backend, reason=reason)
        self.attempts = attempts
        self.status_code = status_code


class LLMOutputError(LLMError):
    """The model answered, but no usable JSON records could be read from the text."""

    def __init__(self, message: str, *, backend: str = "", snippet: str = "") -> None:
        super().__init__(message, backend=backend, reason="unparseable_output")
        self.snippet = snippet
