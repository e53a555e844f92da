"""Whose request a record is: the tenant a bridge vouched for, else the open tenant.

A gRPC caller's tenant is proven at the bridge (bridge/identity.py); past it the request
is a Kafka record, and anyone who may write the requests topic could put any `tenant`
header on one. So with CHUNK_SIGNING_KEY set the bridge vouches for each request it
publishes: `request-signature`, an HMAC over the request id, tenant, `reply-to` and
`correlation-id` (not the value, which the router re-encodes for the path topic). A
generator reads a request's tenant only through `origin()`: a vouched tenant, or `local`
for everything else (agents publishing on Kafka directly, whose scope is the cluster's
ACLs). That tenant scopes the result cache, travels on the request's result chunks (so
the results log says whose data each chunk is), and on its outcome to the learner (so
learned patterns stay the tenant's). Without a key nothing is verified: the header is
taken as written (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
import re
from collections.abc import Sequence
from contextvars import ContextVar
from dataclasses import dataclass

from services.kit.wire.headers import (
    CORRELATION,
    REPLY_TO,
    REQUEST_SIGNATURE,
    TENANT,
    header_text,
)

#: The tenant of callers nobody authenticated: gRPC without authentication, and agents
#: publishing on Kafka directly.
LOCAL = "local"
_TENANT_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$")
_DOMAIN = b"testdata-request-v1\0"
#: The tenant of the request a generator is working on (set for each request it handles,
#: so deep parts such as pattern retrieval scope by it without threading it through).
CURRENT: ContextVar[str] = ContextVar("current_tenant", default=LOCAL)


def valid_tenant(name: str) -> bool:
    """A tenant name: what every scope (cache keys, headers, log fields) carries safely."""
    return bool(_TENANT_RE.match(name))


@dataclass(frozen=True)
class Origin:
    tenant: str
    #: a bridge holding the key published it (always, without a key: nothing to check)
    vouched: bool


def _mac(key: bytes, request_id: str, headers: Sequence[tuple[str, bytes]]) -> bytes:
    fields = (request_id, header_text(headers, TENANT), header_text(headers, REPLY_TO))
    mac = hmac.new(key, _DOMAIN, hashlib.sha256)
    mac.update("\0".join((*fields, header_text(headers, CORRELATION))).encode())
    return mac.hexdigest().encode()


def vouch(
    key: bytes | None, request_id: str, tenant: str, headers: Sequence[tuple[str, bytes]]
) -> list[tuple[str, bytes]]:
    """`headers` with the tenant, and with a key its signature (the bridge's side)."""
    out = [(k, v) for k, v in headers if k not in (TENANT, REQUEST_SIGNATURE)]
    out.append((TENANT, tenant.encode()))
    if key:
        out.append((REQUEST_SIGNATURE, _mac(key, request_id, out)))
    return out


def origin(
    key: bytes | None, request_id: str, headers: Sequence[tuple[str, bytes]] | None
) -> Origin:
    """Whose request this is (the generators' and the datasets CLI's side)."""
    headers = headers or ()
    claimed = header_text(headers, TENANT)
    tenant = claimed if valid_tenant(claimed) else LOCAL
    if not key:
        return Origin(tenant, vouched=True)
    got = header_text(headers, REQUEST_SIGNATURE).encode()
    if got and hmac.compare_digest(got, _mac(key, request_id, headers)):
        return Origin(tenant, vouched=True)
    return Origin(LOCAL, vouched=False)
