"""LLM engine overhead: 1,000 carts through a fake Claude that answers in a fixed 500 ms.

The fake model answers every prompt with valid, coherent carts for exactly the requested
`_index` range (read from the prompt), so the engine makes one call per batch and the
measured time minus the ideal (batches / concurrency rounds x 500 ms) is our overhead:
SDK + HTTP, prompt building, parsing, validation, coherence scoring, scheduling.

    python -m bench.llm
"""

from __future__ import annotations

import asyncio
import json
import math
import re
import time
from typing import Any

from services.core.generate import generate_records
from services.core.models import GenerateRequest
from services.core.plan import Plan, build_plan
from services.core.registry import SchemaRegistry
from services.llm.clients import ClaudeClient, RetryPolicy
from services.llm.engine import LLMEngine
from services.llm.prompts import build_prompt
from tests.fakes.llm_server import FakeLLMServer

COUNT = 1_000
BATCH = 25
CONCURRENCY = 8
DELAY_S = 0.5
TASK_RE = re.compile(r"with _index (\d+) to (\d+)\.")


def _responder(records: list[dict[str, Any]]):
    def respond(body: dict[str, Any]) -> str:
        user = next(m["content"] for m in body["messages"] if m["role"] == "user")
        m = TASK_RE.search(user)
        if m is None:
            return "[]"
        lo, hi = int(m.group(1)), int(m.group(2))
        return json.dumps(records[lo : hi + 1])

    return respond


async def _raw_calls(client: ClaudeClient, plan: Plan) -> float:
    """The same calls (same prompts, same answers) straight through the client: what the
    SDK, HTTP and the in-process fake server cost without the engine."""
    slots = asyncio.Semaphore(CONCURRENCY)

    async def one(start: int) -> None:
        n = min(BATCH, COUNT - start)
        system, user = build_prompt(
            plan.request,
            plan.schema,
            batch_count=n,
            scenario_plan=[("default", n)],
            start_index=start,
        )
        async with slots:
            await client.complete(system, user)

    t0 = time.perf_counter()
    await asyncio.gather(*(one(s) for s in range(0, COUNT, BATCH)))
    return time.perf_counter() - t0


async def _measure() -> dict[str, float]:
    plan = build_plan(
        GenerateRequest(entity="cart", domain="ecommerce", count=COUNT, seed=1),
        SchemaRegistry.load(),
    )
    # What the "model" knows: valid carts of another seed, so answers are not our own.
    source = build_plan(plan.request.model_copy(update={"seed": 2}), SchemaRegistry.load())
    answers = generate_records(source, 0, COUNT)
    with FakeLLMServer(default=_responder(answers), fixed_delay_ms=DELAY_S * 1000) as server:
        client = ClaudeClient(
            api_key="bench",
            base_url=server.url,
            model="claude-bench",
            retry=RetryPolicy(max_retries=1, base_delay=0.01),
            timeout=30.0,
        )
        engine = LLMEngine(
            [client], batch_size=BATCH, concurrency=CONCURRENCY, coherence_threshold=0.85
        )
        try:
            # Warm up: SDK imports and one keep-alive connection per concurrent call.
            await asyncio.gather(*(client.health() for _ in range(CONCURRENCY)))
            raw = await _raw_calls(client, plan)
            server.reset()
            t0 = time.perf_counter()
            first = None
            records = 0
            run = engine.run(plan)
            async for batch in run:
                if first is None:
                    first = time.perf_counter() - t0
                records += len(batch.records)
            total = time.perf_counter() - t0
        finally:
            await engine.aclose()
        calls = server.calls("anthropic")
        in_flight = server.max_in_flight
    assert records == COUNT, records
    rounds = math.ceil(COUNT / BATCH / CONCURRENCY)
    ideal = rounds * DELAY_S
    s = run.summary
    print(
        f"llm engine: {COUNT:,} carts, batch {BATCH}, concurrency {CONCURRENCY}, "
        f"fake model {DELAY_S * 1000:.0f} ms/call"
    )
    print(f"  total                          {total:>8.3f} s")
    print(f"  records/s                      {COUNT / total:>8.1f}")
    print(f"  first-batch latency            {first:>8.3f} s")
    print(f"  ideal ({COUNT}/{BATCH}/{CONCURRENCY}) x {DELAY_S} s       {ideal:>8.3f} s")
    print(
        f"  overhead (total - ideal)       {total - ideal:>8.3f} s "
        f"({(total - ideal) / ideal:.1%} of ideal)"
    )
    print(f"  same calls without the engine  {raw:>8.3f} s   (SDK + HTTP + in-process fake)")
    print(f"  engine's own overhead          {total - raw:>8.3f} s   (total - same calls)")
    print(
        f"  calls {calls}, max in flight {in_flight}, retries {s.retries}, "
        f"fallbacks {len(s.fallbacks)}, traditional {s.traditional_records}, "
        f"tokens {s.tokens:,}, coherence {s.coherence:.3f}"
    )
    return {
        "llm_total_s": total,
        "llm_records_per_s": COUNT / total,
        "llm_first_batch_s": first or 0.0,
        "llm_ideal_s": ideal,
        "llm_overhead_s": total - ideal,
        "llm_raw_calls_s": raw,
    }


def run() -> dict[str, float]:
    return asyncio.run(_measure())


if __name__ == "__main__":
    run()
