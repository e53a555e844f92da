"""Result chunks nobody else can write: an HMAC of each chunk under a key the services share.

Seen: any Kafka client that could write to a bridge's reply topic forged chunks into its
callers' streams (358 forged chunks in a 300,000-record stream that ended OK with 41,000
records; a unary caller got the attacker's error text). The correlation id alone does not
stop that: it travels in the request, which anyone who can read the requests topic sees.

With CHUNK_SIGNING_KEY set (`testdata run` makes one for its processes), every chunk sent
to a reply topic carries `signature`: HMAC-SHA256 over the chunk's value, its attempt
(`correlation-id`) and run (`run-id`), so a chunk cannot be moved to another request or
attempt either. A bridge drops (and counts) any chunk whose signature does not verify.
Without a key nothing is signed and the correlation id is the only check (docs/security.md).
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Sequence

from services.kit.wire.headers import SIGNATURE, correlation_of, run_of

_DOMAIN = b"testdata-chunk-v1\0"


def signature(key: bytes, value: bytes, correlation: str | None, run: str) -> bytes:
    mac = hmac.new(key, _DOMAIN, hashlib.sha256)
    mac.update((correlation or "").encode() + b"\0" + run.encode() + b"\0")
    mac.update(value)
    return mac.hexdigest().encode()


def signed(
    key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]
) -> list[tuple[str, bytes]]:
    """`headers` with the chunk's signature added (unchanged without a key)."""
    out = [(k, v) for k, v in headers if k != SIGNATURE]
    if key:
        out.append((SIGNATURE, signature(key, value, correlation_of(out), run_of(out))))
    return out


def genuine(key: bytes | None, value: bytes, headers: Sequence[tuple[str, bytes]]) -> bool:
    """Whether a chunk was written by a holder of `key` for the attempt it names (True
    for every chunk when there is no key)."""
    if not key:
        return True
    # a null header is no signature (seen: one made compare_digest raise and killed a reader)
    got = next((v for k, v in headers if k == SIGNATURE), None) or b""
    return hmac.compare_digest(got, signature(key, value, correlation_of(headers), run_of(headers)))
