"""Whether the LLM path can serve: its configured backends, probed periodically.

The one health probe of the LLM backends: the router asks it before choosing the LLM
path, and HealthCheck reports it per backend.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from services.kit.settings import LLMSettings
from services.llm.clients import LLMClient, build_clients

log = logging.getLogger("testdata.llm")
PROBE_TIMEOUT_S = 3.0
NOT_CONFIGURED = (
    "no LLM backend configured (set ANTHROPIC_API_KEY, or USE_LOCAL_LLM with VLLM_BASE_URL)"
)


async def probe_backends(
    clients: Sequence[LLMClient], timeout: float = PROBE_TIMEOUT_S
) -> dict[str, str]:
    """Per backend: "healthy", "unhealthy: <reason>" or "not configured"; a second
    client of the same backend is named "<backend>#2"."""

    async def one(client: LLMClient) -> str:
        if not client.is_configured:
            return "not configured"
        try:
            async with asyncio.timeout(timeout):
                ok = await client.health()
        except TimeoutError:
            return f"unhealthy: no answer within {timeout:g}s"
        except Exception as exc:  # noqa: BLE001 - a probe failure is a health answer
            return f"unhealthy: {type(exc).__name__}: {str(exc)[:200]}"
        return "healthy" if ok else "unhealthy: probe failed"

    states = await asyncio.gather(*(one(c) for c in clients))
    out: dict[str, str] = {}
    for client, state in zip(clients, states, strict=True):
        name, n = client.backend, 2
        while name in out:
            name, n = f"{client.backend}#{n}", n + 1
        out[name] = state
    return out


class LLMAvailability:
    """Configured backends, re-probed at most every `interval_s`; `reason` is None while
    one answers, else why the LLM path cannot serve."""

    def __init__(self, llm: LLMSettings, clients: Sequence[LLMClient] | None = None):
        self.clients = list(build_clients(llm) if clients is None else clients)
        self.interval_s = llm.llm_health_interval_seconds
        self.status: dict[str, str] = {}
        self.reason: str | None = None if self.clients else NOT_CONFIGURED
        self._checked: float | None = None

    async def refresh(self) -> None:
        now = time.monotonic()
        if not self.clients or (
            self._checked is not None and now - self._checked < self.interval_s
        ):
            return
        self._checked = now
        results = await probe_backends(self.clients)
        self.status = {f"llm_{k}": v for k, v in results.items()}
        healthy = any(v == "healthy" for v in results.values())
        self.reason = (
            None
            if healthy
            else "LLM backends unhealthy: " + "; ".join(f"{k} {v}" for k, v in self.status.items())
        )

    async def components(self) -> Mapping[str, str]:
        await self.refresh()
        if not self.clients:
            return {"llm": f"not configured: {self.reason}"}
        return self.status

    async def aclose(self) -> None:
        for client in self.clients:
            await client.aclose()
