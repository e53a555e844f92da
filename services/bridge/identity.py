"""Who is calling: each gRPC call's tenant, from a bearer token.

Seen: no credentials anywhere; the self-declared `x-client-id` chose the rate-limit bucket
(rotating it bypassed the limit 40 of 40 times) and scoped idempotency keys, and anyone who
knew a request id could resume that stream and read its whole dataset.

With AUTH_TOKENS_FILE set, every call but the health checks and reflection needs
`authorization: Bearer <token>`; the file maps each token to its tenant (one
`token,tenant` per line, `#` comments; tokens are kept only as SHA-256 digests in
memory). A call without a known token is UNAUTHENTICATED. The tenant scopes what a caller
can reach again: its pinned requests (resume), its idempotency keys and its rate limit;
`x-client-id` is only a label inside a tenant. Without a tokens file every call is tenant
`local`, and the bridge serves only on a loopback address (app.py refuses another
BIND_HOST unless ALLOW_UNAUTHENTICATED says so).
"""

from __future__ import annotations

import hashlib
import inspect
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import grpc

#: The tenant of a service without authentication.
LOCAL = "local"
#: The calling tenant, set for the duration of each authenticated call.
TENANT: ContextVar[str] = ContextVar("tenant", default=LOCAL)
#: Methods anyone may call: liveness and readiness probes, and reflection.
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
    "/testdata.v1.TestDataService/HealthCheck",
)


class TokensInvalid(ValueError):
    """The tokens file cannot be used (the message names the line)."""


class Tokens:
    """Token digests -> tenant. Pure: parsed from text, asked by token."""

    def __init__(self, by_digest: dict[str, str]):
        self._by_digest = by_digest

    @staticmethod
    def _digest(token: str) -> str:
        return hashlib.sha256(token.encode()).hexdigest()

    @classmethod
    def parse(cls, text: str, where: str = "the tokens file") -> Tokens:
        by_digest: dict[str, str] = {}
        for n, raw in enumerate(text.splitlines(), 1):
            line = raw.strip()
            if not line or line.startswith("#"):
                continue
            token, sep, tenant = (part.strip() for part in line.partition(","))
            if not sep or not token or not tenant or "," in tenant:
                raise TokensInvalid(f"{where}, line {n}: expected `token,tenant`")
            if len(token) < 16:
                raise TokensInvalid(f"{where}, line {n}: a token needs 16 characters or more")
            if not tenant.replace("-", "").replace("_", "").replace(".", "").isalnum():
                raise TokensInvalid(f"{where}, line {n}: a tenant is letters, digits, - _ .")
            by_digest[cls._digest(token)] = tenant
        if not by_digest:
            raise TokensInvalid(f"{where} holds no token")
        return cls(by_digest)

    @classmethod
    def load(cls, path: str) -> Tokens:
        try:
            text = Path(path).read_text()
        except OSError as exc:
            raise TokensInvalid(f"AUTH_TOKENS_FILE {path}: {exc.strerror or exc}") from exc
        return cls.parse(text, f"AUTH_TOKENS_FILE {path}")

    def tenant(self, token: str) -> str | None:
        return self._by_digest.get(self._digest(token))


def bearer(metadata: Iterable[tuple[str, Any]] | None) -> str | None:
    """The token of an `authorization: Bearer <token>` header, if any."""
    for key, value in metadata or ():
        if key == "authorization":
            text = value.decode() if isinstance(value, bytes) else str(value)
            scheme, _, token = text.partition(" ")
            if scheme.lower() == "bearer" and token.strip():
                return token.strip()
    return None


def _behaviour(
    handler: grpc.RpcMethodHandler,
) -> tuple[str, Callable[..., Any]] | None:
    for kind in ("unary_unary", "unary_stream"):
        if (fn := getattr(handler, kind)) is not None:
            return kind, fn
    return None


def _rebuilt(handler: grpc.RpcMethodHandler, kind: str, fn: Callable[..., Any]) -> Any:
    make = getattr(grpc, f"{kind}_rpc_method_handler")
    return make(
        fn,
        request_deserializer=handler.request_deserializer,
        response_serializer=handler.response_serializer,
    )


class Authenticate(grpc.aio.ServerInterceptor):
    """The gRPC interceptor: a tenant for each call, or UNAUTHENTICATED."""

    def __init__(self, tokens: Tokens):
        self.tokens = tokens

    async def intercept_service(
        self,
        continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]],
        details: grpc.HandlerCallDetails,
    ) -> grpc.RpcMethodHandler:
        handler = await continuation(details)
        if handler is None or details.method.startswith(OPEN_PREFIXES):
            return handler
        found = _behaviour(handler)
        if found is None:  # a streaming-request method: none is offered
            return handler
        kind, fn = found
        token = bearer(details.invocation_metadata)
        tenant = self.tokens.tenant(token) if token else None
        if tenant is None:
            why = "a known bearer token" if token else "`authorization: Bearer <token>`"

            async def refuse(request: Any, context: grpc.aio.ServicerContext) -> None:
                await context.abort(grpc.StatusCode.UNAUTHENTICATED, f"this call needs {why}")

            return _rebuilt(handler, kind, refuse)
        if inspect.isasyncgenfunction(fn):

            async def as_tenant_gen(request: Any, context: grpc.aio.ServicerContext) -> Any:
                reset = TENANT.set(tenant)
                try:
                    async for item in fn(request, context):
                        yield item
                finally:
                    TENANT.reset(reset)

            return _rebuilt(handler, kind, as_tenant_gen)

        async def as_tenant(request: Any, context: grpc.aio.ServicerContext) -> Any:
            reset = TENANT.set(tenant)
            try:
                return await fn(request, context)
            finally:
                TENANT.reset(reset)

        return _rebuilt(handler, kind, as_tenant)
