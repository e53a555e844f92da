"""Learner throughput: outcomes stored per second, in process, on the embedded store.

Outcomes are built as a path builds them (20-record cart samples shaped by a context), and
go through the learner's handler exactly as consumed messages do: decode, gate (validation
and coherence of the sample), embedding, SQLite upsert, prune. No broker: this measures
the learner, not Kafka. Also: the same outcomes again (redelivery: nothing to embed), and
outcomes the gate rejects.

    python -m bench.learner
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from pathlib import Path

from services.core.coherence import score_records
from services.core.generate import generate_records
from services.core.models import GenerateRequest
from services.core.plan import build_plan
from services.core.registry import SchemaRegistry
from services.kit.path.outcomes import Sample, build_outcome
from services.kit.runtime.stream import Message, Runtime
from services.kit.settings import Settings
from services.kit.wire.codec import get_codec
from services.learner.gate import Policy, judge
from services.learner.service import LearnerService
from services.patterns import Collection
from services.patterns.embedded import EmbeddedStore

COUNT = 200
CONTEXTS = (
    "Carts of marathon runners stocking up the week before race day",
    "Office supplies ordered by a small accounting firm at the end of the quarter",
    "Parents buying back-to-school supplies in late August",
    "Holiday gifts bought in the last week before Christmas",
)


def _messages(registry: SchemaRegistry, shaped: bool) -> list[Message]:
    codec = get_codec()
    out = []
    for i in range(COUNT):
        req = GenerateRequest(
            request_id=f"bench-{shaped}-{i}",
            domain="ecommerce",
            entity="cart",
            count=20,
            seed=i,
            context=f"{CONTEXTS[i % len(CONTEXTS)]} (batch {i})" if shaped else "",
        )
        plan = build_plan(req, registry)
        records = generate_records(plan, 0, plan.count)
        sample = Sample(20, 64 * 1024)
        sample.add(records)
        outcome = build_outcome(plan, "traditional", score_records("cart", records), sample)
        value = codec.encode_outcome(outcome)
        out.append(Message("outcomes", 0, i, req.request_id.encode(), value, (), 0))
    return out


async def _rate(learner: LearnerService, messages: list[Message]) -> float:
    t = time.perf_counter()
    for m in messages:
        await learner.handle(m)
    return len(messages) / (time.perf_counter() - t)


async def _run() -> dict[str, float]:
    registry = SchemaRegistry.load()
    with tempfile.TemporaryDirectory() as d:
        settings = Settings(_env_file=None, pattern_store_path=str(Path(d) / "patterns.sqlite"))
        store = EmbeddedStore.from_settings(settings)
        learner = LearnerService(Runtime(settings, ""), registry, store)
        await learner.start()
        store.warm()  # the model loads once per process, not per outcome
        shaped, plain = _messages(registry, True), _messages(registry, False)
        policy = Policy.from_settings(settings)
        codec = get_codec()
        t = time.perf_counter()
        for m in shaped:
            judge(codec.decode_outcome(m.value), registry, policy)
        gate = COUNT / (time.perf_counter() - t)
        new = await _rate(learner, shaped)
        stored = await store.count(Collection.PATTERNS, domain="ecommerce", entity="cart")
        again = await _rate(learner, shaped)
        rejected = await _rate(learner, plain)
        await learner.aclose()
    assert stored == COUNT, stored
    print(f"learner ({COUNT} cart outcomes, 20-record samples, embedded store, one process):")
    print(f"  gate only (decode, validate, score)   {gate:>8,.0f} outcomes/s")
    print(f"  stored (gate + embed + write + prune) {new:>8,.0f} outcomes/s")
    print(f"  redelivered (duplicates, no embed)    {again:>8,.0f} outcomes/s")
    print(f"  rejected by the gate (no context)     {rejected:>8,.0f} outcomes/s")
    return {"gate_per_s": gate, "stored_per_s": new, "dup_per_s": again, "rej_per_s": rejected}


def run() -> dict[str, float]:
    return asyncio.run(_run())


if __name__ == "__main__":
    run()
