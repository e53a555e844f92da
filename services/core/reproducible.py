"""What makes a request reproducible, fixed the same way at every ingress.

Generation is a pure function of the request, its `seed` and its `anchor` (the instant
relative dates and ID years count from). An ingress (the gRPC bridge, the router for
agents publishing straight to Kafka) fills in what the caller left out before the request
is logged, so a replay of the log regenerates the same bytes. The rule for the anchor:

- an anchor the caller gave is kept;
- a seed without an anchor gets DEFAULT_ANCHOR, a fixed documented instant, so the same
  request with the same seed gives byte-identical data whenever and wherever it runs;
- neither: the ingress's "now" (a fresh dataset dated today), reported in the metadata.
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

from services.core.models import DEFAULT_ANCHOR, GenerateRequest


def as_utc(dt: datetime) -> datetime:
    """The same instant in UTC; a naive time is taken to be UTC already."""
    return dt.replace(tzinfo=UTC) if dt.tzinfo is None else dt.astimezone(UTC)


def parse_anchor(text: str) -> datetime:
    """An RFC 3339 / ISO-8601 instant (`Z`, an offset, or none meaning UTC), in UTC, so
    one instant written two ways anchors the same data; ValueError if `text` is not one."""
    return as_utc(datetime.fromisoformat(text.strip().replace("Z", "+00:00")))


def format_anchor(dt: datetime) -> str:
    """The RFC 3339 form metadata reports: `2025-01-01T00:00:00Z`."""
    return as_utc(dt).isoformat().replace("+00:00", "Z")


def pin(req: GenerateRequest, *, request_id: str, seed: int, now: datetime) -> GenerateRequest:
    """`req` with request_id, seed and anchor set; the arguments are used only where
    the caller left that part out."""
    anchor = req.anchor
    if anchor is None:
        anchor = DEFAULT_ANCHOR if req.seed is not None else now
    return req.model_copy(
        update={
            "request_id": req.request_id or request_id,
            "seed": req.seed if req.seed is not None else seed,
            "anchor": anchor,
        }
    )


def derive_seed(request_id: str) -> int:
    """The seed of a request logged without one: a function of its id, so every reader of
    the log (router, replay, export) pins the same one."""
    return int.from_bytes(hashlib.sha256(request_id.encode()).digest()[:8], "big") >> 1


def derive_request_id(value: bytes, timestamp_ms: int) -> str:
    """The id of a logged request that has none (neither in its body nor its key): a
    function of the record's bytes and time, which every reader of the log sees again."""
    return f"req-{hashlib.sha256(value + str(timestamp_ms).encode()).hexdigest()[:20]}"


def pin_logged(req: GenerateRequest, request_id: str, timestamp_ms: int) -> GenerateRequest:
    """A logged request as the router pinned it, and as replay and export pin it again
    (one rule, so a replay regenerates the same bytes): the seed a function of the id,
    the anchor the record's time when the caller gave neither."""
    now = datetime.fromtimestamp(timestamp_ms / 1000, UTC)
    return pin(req, request_id=request_id, seed=derive_seed(request_id), now=now)
