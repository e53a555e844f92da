"""Prometheus metrics: the spec's names, plus LLM, fallback, dead-letter, lag, budget and
redelivery series."""

from __future__ import annotations

from collections.abc import Collection

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

REGISTRY = CollectorRegistry(auto_describe=True)
#: The label value for anything a caller wrote that is not a known name.
OTHER = "other"


def known(value: str, names: Collection[str]) -> str:
    """`value` as a label only if it is one of `names` (or empty), else OTHER: a series
    per distinct caller string would let any caller grow memory and /metrics unbounded."""
    name = value.strip().lower()
    return name if not name or name in names else OTHER


REQUESTS = Counter(
    "testdata_requests",
    "Requests finished, by path and outcome",
    ["path", "domain", "entity", "status"],
    registry=REGISTRY,
)
GENERATION_SECONDS = Histogram(
    "testdata_generation_duration_seconds",
    "Time to generate one request, by path",
    ["path"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
    registry=REGISTRY,
)
RECORDS = Counter(
    "testdata_records_generated", "Records generated", ["domain", "entity"], registry=REGISTRY
)
COHERENCE = Histogram(
    "testdata_coherence_score",
    "Coherence score per request",
    ["domain"],
    buckets=(0.2, 0.4, 0.6, 0.7, 0.8, 0.85, 0.9, 0.95, 1.0),
    registry=REGISTRY,
)
VALIDATION_ERRORS = Counter(
    "testdata_validation_errors",
    "Invalid records or requests",
    ["domain", "entity"],
    registry=REGISTRY,
)
LLM_TOKENS = Counter(
    "testdata_llm_tokens_used", "LLM tokens (input + output)", ["model"], registry=REGISTRY
)
LLM_CALL_SECONDS = Histogram(
    "testdata_llm_call_duration_seconds",
    "One LLM call, retries included",
    ["backend", "model"],
    buckets=(0.1, 0.25, 0.5, 1, 2, 5, 10, 20, 40, 80),
    registry=REGISTRY,
)
LLM_RETRIES = Counter(
    "testdata_llm_retries", "LLM retries by reason", ["backend", "reason"], registry=REGISTRY
)
FALLBACKS = Counter(
    "testdata_fallbacks",
    "Work served by another path or backend",
    ["source", "target", "reason"],
    registry=REGISTRY,
)
DEAD_LETTERS = Counter(
    "testdata_dead_letters",
    "Messages sent to the dead-letter topic",
    ["consumer", "error_type"],
    registry=REGISTRY,
)
DEAD_LETTERS_LOST = Counter(
    "testdata_dead_letters_lost",
    "Failed messages skipped because dead-lettering them failed DEAD_LETTER_ATTEMPTS times",
    ["consumer"],
    registry=REGISTRY,
)
PRODUCER_WAITS = Counter(
    "testdata_producer_waits",
    "Sends that found the producer's buffer full (or no metadata) for KAFKA_REQUEST_TIMEOUT_MS "
    "and waited again: the broker is slower than the generators",
    registry=REGISTRY,
)
CONSUMER_LAG = Gauge(
    "testdata_consumer_lag",
    "Records behind the partition end",
    ["group", "topic", "partition"],
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
CHUNKS = Counter(
    "testdata_chunks_published", "Result chunks published", ["path"], registry=REGISTRY
)
ABANDONED = Counter(
    "testdata_abandoned",
    "Requests stopped or skipped because their caller cancelled or their deadline passed",
    ["stage", "why"],
    registry=REGISTRY,
)
OVER_BUDGET = Counter(
    "testdata_over_budget",
    "Requests stopped for running past their generation budget (GENERATION_BUDGET_SECONDS)",
    ["path"],
    registry=REGISTRY,
)
REDELIVERIES = Counter(
    "testdata_redeliveries",
    "Messages started again after an attempt that never finished (its process died or "
    "lost the partition)",
    ["consumer"],
    registry=REGISTRY,
)
DELIVERY_LIMIT = Counter(
    "testdata_delivery_limit_reached",
    "Messages dead-lettered instead of started again: MAX_DELIVERIES attempts never finished",
    ["consumer"],
    registry=REGISTRY,
)
DELIVERY_MARKER_SECONDS = Histogram(
    "testdata_delivery_marker_seconds",
    "Writing a delivery marker before an attempt (what the delivery counter adds per hop)",
    ["consumer"],
    buckets=(0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1),
    registry=REGISTRY,
)
DELIVERIES_TRACKED = Gauge(
    "testdata_deliveries_tracked",
    "Delivery attempts this process remembers (bounded in number and age)",
    registry=REGISTRY,
    multiprocess_mode="livemax",
)
OUTCOMES = Counter(
    "testdata_outcomes",
    "Successful datasets offered to the learner: published, opted_out, failed (not sent)",
    ["path", "result"],
    registry=REGISTRY,
)
LEARNER_OUTCOMES = Counter(
    "testdata_learner_outcomes",
    "Outcomes the learner finished with: stored, or skipped and why",
    ["result", "reason"],
    registry=REGISTRY,
)
LEARNER_STORE_RETRIES = Counter(
    "testdata_learner_store_retries",
    "Times the learner found the pattern store unavailable and waited to retry",
    registry=REGISTRY,
)
LEARNER_STORE_UP = Gauge(
    "testdata_learner_store_up",
    "1 while the learner reaches the pattern store, 0 while outcomes wait for it",
    registry=REGISTRY,
    multiprocess_mode="livemin",
)
CACHE_LOOKUPS = Counter(
    "testdata_cache_lookups",
    "use_cache=true lookups, at the bridge or a generator: hit, miss, unavailable (no Redis)",
    ["where", "result"],
    registry=REGISTRY,
)
IDEMPOTENT_REPLAYS = Counter(
    "testdata_idempotent_replays",
    "Calls answered from an earlier call's result (idempotency-key), not generated again",
    registry=REGISTRY,
)
RATE_LIMITED = Counter(
    "testdata_rate_limited", "Calls refused by the per-client rate limit", registry=REGISTRY
)
OVERLOADED = Counter(
    "testdata_calls_refused",
    "Calls refused because the bridge ran its limit of calls of that kind with its queue full",
    ["kind"],
    registry=REGISTRY,
)
ADMITTED = Gauge(
    "testdata_calls_admitted",
    "Calls of a kind running or waiting for a slot in this bridge",
    ["kind", "state"],
    registry=REGISTRY,
)
FORGED_RECORDS = Counter(
    "testdata_forged_records",
    "Records whose signature did not verify (written by something without "
    "CHUNK_SIGNING_KEY): reply chunks a bridge dropped, leases a control reader ignored, "
    "requests no bridge vouched for that named a bridge's reply topic",
    ["kind"],
    registry=REGISTRY,
)
REPLY_TOPICS_DELETED = Counter(
    "testdata_reply_topics_deleted",
    "Reply topics of bridges that were gone (their lease ran out), deleted by a live bridge",
    registry=REGISTRY,
)
REDIS_SKIPPED = Counter(
    "testdata_redis_skipped",
    "Redis operations skipped because its circuit is open (failing; served without it)",
    registry=REGISTRY,
)
REDIS_ERRORS = Counter(
    "testdata_redis_errors",
    "Redis operations that failed (the caller was served without)",
    registry=REGISTRY,
)
DUPLICATE_RUNS_AVOIDED = Counter(
    "testdata_duplicate_runs_avoided",
    "Redelivered requests not generated again: completed before, or running elsewhere",
    ["path", "reason"],
    registry=REGISTRY,
)
