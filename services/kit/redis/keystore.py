"""Redis, optional and never fatal: every operation answers None when Redis is unset or
unreachable, so callers fall back (no cache, in-process maps) instead of failing.

Keys carry a prefix (REDIS_KEY_PREFIX) so several deployments or test sessions share one
server. The rate limit is one Lua script, so a bucket is read and updated atomically.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from services.kit.ops import metrics
from services.kit.redis.breaker import Breaker, Circuit
from services.kit.settings import RedisSettings

log = logging.getLogger("testdata.redis")

#: KEYS[1] bucket; ARGV rate (tokens/s), burst, now (s), cost. Returns {allowed, wait_ms}.
TOKEN_BUCKET = """
local rate = tonumber(ARGV[1])
local burst = tonumber(ARGV[2])
local now = tonumber(ARGV[3])
local cost = tonumber(ARGV[4])
local b = redis.call('HMGET', KEYS[1], 'tokens', 'at')
local tokens = tonumber(b[1]) or burst
local at = tonumber(b[2]) or now
tokens = math.min(burst, tokens + math.max(0, now - at) * rate)
local allowed = 0
local wait = 0
if tokens >= cost then
  tokens = tokens - cost
  allowed = 1
else
  wait = math.ceil((cost - tokens) / rate * 1000)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'at', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(burst / rate * 1000) + 1000)
return {allowed, wait}
"""


class KeyStore:
    """A prefixed Redis client whose failures are answers (None), counted and logged."""

    def __init__(
        self,
        url: str | None,
        prefix: str = "testdata:",
        timeout: float = 0.5,
        breaker: Breaker | None = None,
    ):
        self.url = url
        self.prefix = prefix
        self.client: Any = None
        self.problem: str | None = None
        # After a few failures in a row, skip Redis for a cool-off instead of waiting out
        # a timeout on every call (a hung Redis).
        self.breaker = breaker or Breaker(failures=3, cool_off=10.0)
        if url:
            self.client = aioredis.from_url(
                url, socket_timeout=timeout, socket_connect_timeout=timeout
            )
            self._bucket = self.client.register_script(TOKEN_BUCKET)

    @classmethod
    def from_settings(cls, redis: RedisSettings) -> KeyStore:
        """The store REDIS_URL names (none: not configured), as the Redis section says."""
        return cls(
            redis.redis_url,
            redis.redis_key_prefix,
            redis.redis_timeout_seconds,
            Breaker(redis.redis_breaker_failures, redis.redis_breaker_cool_off_seconds),
        )

    @property
    def configured(self) -> bool:
        return self.client is not None

    def key(self, *parts: str) -> str:
        return self.prefix + ":".join(parts)

    def _failed(self, exc: Exception) -> None:
        metrics.REDIS_ERRORS.inc()
        if self.problem is None:
            log.warning("redis unavailable, serving without it: %r", exc)
        self.problem = f"{type(exc).__name__}: {exc}"
        was_open = self.breaker.state == Circuit.OPEN
        self.breaker.failed_once()
        if not was_open and self.breaker.state == Circuit.OPEN:
            log.warning(
                "redis: circuit open, skipped for %.0f s (serving without it)",
                self.breaker.cool_off,
            )

    def _ok(self) -> None:
        if self.problem is not None:
            log.info("redis reachable again")
        self.problem = None
        self.breaker.succeeded()

    async def _call(self, method: str, *args: Any, **kwargs: Any) -> Any:
        return await self._guarded(lambda: getattr(self.client, method)(*args, **kwargs))

    async def _guarded(self, call: Callable[[], Awaitable[Any]]) -> Any:
        """`call()`'s answer, or None: Redis unset, failing, or skipped (circuit open)."""
        if self.client is None:
            return None
        if not self.breaker.allow():
            metrics.REDIS_SKIPPED.inc()
            return None
        settled = False
        try:
            out = await call()
            settled = True
        except (RedisError, OSError) as exc:
            settled = True
            self._failed(exc)
            return None
        finally:
            if not settled:  # cancelled mid-call: not known to work (ends a trial too)
                self.breaker.failed_once()
        self._ok()
        return out

    async def get(self, key: str) -> bytes | None:
        out = await self._call("get", key)
        return out if isinstance(out, bytes) else None

    async def set(self, key: str, value: bytes, ttl: int, nx: bool = False) -> bool | None:
        """True if stored; False if `nx` and the key exists; None without Redis."""
        out = await self._call("set", key, value, ex=ttl, nx=nx)
        return None if self.client is None or self.problem else bool(out)

    async def delete(self, key: str) -> None:
        await self._call("delete", key)

    async def incr(self, key: str) -> int | None:
        out = await self._call("incr", key)
        return int(out) if out is not None else None

    async def take(self, bucket: str, rate: float, burst: int) -> float | None:
        """Seconds to wait before a call is allowed (0: allowed now); None without Redis."""
        out = await self._guarded(
            lambda: self._bucket(keys=[bucket], args=[rate, burst, f"{time.time():.6f}", 1])
        )
        if out is None:
            return None
        allowed, wait_ms = out
        return 0.0 if int(allowed) else int(wait_ms) / 1000

    async def component(self) -> str:
        """For HealthCheck: healthy, degraded (configured but down), or not configured."""
        if self.client is None:
            return "not configured"
        if self.breaker.state == Circuit.OPEN:
            return (
                f"degraded: unreachable ({self.problem}); skipped for "
                f"{self.breaker.retry_in():.0f} s more (circuit open); serving without cache"
            )
        if await self._call("ping") is None:
            return f"degraded: unreachable ({self.problem}); serving without cache"
        return "healthy"

    async def aclose(self) -> None:
        if self.client is not None:
            with contextlib.suppress(RedisError, OSError):
                await self.client.aclose()
