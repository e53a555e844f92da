"""What lets a caller repeat itself cheaply and safely: the result cache (use_cache),
idempotency keys, resumable streams and the per-client rate limit.

Cache key: SHA-256 of the request as the caller sent it (services.core.plan.fingerprint:
everything but request_id, output_format and use_cache) plus output_format. It is taken
before the bridge pins seed and anchor, so a request without a seed matches an earlier
one without a seed (use_cache means "any answer to this request will do"), while a
different seed, anchor, count, schema or format is a miss. Only complete, successful
datasets within CACHE_MAX_RECORDS and CACHE_MAX_BYTES are stored, for CACHE_TTL_SECONDS.
The cache needs Redis; without it every use_cache request is a miss.

Idempotency keys and pinned requests (for `resume-from-chunk`) live in Redis when it is
reachable and always in a process map bounded by IDEMPOTENCY_MAX_ENTRIES and
IDEMPOTENCY_TTL_SECONDS, so they work without Redis on one instance.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable

from services.bridge.errors import KeyReused, NotResumable
from services.core.models import GenerateRequest
from services.kit.ops import metrics
from services.kit.path.resultcache import ResultCache, answered_from_cache, cache_key
from services.kit.redis.keystore import KeyStore
from services.kit.settings import ServingSettings
from services.kit.wire.codec import Codec
from services.kit.wire.headers import AVRO

__all__ = [
    "Bounded",
    "Idempotency",
    "KeyReused",
    "Pinned",
    "ResultCache",
    "answered_from_cache",
    "cache_key",
]

PENDING = b"\x00pending"
POLL_SECONDS = 0.05


class Bounded:
    """An in-process map with a size bound and a per-entry expiry (oldest evicted first)."""

    def __init__(self, max_entries: int, ttl: float):
        self.max, self.ttl = max_entries, ttl
        self.items: OrderedDict[str, tuple[float, bytes]] = OrderedDict()

    def get(self, key: str) -> bytes | None:
        item = self.items.get(key)
        if item is None or item[0] < time.monotonic():
            self.items.pop(key, None)
            return None
        return item[1]

    def put(self, key: str, value: bytes) -> None:
        self.items[key] = (time.monotonic() + self.ttl, value)
        self.items.move_to_end(key)
        while len(self.items) > self.max:
            self.items.popitem(last=False)


class Idempotency:
    """Answers by (client, idempotency-key): the first call generates, a retry (or a
    concurrent duplicate, which waits) gets the stored answer. An answer is stored with the
    request's fingerprint and format, so a key reused for a different request, or for the
    same one in another format, is refused."""

    def __init__(self, store: KeyStore, settings: ServingSettings):
        self.store = store
        self.ttl = settings.idempotency_ttl_seconds
        self.local = Bounded(settings.idempotency_max_entries, self.ttl)
        self.running: dict[str, asyncio.Future[bytes]] = {}

    async def run(
        self, client: str, key: str, req: GenerateRequest, produce: Callable[[], Awaitable[bytes]]
    ) -> tuple[bytes, bool]:
        """(answer, replayed). Raises KeyReused for the same key with another request."""
        name = self.store.key("idem", hashlib.sha256(f"{client}\0{key}".encode()).hexdigest())
        # The format too (as the cache key has it): seen, a retry asking for CSV got the
        # first call's JSON body.
        fp = cache_key(req).encode()
        while True:
            if (fut := self.running.get(name)) is not None:
                try:
                    await asyncio.shield(fut)
                except Exception:  # noqa: BLE001 - the first call failed: try ourselves
                    await asyncio.sleep(0)
                continue
            stored = self.local.get(name) or await self._remote(name)
            if stored is not None:
                return _checked(stored, fp), True
            if await self.store.set(name, PENDING, 60, nx=True) is False:
                await asyncio.sleep(POLL_SECONDS)  # another instance runs it
                continue
            break
        fut = asyncio.get_running_loop().create_future()
        self.running[name] = fut
        try:
            answer = await produce()
        except BaseException as exc:
            await self.store.delete(name)
            fut.set_exception(exc if isinstance(exc, Exception) else RuntimeError("cancelled"))
            fut.exception()  # retrieved: nobody may wait
            raise
        finally:
            self.running.pop(name, None)
        value = fp + b"\n" + answer
        self.local.put(name, value)
        await self.store.set(name, value, self.ttl)
        fut.set_result(value)
        return answer, False

    async def _remote(self, name: str) -> bytes | None:
        raw = await self.store.get(name)
        return None if raw is None or raw == PENDING else raw


def _checked(stored: bytes, fp: bytes) -> bytes:
    got, _, answer = stored.partition(b"\n")
    if got != fp:
        raise KeyReused("this idempotency-key was used for a different request")
    metrics.IDEMPOTENT_REPLAYS.inc()
    return answer


class Pinned:
    """Requests as published (seed and anchor fixed), by request id, so a cut stream can be
    generated again identically and resumed."""

    def __init__(self, store: KeyStore, codec: Codec, settings: ServingSettings):
        self.store, self.codec = store, codec
        self.ttl = settings.idempotency_ttl_seconds
        self.local = Bounded(settings.idempotency_max_entries, self.ttl)

    async def remember(self, req: GenerateRequest, tenant: str) -> None:
        raw = self.codec.encode_request(req)
        name = self.store.key("pinned", tenant, req.request_id)
        self.local.put(name, raw)
        await self.store.set(name, raw, self.ttl)

    async def refuse(self, request_id: str, tenant: str) -> None:
        """Its chunks came from a path whose reruns differ: it cannot be resumed."""
        name = self.store.key("pinned", tenant, request_id)
        self.local.put(name, NOT_RESUMABLE)
        await self.store.set(name, NOT_RESUMABLE, self.ttl)

    async def recall(self, request_id: str, tenant: str) -> GenerateRequest | None:
        """The tenant's request as published; NotResumable if refused; None if unknown
        (to this tenant: another's is never found)."""
        name = self.store.key("pinned", tenant, request_id)
        raw = self.local.get(name) or await self.store.get(name)
        if raw == NOT_RESUMABLE:
            raise NotResumable(request_id)
        return None if raw is None else self.codec.decode_request(raw, AVRO)


NOT_RESUMABLE = b"-"
