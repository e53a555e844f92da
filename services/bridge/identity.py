"""Who is calling: each gRPC call's tenant, from a bearer token or a client certificate.

Seen: no credentials anywhere; the self-declared `x-client-id` chose the rate-limit bucket
(rotating it bypassed the limit 40 of 40 times) and scoped idempotency keys, and anyone who
knew a request id could resume that stream and read its whole dataset.

With any authentication configured (static tokens, JWT keys, or client certificates:
credentials.py), every call but the health checks and reflection needs a credential, and
one that proves no tenant is UNAUTHENTICATED. The tenant scopes what a caller can reach
again: its pinned requests (resume), result cache, idempotency keys and rate limit;
`x-client-id` is only a label inside a tenant. Without authentication every call is tenant
`local`, and the bridge serves only on a loopback address (server.py refuses another
BIND_HOST unless ALLOW_UNAUTHENTICATED says so). TLS (GRPC_TLS_CERT_FILE, _KEY_FILE)
protects the connection; with GRPC_TLS_CLIENT_CA_FILE a client must also present a
certificate that CA signed (mutual TLS).
"""

from __future__ import annotations

import inspect
from collections.abc import Awaitable, Callable, Iterable
from contextvars import ContextVar
from pathlib import Path
from typing import Any

import grpc

from services.kit.settings import AuthSettings
from services.kit.wire.tenancy import LOCAL

from .credentials import (
    CredentialsInvalid,
    JwtKeys,
    Refused,
    Tokens,
    certificate_tenant,
    read_text,
)

__all__ = [
    "LOCAL",
    "TENANT",
    "Authenticate",
    "Authenticator",
    "CredentialsInvalid",
    "Tokens",
    "bearer",
    "server_credentials",
]

#: The calling tenant, set for the duration of each authenticated call.
TENANT: ContextVar[str] = ContextVar("tenant", default=LOCAL)
#: Methods anyone may call: liveness and readiness probes, and reflection.
OPEN_PREFIXES = (
    "/grpc.health.v1.Health/",
    "/grpc.reflection.",
    "/testdata.v1.TestDataService/HealthCheck",
)


class Authenticator:
    """Which tenant a call's credentials prove: a bearer token (static, else a JWT), else
    a verified client certificate's common name."""

    def __init__(
        self,
        tokens: Tokens | None = None,
        jwts: JwtKeys | None = None,
        certificates: bool = False,
    ):
        self.tokens, self.jwts, self.certificates = tokens, jwts, certificates

    @classmethod
    def from_settings(cls, s: AuthSettings) -> Authenticator | None:
        """None when no authentication is configured; CredentialsInvalid for a bad file."""
        tokens = Tokens.load(s.auth_tokens_file) if s.auth_tokens_file else None
        claims = {
            "issuer": s.auth_jwt_issuer,
            "audience": s.auth_jwt_audience,
            "tenant_claim": s.auth_jwt_tenant_claim,
        }
        jwts = None
        if s.auth_jwt_jwks_file:
            where = f"AUTH_JWT_JWKS_FILE {s.auth_jwt_jwks_file}"
            jwts = JwtKeys.from_jwks(
                read_text(s.auth_jwt_jwks_file, "AUTH_JWT_JWKS_FILE"), where, **claims
            )
        elif s.auth_jwt_public_key_file:
            where = f"AUTH_JWT_PUBLIC_KEY_FILE {s.auth_jwt_public_key_file}"
            jwts = JwtKeys.from_pem(
                read_text(s.auth_jwt_public_key_file, "AUTH_JWT_PUBLIC_KEY_FILE"), where, **claims
            )
        certificates = bool(s.grpc_tls_client_ca_file)
        if tokens is None and jwts is None and not certificates:
            return None
        return cls(tokens, jwts, certificates)

    def tenant(
        self, metadata: Iterable[tuple[str, Any]] | None, auth_context: dict[str, list[bytes]]
    ) -> str:
        """The calling tenant; Refused saying what is missing or wrong."""
        token = bearer(metadata)
        if token is not None:
            if self.tokens is not None and (tenant := self.tokens.tenant(token)) is not None:
                return tenant
            if self.jwts is not None:
                return self.jwts.tenant(token)
            raise Refused("this call needs a known bearer token")
        if self.certificates and (tenant := certificate_tenant(auth_context)) is not None:
            return tenant
        wanted = ["`authorization: Bearer <token>`"] if self.tokens or self.jwts else []
        wanted += ["a client certificate naming a tenant"] if self.certificates else []
        raise Refused("this call needs " + " or ".join(wanted))


def describe(s: AuthSettings) -> str:
    """How gRPC callers are admitted, in a few words (the start banner)."""
    proofs = [
        name
        for name, on in (
            ("bearer tokens", s.auth_tokens_file),
            ("JWTs", s.auth_jwt_jwks_file or s.auth_jwt_public_key_file),
            ("client certificates", s.grpc_tls_client_ca_file),
        )
        if on
    ]
    tls = "TLS" if s.grpc_tls_cert_file else "no TLS"
    if not proofs:
        return f"no authentication (one tenant, {LOCAL}), {tls}"
    return f"{', '.join(proofs)} name each caller's tenant; {tls}"


def server_credentials(s: AuthSettings) -> grpc.ServerCredentials | None:
    """TLS for the gRPC port (GRPC_TLS_*), None without it; CredentialsInvalid for a
    missing file or a half configuration."""
    cert, key, ca = s.grpc_tls_cert_file, s.grpc_tls_key_file, s.grpc_tls_client_ca_file
    if not cert and not key:
        if ca:
            raise CredentialsInvalid(
                "GRPC_TLS_CLIENT_CA_FILE needs GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE"
            )
        return None
    if not cert or not key:
        raise CredentialsInvalid("TLS needs both GRPC_TLS_CERT_FILE and GRPC_TLS_KEY_FILE")

    def pem(path: str, setting: str) -> bytes:
        try:
            return Path(path).read_bytes()
        except OSError as exc:
            raise CredentialsInvalid(f"{setting} {path}: {exc.strerror or exc}") from exc

    return grpc.ssl_server_credentials(
        [(pem(key, "GRPC_TLS_KEY_FILE"), pem(cert, "GRPC_TLS_CERT_FILE"))],
        root_certificates=pem(ca, "GRPC_TLS_CLIENT_CA_FILE") if ca else None,
        require_client_auth=bool(ca),
    )


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
    """The gRPC interceptor: a tenant for each call, or UNAUTHENTICATED. Decided inside
    the call, where the peer's certificate (the auth context) is known."""

    def __init__(self, authenticator: Authenticator):
        self.authenticator = authenticator

    async def _tenant(self, context: grpc.aio.ServicerContext) -> str:
        try:
            return self.authenticator.tenant(
                context.invocation_metadata(), context.auth_context() or {}
            )
        except Refused as exc:
            await context.abort(grpc.StatusCode.UNAUTHENTICATED, str(exc))
            raise  # abort raised already; for the type checker

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
        if inspect.isasyncgenfunction(fn):

            async def as_tenant_gen(request: Any, context: grpc.aio.ServicerContext) -> Any:
                reset = TENANT.set(await self._tenant(context))
                try:
                    async for item in fn(request, context):
                        yield item
                finally:
                    TENANT.reset(reset)

            return _rebuilt(handler, kind, as_tenant_gen)

        async def as_tenant(request: Any, context: grpc.aio.ServicerContext) -> Any:
            reset = TENANT.set(await self._tenant(context))
            try:
                return await fn(request, context)
            finally:
                TENANT.reset(reset)

        return _rebuilt(handler, kind, as_tenant)
