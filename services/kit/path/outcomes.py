"""Outcome records: what a successful run tells the learner (see schemas/avro/outcome.avsc).

Every path's final, successful chunk is followed by one outcome on the outcomes topic, so
learning never depends on who asked (a gRPC caller or an agent on Kafka) nor on the
learner being up: outcomes wait in their topic. Publishing one never fails a dataset.
"""

from __future__ import annotations

import hashlib
import logging
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import orjson

from services.core.models import GenerateRequest, traits_of
from services.core.plan import Plan, fingerprint
from services.core.pools import GENERATOR_VERSION
from services.core.validate import validate_record
from services.kit.runtime.stream import Runtime
from services.kit.wire.headers import AVRO, CONTENT_TYPE
from services.kit.wire.messages import Outcome, OutcomeScenario
from services.kit.wire.tenancy import LOCAL

log = logging.getLogger("testdata.outcomes")
#: A request with this hint is never learned from.
NO_LEARN = "no_learn"


def never_learned(path: str) -> bool:
    """Whatever the settings say: the store must not feed on its own variations."""
    traits = traits_of(path)
    return traits is not None and not traits.learnable


def opts_out(hints: Iterable[str]) -> bool:
    return NO_LEARN in {h.strip().lower().replace("-", "_") for h in hints}


def learn_rules(learn_paths: Sequence[str]) -> dict[str, bool]:
    """The `learn_paths` setting as path -> "only when shaped by a context" ("llm" and
    "llm:context" both listed: the unconditional one wins); never rag."""
    rules: dict[str, bool] = {}
    for entry in learn_paths:
        path, _, cond = entry.partition(":")
        rules[path] = rules.get(path, True) and cond == "context"
    for path in [p for p in rules if never_learned(p)]:
        rules.pop(path)
    return rules


def shaped(context: str, descriptions: Iterable[str]) -> bool:
    """A context or a scenario description shaped the output: it says more than a seed."""
    return bool(context.strip()) or any(d.strip() for d in descriptions)


def path_learnable(rules: Mapping[str, bool], path: str, is_shaped: bool) -> bool:
    return path in rules and (is_shaped or not rules[path])


def request_fingerprint(request: GenerateRequest) -> str:
    return hashlib.sha256(fingerprint(request)).hexdigest()


class Sample:
    """A run's first records, at most `max_records` and `max_bytes` of JSON: what a
    pattern is made of, small enough for any topic's record size limit."""

    def __init__(self, max_records: int, max_bytes: int):
        self.max_records = max_records
        self.max_bytes = max_bytes
        self.records: list[dict[str, Any]] = []
        self.size = 2  # "[]"
        self.full = False

    def add(self, records: list[dict[str, Any]]) -> None:
        for r in records:
            if self.full:
                return
            size = len(orjson.dumps(r)) + (1 if self.records else 0)
            if len(self.records) >= self.max_records or self.size + size > self.max_bytes:
                self.full = True
                return
            self.records.append(r)
            self.size += size

    def json(self) -> str:
        return orjson.dumps(self.records).decode()


def build_outcome(
    plan: Plan,
    path: str,
    coherence: float | None,
    sample: Sample,
    *,
    check: bool = True,
    tenant: str = LOCAL,
) -> Outcome:
    """`check`: validate the sample (~0.1 ms a record); a path skips it for a dataset its
    settings do not learn, the learner validates again either way."""
    req = plan.request
    counts = plan.scenario_counts()
    described = {s.name: s.description for s in req.scenarios}
    return Outcome(
        request_id=req.request_id,
        fingerprint=request_fingerprint(req),
        path=path,
        # as retrieval scopes a request: its domain, else its entity's, normalised
        domain=(req.domain or plan.schema.domain or "custom").strip().lower(),
        entity=plan.schema.name,
        custom_schema=bool(req.schema_.fields),
        scenarios=[
            OutcomeScenario(name=name, description=described.get(name, ""), count=n)
            for name, n in counts.items()
        ],
        context=req.context,
        hints=list(req.hints),
        seed=plan.seed,
        record_count=plan.count,
        invalid_count=(
            sum(1 for r in sample.records if validate_record(plan.schema, r)) if check else None
        ),
        coherence_score=coherence,
        sample_json=sample.json(),
        generator_version=GENERATOR_VERSION,
        completed_at_ms=int(time.time() * 1000),
        tenant=tenant,
    )


async def publish_outcome(rt: Runtime, outcome: Outcome) -> bool:
    """Publish and wait for the broker's ack; False (logged) when it could not."""
    try:
        await rt.publish(
            rt.topics.outcomes,
            rt.codec.encode_outcome(outcome),
            outcome.request_id,
            [(CONTENT_TYPE, AVRO.encode())],
        )
    except Exception:
        log.warning("%s: outcome not published", outcome.request_id, exc_info=True)
        return False
    return True
