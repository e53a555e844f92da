"""The learner's gate: which outcomes become patterns, and the pattern each one makes.

Pure (no I/O), so every rule is tested without a broker or a store. An outcome is
learned only if its path is one the settings name, nobody opted out, the entity is a
registered one (a pattern is an example of that entity for any later request), every
sampled record is valid against the entity's schema and, where the entity has coherence
rules, the records score at least the threshold. Nothing here trusts the producer's own
figures alone: the sample is validated and scored again.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

from services.core.coherence import SCORERS, score_records
from services.core.plan import DEFAULT_SCENARIO
from services.core.registry import SchemaRegistry
from services.core.validate import validate_record
from services.kit.path.outcomes import learn_rules, never_learned, opts_out, path_learnable
from services.kit.path.outcomes import shaped as shaped_by
from services.kit.settings import Settings
from services.kit.wire.messages import Outcome
from services.patterns import Collection, Pattern


class Skip(StrEnum):
    """Why an outcome is not learned (a metric label)."""

    OPTED_OUT = "opted_out"
    RAG = "rag_path"  # the store must not feed on its own variations
    PATH = "path_not_learned"
    UNSHAPED = "no_context"  # a path learned only when a context shaped its output
    CUSTOM_SCHEMA = "custom_schema"
    UNKNOWN_ENTITY = "unknown_entity"
    EMPTY = "empty_sample"
    INVALID = "invalid_records"
    LOW_COHERENCE = "low_coherence"


@dataclass(frozen=True)
class Policy:
    """What the gate needs of the settings."""

    paths: dict[str, bool]  # path -> learned only when shaped by a context
    coherence_threshold: float
    #: tenants whose learned patterns are stored shared (everyone's), not theirs alone
    shared_tenants: frozenset[str] = frozenset()

    @classmethod
    def from_settings(cls, settings: Settings) -> Policy:
        return cls.of(
            settings.learn_paths, settings.coherence_threshold, settings.patterns_shared_tenants
        )

    @classmethod
    def of(
        cls,
        learn_paths: Sequence[str],
        coherence_threshold: float,
        shared_tenants: Sequence[str] = (),
    ) -> Policy:
        return cls(
            paths=learn_rules(learn_paths),
            coherence_threshold=coherence_threshold,
            shared_tenants=frozenset(shared_tenants),
        )


@dataclass(frozen=True)
class Verdict:
    pattern: Pattern | None  # None: skipped, for `skip`
    skip: Skip | None = None
    detail: str = ""


def shaped(outcome: Outcome) -> bool:
    return shaped_by(outcome.context, (s.description for s in outcome.scenarios))


def describe(outcome: Outcome) -> str:
    """What the records are about, in words retrieval by meaning can match: the context,
    the scenarios' descriptions, then the entity and domain."""
    parts = [outcome.context.strip()] if outcome.context.strip() else []
    for s in outcome.scenarios:
        if s.description.strip():
            parts.append(f"{s.name}: {s.description.strip()}")
    parts.append(f"{outcome.entity} records ({outcome.domain})")
    return ". ".join(p.rstrip(".") for p in parts)


def scenario_of(records: list[dict[str, Any]]) -> str:
    """The sample's scenarios by name, in order ("" when none was asked for)."""
    names: list[str] = []
    for r in records:
        name = r.get("_scenario")
        if isinstance(name, str) and name not in names:
            names.append(name)
    return "" if names in ([], [DEFAULT_SCENARIO]) else ",".join(names)


def judge(outcome: Outcome, registry: SchemaRegistry, policy: Policy) -> Verdict:
    """The pattern this outcome makes, or why it makes none."""
    if opts_out(outcome.hints):
        return Verdict(None, Skip.OPTED_OUT)
    if never_learned(outcome.path):
        return Verdict(None, Skip.RAG)
    if outcome.path not in policy.paths:
        return Verdict(None, Skip.PATH, outcome.path)
    if not path_learnable(policy.paths, outcome.path, shaped(outcome)):
        return Verdict(None, Skip.UNSHAPED, outcome.path)
    if outcome.custom_schema:
        return Verdict(None, Skip.CUSTOM_SCHEMA)
    schema = registry.get(outcome.entity)
    if schema is None:
        return Verdict(None, Skip.UNKNOWN_ENTITY, outcome.entity)
    try:
        records = outcome.sample()
    except ValueError as exc:
        return Verdict(None, Skip.INVALID, f"sample is not JSON: {exc}")
    if not records:
        return Verdict(None, Skip.EMPTY)
    if outcome.invalid_count:
        return Verdict(None, Skip.INVALID, f"{outcome.invalid_count} invalid by its producer")
    for i, r in enumerate(records):
        if errs := validate_record(schema, r):
            return Verdict(None, Skip.INVALID, f"record {i}: {errs[0]}")
    quality = 1.0
    if schema.name in SCORERS:
        sampled = score_records(schema.name, records)
        assert sampled is not None
        run = outcome.coherence_score
        quality = min(sampled, run) if run is not None else sampled
        if quality < policy.coherence_threshold:
            return Verdict(
                None, Skip.LOW_COHERENCE, f"{quality:.3f} < {policy.coherence_threshold:.3f}"
            )
    pattern = Pattern(
        collection=Collection.PATTERNS,
        domain=outcome.domain,
        entity=schema.name,
        scenario=scenario_of(records),
        description=describe(outcome),
        records=records,
        quality=max(0.0, min(1.0, quality)),
        source=f"learned:{outcome.path}",
        created_at=datetime.fromtimestamp(outcome.completed_at_ms / 1000, UTC),
        tenant="" if outcome.tenant in policy.shared_tenants else outcome.tenant,
    )
    return Verdict(pattern.with_id())
