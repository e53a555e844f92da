"""Service configuration, read from the environment and `.env` (names as in the spec)."""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.core.limits import HARD_MAX_DEPTH, SAFE_MAGNITUDE, Limits
from services.core.models import PATH_TRAITS, traits_of

#: Paths whose outputs may become patterns; "<path>:context" learns that path's output
#: only when a context or a scenario description shaped it.
LEARNABLE_PATHS = tuple(p.value for p, t in PATH_TRAITS.items() if t.learnable)


class Settings(BaseSettings):
    """Every knob of every service. Env var names are the upper-cased field names."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Service
    service_name: str = "test-data-agent"
    grpc_port: int = Field(default=9001, ge=0, le=65535)  # 0: a free one, in the run file
    http_port: int = Field(default=8081, ge=0, le=65535)
    # Where the embedded defaults listen (gRPC, HTTP, the embedded broker's clients): this
    # machine only. Another address needs authentication (below) for gRPC.
    bind_host: str = "127.0.0.1"
    # gRPC callers (bridge/identity.py): with any of the three below, every call but health
    # needs a credential that names its tenant, which scopes what it can reach again.
    # Without any, the bridge serves on a loopback BIND_HOST only, unless
    # ALLOW_UNAUTHENTICATED (behind a proxy that authenticates).
    # 1. static tokens: a file of `token,tenant` lines; `authorization: Bearer <token>`.
    auth_tokens_file: str | None = None
    # 2. JWTs (`authorization: Bearer <jwt>`) signed by the issuer's key: a JWKS file or
    # one PEM public key. `exp` is required; `iss` and `aud` are checked when set here.
    auth_jwt_jwks_file: str | None = None
    auth_jwt_public_key_file: str | None = None
    auth_jwt_issuer: str | None = None
    auth_jwt_audience: str | None = None
    auth_jwt_tenant_claim: str = "tenant"
    # 3. client certificates (mutual TLS): the CA that signs them; the tenant is the
    # certificate's common name. Needs TLS on the port: GRPC_TLS_CERT_FILE and _KEY_FILE
    # (PEM), which alone encrypt the connection without proving who calls.
    grpc_tls_cert_file: str | None = None
    grpc_tls_key_file: str | None = None
    grpc_tls_client_ca_file: str | None = None
    allow_unauthenticated: bool = False
    # What the CLI and the agent client (kit/client.py) present to a bridge: a bearer token
    # (a static one or a JWT), the CA that signed the bridge's certificate (TLS; the
    # system's trust store when empty and TLS is asked for with GRPC_CLIENT_TLS), and a
    # client certificate and key (mutual TLS).
    grpc_client_token: SecretStr | None = None
    grpc_client_tls: bool = False
    grpc_client_ca_file: str | None = None
    grpc_client_cert_file: str | None = None
    grpc_client_key_file: str | None = None
    # /health and /metrics listen here (no authentication there: keep it private).
    http_bind_host: str = "127.0.0.1"
    log_level: str = "INFO"
    instance_id: str = ""  # bridge instance name; random when empty

    # Kafka. Empty bootstrap servers means: start the embedded broker.
    kafka_bootstrap_servers: str = ""
    kafka_client_id: str = "testdata"
    # Joining a secured cluster: every producer, consumer and admin client of the services
    # and the CLI uses these (kit/kafka.security_options). SASL needs a username and
    # password (PLAIN, SCRAM-*) or, for OAUTHBEARER, a file holding the current token (read
    # again for every authentication, so whatever renews it just rewrites the file). The
    # SSL files are PEM; without a CA file the system's trust store is used.
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = (
        "PLAIN"
    )
    kafka_sasl_username: str | None = None
    kafka_sasl_password: SecretStr | None = None
    kafka_sasl_oauth_token_file: str | None = None
    kafka_ssl_cafile: str | None = None
    kafka_ssl_certfile: str | None = None
    kafka_ssl_keyfile: str | None = None
    kafka_ssl_key_password: SecretStr | None = None
    topic_prefix: str = ""  # lets several deployments share one cluster
    # Upper bound on a consumer's wait per fetch. Kafka answers a waiting fetch as soon as
    # data arrives, so a longer wait costs no latency, only how soon a consumer notices a
    # seek or a new assignment while a fetch is out (aiokafka waits for it to return).
    kafka_fetch_max_wait_ms: int = Field(default=100, ge=0)
    # Producer batching delay: 2 ms measured best for many concurrent small requests.
    kafka_linger_ms: int = 2
    # Consumer group timeouts: a member silent for the session timeout is evicted and its
    # partitions move to the others. 6 s is the least a Kafka broker accepts by default
    # (group.min.session.timeout.ms); heartbeats every 1.5 s.
    kafka_session_timeout_ms: int = Field(default=6000, gt=0)
    kafka_heartbeat_interval_ms: int = Field(default=1500, gt=0)
    # How long a producer waits for the broker's answer to one request, and for room in
    # its buffer: a full buffer is then waited on again while the broker is there (a
    # loaded broker slows a stream down; it does not fail it).
    kafka_request_timeout_ms: int = Field(default=40_000, gt=0)
    # `testdata run` holds this directory for its life: a second instance on the same one
    # stops at once, naming the first's pid, before it reads or writes anything.
    data_dir: str = ".data"
    # The embedded broker (used when KAFKA_BOOTSTRAP_SERVERS is empty): Apache Kafka, its
    # logs kept here across restarts (empty: a temporary directory, gone at stop), its
    # client port (taken: another free one, named in the banner and the run file; 0: a free
    # one at each start) and its JVM heap (fixed and committed at start, so the broker's
    # RSS is about heap + 150 MB from the first minute on, not growing under load).
    kafka_data_dir: str = ".data/kafka"
    kafka_port: int = Field(default=9092, ge=0, le=65535)
    kafka_heap_mb: int = Field(default=512, ge=128)
    # `testdata run` waits for its services as long as they make progress and fails at once
    # on a real cause (a process that exited, a port taken); this bounds the wait too
    # (seconds, 0: no bound).
    ready_timeout_seconds: float = Field(default=0.0, ge=0)
    # How long a service process gets to finish its in-flight work when stopped, before it
    # is killed (the broker is stopped after the services).
    stop_timeout_seconds: float = Field(default=30.0, gt=0)

    # LLM - Claude
    # Shared by every service process: generators sign each result chunk with it and
    # bridges drop chunks that do not verify (kit/signing.py). `testdata run` makes one
    # for its processes when unset; services started apart must all be given the same.
    chunk_signing_key: SecretStr | None = None
    anthropic_api_key: str | None = None
    anthropic_base_url: str | None = None
    claude_model: str = "claude-sonnet-4-20250514"
    claude_max_tokens: int = 4096
    claude_temperature: float = 0.7
    # Newer Messages API versions refuse `temperature`; send it only when asked to.
    claude_send_temperature: bool = False

    # LLM - OpenAI-compatible (vLLM)
    vllm_base_url: str = "http://vllm:8000/v1"
    vllm_api_key: str = "EMPTY"
    vllm_model: str = "meta-llama/Meta-Llama-3-8B-Instruct"
    use_local_llm: bool = False
    llm_enabled_local: bool = False  # set when a vLLM server is really deployed
    llm_timeout_seconds: float = 60.0
    llm_max_retries: int = 3
    llm_retry_base_seconds: float = 1.0
    llm_retry_max_seconds: float = 30.0
    llm_health_interval_seconds: float = 30.0  # how often the router re-probes backends
    llm_batch_size: int = 25
    llm_concurrency: int = 8

    # Generation
    max_sync_records: int = 1000
    # After this long without the broker's acknowledgement of a request, the bridge checks
    # that the broker still accepts connections: if not, the caller hears UNAVAILABLE (a
    # broker that is gone is reported, not waited on for the Kafka client's 40 s); if so,
    # it is slow, and the bridge waits on (to the caller's deadline, else the generation
    # budget), checking again after each such period.
    publish_timeout_seconds: float = Field(default=10.0, gt=0)
    # While calls are out, the bridge checks this often that the broker accepts
    # connections; after this many refusals in a row those calls fail with UNAVAILABLE
    # and a retry hint (they would otherwise wait for chunks that cannot come).
    broker_check_seconds: float = Field(default=1.0, gt=0)
    broker_gone_checks: int = Field(default=2, ge=1)
    # Every this often each bridge deletes the reply topics of bridges whose lease ran out
    # more than REPLY_TOPIC_GRACE_SECONDS ago (killed ones: a stopped bridge deletes its own).
    reply_topic_sweep_seconds: float = Field(default=60.0, gt=0)
    reply_topic_grace_seconds: float = Field(default=60.0, ge=0)
    max_records: int = Field(default=1_000_000, ge=1)
    default_count: int = Field(default=10, ge=1)
    chunk_size: int = Field(default=1000, ge=1)
    # Requests of one partition handled at once (one at a time per request id), so a small
    # request never waits behind a large one that shares its partition.
    partition_concurrency: int = Field(default=16, ge=1)
    # A streaming caller that reads nothing for this long is failed (its chunks wait in
    # the reply topic meanwhile, not in bridge memory).
    stream_idle_timeout_seconds: float = Field(default=120.0, gt=0)
    coherence_threshold: float = 0.85
    # Calls the bridge serves at once; past it grpc answers RESOURCE_EXHAUSTED (retry later).
    max_concurrent_rpcs: int | None = Field(default=None, ge=1)
    # Admission per bridge instance: this many GenerateData / GenerateDataStream calls run
    # at once, this many more wait their turn in arrival order; one beyond those is refused
    # at once with RESOURCE_EXHAUSTED and a RetryInfo (reason OVERLOADED).
    max_running_unary: int = Field(default=64, ge=1)
    max_queued_unary: int = Field(default=256, ge=0)
    max_running_streams: int = Field(default=32, ge=1)
    max_queued_streams: int = Field(default=64, ge=0)

    # Backstops for requests that cost more than validation foresaw.
    # A request still generating after this long is stopped, dead-lettered and its caller
    # told (RESOURCE_EXHAUSTED); the caller's own deadline stops it sooner. For scale: a
    # 1,000,000-cart stream takes ~40 s end to end (make bench); orders cost twice as much
    # to generate (~50 us each). Delivery markers are remembered for 2x this + 60 s.
    generation_budget_seconds: float = Field(default=300.0, gt=0)
    # A consumer whose position has not moved for this long while records wait on its
    # partition is stuck: health says so and /health/ready fails. Longer than the budget
    # (one request may legitimately hold a partition's position that long).
    stuck_after_seconds: float = Field(default=360.0, gt=0)
    # A service process whose event loop has not written its heartbeat for this long is
    # frozen (health says so, /health/ready fails); it writes one every second.
    heartbeat_stale_seconds: float = Field(default=15.0, gt=0)
    # Below this much free space on the file system of DATA_DIR, KAFKA_DATA_DIR or the
    # pattern store, health says `disk full` and /health/ready fails (before a write does).
    min_free_disk_mb: float = Field(default=200.0, ge=0)
    # A message whose handling was started this many times without finishing (its process
    # died or lost the partition every time) is dead-lettered and its caller answered
    # instead of being started again. Counted with markers on the deliveries topic, written
    # before each attempt (services/kit/runtime/deliveries.py). 0: no markers and no limit.
    max_deliveries: int = Field(default=3, ge=0)
    # A failed message is dead-lettered with up to this many tries (backing off 0.2 s to
    # 10 s); past them it is skipped with an ERROR line and a metric, so no single message
    # can stop its partition (the original stays in its topic while retained).
    dead_letter_attempts: int = Field(default=5, ge=1)

    # Request bounds, checked before any work (see services/core/limits.py).
    max_schema_depth: int = Field(default=8, ge=1, le=HARD_MAX_DEPTH)
    max_fields_per_object: int = Field(default=500, ge=1)
    max_fields_total: int = Field(default=2_000, ge=1)
    max_array_items: int = Field(default=1_000, ge=1)
    max_text_length: int = Field(default=10_000, ge=1)
    max_enum_values: int = Field(default=1_000, ge=1)
    max_enum_value_length: int = Field(default=1_000, ge=1)
    max_name_length: int = Field(default=200, ge=1)
    max_description_length: int = Field(default=1_000, ge=0)
    max_path_length: int = Field(default=1_000, ge=1)
    max_scenarios: int = Field(default=1_000, ge=1)
    max_overrides: int = Field(default=10_000, ge=0)
    max_override_chars: int = Field(default=1_000_000, ge=0)
    max_hints: int = Field(default=100, ge=0)
    max_regex_length: int = Field(default=1_000, ge=1)
    max_regex_cost: int = Field(default=100_000, ge=1_000)
    # Numbers beyond 2**53 are not exact as floats: money and JSON would go wrong.
    max_number_magnitude: float = Field(default=1e15, gt=0, le=SAFE_MAGNITUDE)
    # Generated times reach a few years before the anchor and have 4-digit years.
    min_anchor_year: int = Field(default=1900, ge=10)
    max_anchor_year: int = Field(default=2200, le=9990)
    max_output_bytes: int = Field(default=2 << 30, ge=1)
    # A record travels alone in a chunk at worst: it must fit in a Kafka record (8 MiB).
    max_record_bytes: int = Field(default=2 << 20, ge=1024, le=8 << 20)
    max_record_cost: int = Field(default=50_000, ge=100)
    max_errors: int = Field(default=50, ge=1)

    @model_validator(mode="after")
    def _kafka_credentials(self) -> Settings:
        if self.kafka_ssl_keyfile and not self.kafka_ssl_certfile:
            raise ValueError("KAFKA_SSL_KEYFILE needs KAFKA_SSL_CERTFILE")
        if not self.kafka_security_protocol.startswith("SASL_"):
            return self
        if self.kafka_sasl_mechanism == "OAUTHBEARER":
            if not self.kafka_sasl_oauth_token_file:
                raise ValueError(
                    "KAFKA_SASL_MECHANISM=OAUTHBEARER needs KAFKA_SASL_OAUTH_TOKEN_FILE"
                )
        elif not (self.kafka_sasl_username and self.kafka_sasl_password):
            raise ValueError(
                f"KAFKA_SECURITY_PROTOCOL={self.kafka_security_protocol} with "
                f"{self.kafka_sasl_mechanism} needs KAFKA_SASL_USERNAME and KAFKA_SASL_PASSWORD"
            )
        return self

    @model_validator(mode="after")
    def _anchor_years(self) -> Settings:
        if self.min_anchor_year > self.max_anchor_year:
            raise ValueError("min_anchor_year is above max_anchor_year")
        return self

    def signing_key(self) -> bytes | None:
        """CHUNK_SIGNING_KEY as bytes; None when unset or empty (chunks unsigned)."""
        key = self.chunk_signing_key.get_secret_value() if self.chunk_signing_key else ""
        return key.encode() or None

    def limits(self) -> Limits:
        """The request bounds every service plans with (one place builds them)."""
        return Limits(
            max_records=self.max_records,
            default_count=self.default_count,
            max_depth=self.max_schema_depth,
            max_fields_per_object=self.max_fields_per_object,
            max_fields_total=self.max_fields_total,
            max_array_items=self.max_array_items,
            max_text=self.max_text_length,
            max_enum_values=self.max_enum_values,
            max_enum_value_length=self.max_enum_value_length,
            max_name_length=self.max_name_length,
            max_description_length=self.max_description_length,
            max_path_length=self.max_path_length,
            max_scenarios=self.max_scenarios,
            max_overrides=self.max_overrides,
            max_override_chars=self.max_override_chars,
            max_hints=self.max_hints,
            max_regex_length=self.max_regex_length,
            max_regex_cost=self.max_regex_cost,
            max_magnitude=self.max_number_magnitude,
            min_anchor_year=self.min_anchor_year,
            max_anchor_year=self.max_anchor_year,
            max_output_bytes=self.max_output_bytes,
            max_record_bytes=self.max_record_bytes,
            max_record_cost=self.max_record_cost,
            max_errors=self.max_errors,
        )

    # Pattern store (RAG, hybrid, learning). Unset WEAVIATE_URL: the embedded store, a
    # SQLite file here plus the packaged MiniLM model (keywords only without the model).
    pattern_store_path: str = ".data/patterns.sqlite"
    weaviate_url: str | None = None
    weaviate_api_key: str | None = None
    weaviate_grpc_port: int = 50051
    # Every store call is bounded by this: the Weaviate client alone retries for ~60 s.
    pattern_store_timeout_seconds: float = Field(default=5.0, gt=0)
    # How long the router trusts its cached per-(collection, domain, entity) pattern counts
    # before re-reading them in the background (it never waits on the store per request).
    pattern_store_refresh_seconds: float = Field(default=5.0, gt=0)
    rag_top_k: int = Field(default=5, ge=1, le=100)
    # Hybrid ranking weight: 1.0 vectors only, 0.0 keywords only (Weaviate's default 0.75).
    rag_alpha: float = Field(default=0.75, ge=0.0, le=1.0)

    # Learning: every successful dataset goes to the outcomes topic; the learner stores
    # those that pass its gate. Which paths' outputs are learned ("<path>" or
    # "<path>:context"; comma-separated or JSON). Never rag: the store would feed on its
    # own variations. Plain traditional output says nothing a seed does not.
    learn_paths: Annotated[list[str], NoDecode] = ["llm", "hybrid", "traditional:context"]
    # At most this many patterns per (collection, domain, entity) and tenant; lowest
    # quality and least used are pruned first.
    patterns_per_entity_max: int = Field(default=500, ge=1)
    # Learned patterns are their tenant's: retrieved for its requests only. Patterns
    # learned from these tenants' datasets are stored shared, for every tenant (comma-
    # separated or JSON; the seeds are always shared).
    patterns_shared_tenants: Annotated[list[str], NoDecode] = []
    # What an outcome carries of the dataset: its first records, within both bounds.
    learn_sample_records: int = Field(default=20, ge=1, le=1000)
    learn_sample_max_bytes: int = Field(default=64 * 1024, ge=256, le=1024 * 1024)
    # While the store is unavailable the learner retries with backoff up to this delay;
    # outcomes wait in their topic meanwhile.
    learner_retry_max_seconds: float = Field(default=30.0, gt=0)

    # Redis (optional). Unset: no result cache, no cross-instance idempotency or rate limit;
    # with it set but unreachable, the bridge serves uncached and health says degraded.
    redis_url: str | None = None
    redis_key_prefix: str = "testdata:"
    redis_timeout_seconds: float = Field(default=0.5, gt=0)
    # After this many Redis failures in a row, calls skip Redis (served without it, health
    # degraded) for the cool-off; then one call tries it again.
    redis_breaker_failures: int = Field(default=3, ge=1)
    redis_breaker_cool_off_seconds: float = Field(default=10.0, gt=0)
    # use_cache=true answers are kept this long; only datasets within both bounds are cached.
    cache_ttl_seconds: int = Field(default=3600, ge=1)
    cache_max_records: int = Field(default=10_000, ge=0)
    cache_max_bytes: int = Field(default=8 << 20, ge=0)
    # Per-client token bucket on the bridge (0 = off): tokens per second and bucket size.
    rate_limit_per_second: float = Field(default=0.0, ge=0)
    rate_limit_burst: int = Field(default=50, ge=1)
    # `idempotency-key` answers (and resumable streams' pinned requests) are kept this long;
    # without Redis in process, at most this many.
    idempotency_ttl_seconds: int = Field(default=86_400, ge=1)
    idempotency_max_entries: int = Field(default=10_000, ge=1)

    @field_validator("learn_paths", "patterns_shared_tenants", mode="before")
    @classmethod
    def _split_learn_paths(cls, v: Any) -> Any:
        if isinstance(v, str):
            v = v.strip()
            if v.startswith("["):
                return json.loads(v)
            return [p.strip() for p in v.split(",") if p.strip()]
        return v

    @field_validator("learn_paths")
    @classmethod
    def _check_learn_paths(cls, v: list[str]) -> list[str]:
        for entry in v:
            path, _, cond = entry.partition(":")
            if (traits := traits_of(path)) is not None and not traits.learnable:
                raise ValueError(
                    f"{path} outputs are never learned: the store would feed on itself"
                )
            if path not in LEARNABLE_PATHS or cond not in ("", "context"):
                raise ValueError(
                    f"{entry!r}: expected <path> or <path>:context, path one of {LEARNABLE_PATHS}"
                )
        return v


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests construct `Settings(...)` directly instead."""
    return Settings()
