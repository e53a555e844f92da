"""Kafka header names every service and agent shares, declared once.

- `content-type`: `application/avro` (single-object encoding) or `application/json`;
- `reply-to`: the results-family topic a request's chunks go to (a bridge's own topic);
- `correlation-id`: one attempt of a request; echoed on its chunks so a retry with the
  same request id never receives an earlier attempt's chunks;
- `deadline-ms`: when the caller stops waiting (Unix epoch milliseconds); a router or
  generator that gets the request later skips it, and generation stops when it passes.
"""

from __future__ import annotations

from collections.abc import Sequence

CONTENT_TYPE = "content-type"
REPLY_TO = "reply-to"
CORRELATION = "correlation-id"
DEADLINE = "deadline-ms"
#: On result chunks of a path whose reruns differ (LLM...): one id per run, so a bridge
#: never splices two runs of one attempt. Absent: every run yields the same chunks.
RUN = "run-id"
#: On the results log's JSON copy of a CSV or SQL chunk (value `json`): a copy kept so the
#: records of a path a request cannot rebuild can be read back; callers skip it.
LOG_COPY = "log-copy"
#: On result chunks sent to a reply topic, when the services share CHUNK_SIGNING_KEY: an
#: HMAC the bridge checks (kit/signing.py), so nobody else can write a caller's chunks.
SIGNATURE = "signature"
#: On requests a bridge publishes, and on their result chunks: whose request it is.
TENANT = "tenant"
#: On requests a bridge publishes, with CHUNK_SIGNING_KEY: its HMAC vouching for the
#: request's tenant, reply topic and attempt (kit/tenancy.py).
REQUEST_SIGNATURE = "request-signature"

AVRO = "application/avro"
JSON = "application/json"

#: Headers that travel with a request to its result chunks.
FORWARDED = (REPLY_TO, CORRELATION)
#: Headers the router passes on with a request to its path topic.
ROUTED = (*FORWARDED, DEADLINE, TENANT, REQUEST_SIGNATURE)


def header_text(headers: Sequence[tuple[str, bytes | None]] | None, name: str) -> str:
    """A header's value as text; "" when absent or empty. Never raises: a header anyone can
    write may be null or not UTF-8 (seen: one such reply failed a caller's stream)."""
    for k, v in headers or ():
        if k == name and v:
            return v.decode("utf-8", "replace")
    return ""


def key_text(key: bytes | None) -> str:
    """A record's key (a request id) as text; "" without one. Never raises, as above."""
    return key.decode("utf-8", "replace") if key else ""


def correlation_of(headers: Sequence[tuple[str, bytes | None]] | None) -> str | None:
    """A record's attempt; None when the asker set none."""
    return header_text(headers, CORRELATION) or None


def run_of(headers: Sequence[tuple[str, bytes | None]] | None) -> str:
    """A chunk's run; "" for a path whose every run yields the same chunks."""
    return header_text(headers, RUN)
