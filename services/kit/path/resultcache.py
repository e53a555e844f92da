"""The use_cache result cache: complete successful runs' chunks in Redis.

Key: SHA-256 of the request fingerprint (everything but request_id, output_format and
use_cache) plus output_format. The bridge keys a request as its caller sent it (before
it fixes seed and anchor); a generator keys the request it receives, so an agent
publishing directly with a seed is answered from the cache too. Only datasets within
CACHE_MAX_RECORDS and CACHE_MAX_BYTES are stored, for CACHE_TTL_SECONDS. Entries are the
tenant's (kit/tenancy.py): another tenant's identical request is a miss, never its data.
"""

from __future__ import annotations

import base64
import hashlib

import orjson

from services.core.models import GenerateRequest
from services.core.plan import fingerprint
from services.kit.ops import metrics
from services.kit.redis.keystore import KeyStore
from services.kit.settings import Settings
from services.kit.wire.codec import Codec
from services.kit.wire.messages import ResultChunk


def cache_key(req: GenerateRequest) -> str:
    """The request as sent (seed/anchor only if the caller set them) and its format."""
    raw = fingerprint(req) + b"|" + req.output_format.value.encode()
    return hashlib.sha256(raw).hexdigest()


class ResultCache:
    """Complete successful runs' chunks in Redis, keyed by cache_key."""

    def __init__(self, store: KeyStore, codec: Codec, settings: Settings, where: str):
        self.store, self.codec, self.where = store, codec, where
        self.ttl = settings.cache_ttl_seconds
        self.max_records, self.max_bytes = settings.cache_max_records, settings.cache_max_bytes

    def _name(self, req: GenerateRequest, tenant: str) -> str:
        return self.store.key("cache", tenant, cache_key(req))

    async def lookup(self, req: GenerateRequest, tenant: str) -> list[ResultChunk] | None:
        if not self.store.configured:
            metrics.CACHE_LOOKUPS.labels(self.where, "unavailable").inc()
            return None
        raw = await self.store.get(self._name(req, tenant))
        if raw is None:
            result = "unavailable" if self.store.problem else "miss"
            metrics.CACHE_LOOKUPS.labels(self.where, result).inc()
            return None
        metrics.CACHE_LOOKUPS.labels(self.where, "hit").inc()
        return [self.codec.decode_chunk(base64.b64decode(c)) for c in orjson.loads(raw)]

    def fits(self, records: int, size: int) -> bool:
        return records <= self.max_records and size <= self.max_bytes

    async def store_run(self, req: GenerateRequest, chunks: list[ResultChunk], tenant: str) -> None:
        if not self.store.configured or not chunks or not chunks[-1].is_final:
            return
        if not self.fits(sum(c.record_count for c in chunks), sum(len(c.data) for c in chunks)):
            return
        body = orjson.dumps([base64.b64encode(self.codec.encode_chunk(c)).decode() for c in chunks])
        await self.store.set(self._name(req, tenant), body, self.ttl)


def answered_from_cache(chunks: list[ResultChunk], request_id: str) -> list[ResultChunk]:
    """The cached chunks as this request's: its id, and `cache_hit` on the final chunk."""
    out = []
    for c in chunks:
        md = c.metadata.model_copy(update={"cache_hit": True}) if c.metadata else None
        out.append(c.model_copy(update={"request_id": request_id, "metadata": md}))
    return out
