"""Service configuration, read from the environment and `.env` (names as in the spec).

The settings come in sections, one model each (`KafkaSettings`, `LLMSettings`, ...; the
request bounds are `services.core.limits.Limits`). `Settings` reads the flat environment
once into all of them (a variable's name is its field's name in upper case, or the
field's `validation_alias`) and hands out each section on its own (`settings.kafka`,
`settings.llm`, `settings.limits`, ...), so a component can be given only its concern.
Every field says what it does in its `description`; docs/configuration.md is generated
from them (scripts/gen_config_doc.py).
"""

from __future__ import annotations

import json
from functools import lru_cache
from typing import Annotated, Any, Literal, Self, TypeVar

from pydantic import BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from services.core.limits import Limits
from services.core.models import PATH_TRAITS, traits_of

#: Paths whose outputs may become patterns; "<path>:context" learns that path's output
#: only when a context or a scenario description shaped it.
LEARNABLE_PATHS = tuple(p.value for p, t in PATH_TRAITS.items() if t.learnable)


class ServiceSettings(BaseModel):
    """Service: ports, where they listen, logs, the data directory and start/stop waits."""

    service_name: str = Field(
        default="test-data-agent",
        description="The service name /health reports.",
    )
    grpc_port: int = Field(
        default=9001,
        ge=0,
        le=65535,
        description="Where the gRPC bridge listens (0: a free one, in the run file).",
    )
    http_port: int = Field(
        default=8081,
        ge=0,
        le=65535,
        description="Where /health and /metrics listen (0: a free one, in the run file).",
    )
    bind_host: str = Field(
        default="127.0.0.1",
        description=(
            "Where the embedded defaults listen (gRPC, HTTP, the embedded broker's clients): this "
            "machine only. Another address needs authentication (below) for gRPC."
        ),
    )
    http_bind_host: str = Field(
        default="127.0.0.1",
        description="/health and /metrics listen here (no authentication there: keep it private).",
    )
    log_level: str = Field(
        default="INFO",
        description="The level of the services' and the CLI's logs.",
    )
    instance_id: str = Field(
        default="",
        description="bridge instance name; random when empty",
    )
    data_dir: str = Field(
        default=".data",
        description=(
            "`testdata run` holds this directory for its life: a second instance on the same one "
            "stops at once, naming the first's pid, before it reads or writes anything."
        ),
    )
    ready_timeout_seconds: float = Field(
        default=0.0,
        ge=0,
        description=(
            "`testdata run` waits for its services as long as they make progress and fails at once "
            "on a real cause (a process that exited, a port taken); this bounds the wait too "
            "(seconds, 0: no bound)."
        ),
    )
    stop_timeout_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "How long a service process gets to finish its in-flight work when stopped, before it "
            "is killed (the broker is stopped after the services)."
        ),
    )


class AuthSettings(BaseModel):
    """Authentication and TLS: who may call a bridge, and which chunks it trusts."""

    chunk_signing_key: SecretStr | None = Field(
        default=None,
        description=(
            "Shared by every service process: generators sign each result chunk with it and "
            "bridges drop chunks that do not verify (kit/signing.py). `testdata run` makes one for "
            "its processes when unset; services started apart must all be given the same."
        ),
    )
    auth_tokens_file: str | None = Field(
        default=None,
        description=(
            "gRPC callers (bridge/identity.py): with any of the three below, every call but health "
            "needs a credential that names its tenant, which scopes what it can reach again. "
            "Without any, the bridge serves on a loopback BIND_HOST only, unless "
            "ALLOW_UNAUTHENTICATED (behind a proxy that authenticates). 1. static tokens: a file "
            "of `token,tenant` lines; `authorization: Bearer <token>`."
        ),
    )
    auth_jwt_jwks_file: str | None = Field(
        default=None,
        description=(
            "2. JWTs (`authorization: Bearer <jwt>`) signed by the issuer's key: a JWKS file or "
            "one PEM public key. `exp` is required; `iss` and `aud` are checked when set here."
        ),
    )
    auth_jwt_public_key_file: str | None = Field(
        default=None,
        description="The issuer's PEM public key, instead of a JWKS file.",
    )
    auth_jwt_issuer: str | None = Field(
        default=None,
        description="The `iss` a JWT must carry (not checked when unset).",
    )
    auth_jwt_audience: str | None = Field(
        default=None,
        description="The `aud` a JWT must carry (not checked when unset).",
    )
    auth_jwt_tenant_claim: str = Field(
        default="tenant",
        description="The JWT claim that names the caller's tenant.",
    )
    grpc_tls_cert_file: str | None = Field(
        default=None,
        description=(
            "3. client certificates (mutual TLS): the CA that signs them; the tenant is the "
            "certificate's common name. Needs TLS on the port: GRPC_TLS_CERT_FILE and _KEY_FILE "
            "(PEM), which alone encrypt the connection without proving who calls."
        ),
    )
    grpc_tls_key_file: str | None = Field(
        default=None,
        description="The PEM key of GRPC_TLS_CERT_FILE.",
    )
    grpc_tls_client_ca_file: str | None = Field(
        default=None,
        description="The CA that signs client certificates (mutual TLS).",
    )
    allow_unauthenticated: bool = Field(
        default=False,
        description=(
            "Serve gRPC without a credential on any BIND_HOST (behind a proxy that authenticates)."
        ),
    )

    def signing_key(self) -> bytes | None:
        """CHUNK_SIGNING_KEY as bytes; None when unset or empty (chunks unsigned)."""
        key = self.chunk_signing_key.get_secret_value() if self.chunk_signing_key else ""
        return key.encode() or None


class ClientSettings(BaseModel):
    """Calling a bridge: what the CLI and the agent client present to it."""

    grpc_client_token: SecretStr | None = Field(
        default=None,
        description=(
            "What the CLI and the agent client (kit/client.py) present to a bridge: a bearer token "
            "(a static one or a JWT), the CA that signed the bridge's certificate (TLS; the "
            "system's trust store when empty and TLS is asked for with GRPC_CLIENT_TLS), and a "
            "client certificate and key (mutual TLS)."
        ),
    )
    grpc_client_tls: bool = Field(
        default=False,
        description="Connect to the bridge over TLS.",
    )
    grpc_client_ca_file: str | None = Field(
        default=None,
        description="The CA that signed the bridge's certificate (PEM).",
    )
    grpc_client_cert_file: str | None = Field(
        default=None,
        description="The client certificate presented for mutual TLS (PEM).",
    )
    grpc_client_key_file: str | None = Field(
        default=None,
        description="The key of GRPC_CLIENT_CERT_FILE (PEM).",
    )


class KafkaSettings(BaseModel):
    """Kafka: the cluster, joining it securely, and client timings."""

    kafka_bootstrap_servers: str = Field(
        default="",
        description="Empty bootstrap servers means: start the embedded broker.",
    )
    kafka_client_id: str = Field(
        default="testdata",
        description="The client id every Kafka client of the services announces.",
    )
    kafka_security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description=(
            "Joining a secured cluster: every producer, consumer and admin client of the services "
            "and the CLI uses these (kit/kafka.security_options). SASL needs a username and "
            "password (PLAIN, SCRAM-*) or, for OAUTHBEARER, a file holding the current token (read "
            "again for every authentication, so whatever renews it just rewrites the file). The "
            "SSL files are PEM; without a CA file the system's trust store is used."
        ),
    )
    kafka_sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512", "OAUTHBEARER"] = Field(
        default="PLAIN",
        description="The SASL mechanism (with a SASL_* protocol).",
    )
    kafka_sasl_username: str | None = Field(
        default=None,
        description="The SASL username (PLAIN, SCRAM-*).",
    )
    kafka_sasl_password: SecretStr | None = Field(
        default=None,
        description="The SASL password (PLAIN, SCRAM-*).",
    )
    kafka_sasl_oauth_token_file: str | None = Field(
        default=None,
        description="The file holding the current OAUTHBEARER token.",
    )
    kafka_ssl_cafile: str | None = Field(
        default=None,
        description="The CA that signed the brokers' certificates (PEM).",
    )
    kafka_ssl_certfile: str | None = Field(
        default=None,
        description="The client certificate (PEM).",
    )
    kafka_ssl_keyfile: str | None = Field(
        default=None,
        description="The key of KAFKA_SSL_CERTFILE (PEM).",
    )
    kafka_ssl_key_password: SecretStr | None = Field(
        default=None,
        description="The password of KAFKA_SSL_KEYFILE, when it has one.",
    )
    topic_prefix: str = Field(
        default="",
        description="lets several deployments share one cluster",
    )
    kafka_fetch_max_wait_ms: int = Field(
        default=100,
        ge=0,
        description=(
            "Upper bound on a consumer's wait per fetch. Kafka answers a waiting fetch as soon as "
            "data arrives, but aiokafka keeps one fetch per broker out, so a partition whose "
            "records were just taken waits for the others' fetch to return: measured (make bench "
            "smallcalls), 500 ms halves the idle stack's CPU (0.43 -> 0.25 cores) but serves "
            "~25% fewer calls at 50 callers than 100 ms."
        ),
    )
    kafka_linger_ms: int = Field(
        default=2,
        description=(
            "Producer batching delay. 2 ms serves the most calls at load (make bench smallcalls "
            "on the embedded Apache Kafka: 0 ms takes a one-caller 10-cart call from ~23 to ~15 "
            "ms p50 but costs every producer and the broker ~15% more CPU per call at 50 "
            "callers). Set 0 where latency matters more than throughput."
        ),
    )
    kafka_session_timeout_ms: int = Field(
        default=6000,
        gt=0,
        description=(
            "Consumer group timeouts: a member silent for the session timeout is evicted and its "
            "partitions move to the others. 6 s is the least a Kafka broker accepts by default "
            "(group.min.session.timeout.ms); heartbeats every 1.5 s."
        ),
    )
    kafka_heartbeat_interval_ms: int = Field(
        default=1500,
        gt=0,
        description="How often a consumer group member sends a heartbeat.",
    )
    kafka_request_timeout_ms: int = Field(
        default=40_000,
        gt=0,
        description=(
            "How long a producer waits for the broker's answer to one request, and for room in its "
            "buffer: a full buffer is then waited on again while the broker is there (a loaded "
            "broker slows a stream down; it does not fail it)."
        ),
    )

    @model_validator(mode="after")
    def _kafka_credentials(self) -> Self:
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


class BrokerSettings(BaseModel):
    """The embedded broker (used when KAFKA_BOOTSTRAP_SERVERS is empty)."""

    kafka_data_dir: str = Field(
        default=".data/kafka",
        description=(
            "The embedded broker (used when KAFKA_BOOTSTRAP_SERVERS is empty): Apache Kafka, its "
            "logs kept here across restarts (empty: a temporary directory, gone at stop), its "
            "client port (taken: another free one, named in the banner and the run file; 0: a free "
            "one at each start) and its JVM heap (fixed and committed at start, so the broker's "
            "RSS is about heap + 150 MB from the first minute on, not growing under load)."
        ),
    )
    kafka_port: int = Field(
        default=9092,
        ge=0,
        le=65535,
        description="The embedded broker's client port.",
    )
    kafka_heap_mb: int = Field(
        default=512,
        ge=128,
        description="The embedded broker's JVM heap.",
    )


class LLMSettings(BaseModel):
    """LLM backends: Claude and an OpenAI-compatible server (vLLM)."""

    anthropic_api_key: SecretStr | None = Field(
        default=None,
        description="The Anthropic API key; the Claude backend is off without it.",
    )
    anthropic_base_url: str | None = Field(
        default=None,
        description="Another address for the Anthropic API (unset: the SDK's default).",
    )
    claude_model: str = Field(
        default="claude-sonnet-4-20250514",
        description="The Claude model asked for records.",
    )
    claude_max_tokens: int = Field(
        default=4096,
        description="At most this many tokens per model answer (the local backend uses it too).",
    )
    claude_temperature: float = Field(
        default=0.7,
        description="The sampling temperature (the local backend uses it too).",
    )
    claude_send_temperature: bool = Field(
        default=False,
        description="Newer Messages API versions refuse `temperature`; send it only when asked to.",
    )
    vllm_base_url: str = Field(
        default="http://vllm:8000/v1",
        description="The OpenAI-compatible server's API address.",
    )
    vllm_api_key: SecretStr = Field(
        default=SecretStr("EMPTY"),
        description="The OpenAI-compatible server's API key.",
    )
    vllm_model: str = Field(
        default="meta-llama/Meta-Llama-3-8B-Instruct",
        description="The model asked on the OpenAI-compatible server.",
    )
    use_local_llm: bool = Field(
        default=False,
        description="Use the OpenAI-compatible backend, and try it before Claude.",
    )
    llm_enabled_local: bool = Field(
        default=False,
        description="set when a vLLM server is really deployed",
    )
    llm_timeout_seconds: float = Field(
        default=60.0,
        description="How long one model call may take.",
    )
    llm_max_retries: int = Field(
        default=3,
        description=(
            "Retries of a failed model call (at most this + 1 calls) before the next backend."
        ),
    )
    llm_retry_base_seconds: float = Field(
        default=1.0,
        description="The first retry's wait; each further retry waits twice as long.",
    )
    llm_retry_max_seconds: float = Field(
        default=30.0,
        description="The longest wait between retries.",
    )
    llm_health_interval_seconds: float = Field(
        default=30.0,
        description="how often the router re-probes backends",
    )
    llm_batch_size: int = Field(
        default=25,
        description="Records asked for in one model call.",
    )
    llm_concurrency: int = Field(
        default=8,
        description="Model calls out at once.",
    )


class BridgeSettings(BaseModel):
    """Bridge: publishing, the broker's health, reply topics, streams and admission."""

    max_sync_records: int = Field(
        default=1000,
        description="At most this many records from GenerateData; more need the stream.",
    )
    publish_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "After this long without the broker's acknowledgement of a request, the bridge checks "
            "that the broker still accepts connections: if not, the caller hears UNAVAILABLE (a "
            "broker that is gone is reported, not waited on for the Kafka client's 40 s); if so, "
            "it is slow, and the bridge waits on (to the caller's deadline, else the generation "
            "budget), checking again after each such period."
        ),
    )
    broker_check_seconds: float = Field(
        default=1.0,
        gt=0,
        description=(
            "While calls are out, the bridge checks this often that the broker accepts "
            "connections; after this many refusals in a row those calls fail with UNAVAILABLE and "
            "a retry hint (they would otherwise wait for chunks that cannot come)."
        ),
    )
    broker_gone_checks: int = Field(
        default=2,
        ge=1,
        description="Refusals in a row after which the calls fail.",
    )
    reply_topic_sweep_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "Every this often each bridge deletes the reply topics of bridges whose lease ran out "
            "more than REPLY_TOPIC_GRACE_SECONDS ago (killed ones: a stopped bridge deletes its "
            "own)."
        ),
    )
    reply_topic_grace_seconds: float = Field(
        default=60.0,
        ge=0,
        description="How long after its lease ran out a bridge's reply topic is kept.",
    )
    stream_idle_timeout_seconds: float = Field(
        default=120.0,
        gt=0,
        description=(
            "A streaming caller that reads nothing for this long is failed (its chunks wait in the "
            "reply topic meanwhile, not in bridge memory)."
        ),
    )
    max_concurrent_rpcs: int | None = Field(
        default=None,
        ge=1,
        description=(
            "Calls the bridge serves at once; past it grpc answers RESOURCE_EXHAUSTED (retry "
            "later)."
        ),
    )
    max_running_unary: int = Field(
        default=64,
        ge=1,
        description=(
            "Admission per bridge instance: this many GenerateData / GenerateDataStream calls run "
            "at once, this many more wait their turn in arrival order; one beyond those is refused "
            "at once with RESOURCE_EXHAUSTED and a RetryInfo (reason OVERLOADED)."
        ),
    )
    max_queued_unary: int = Field(
        default=256,
        ge=0,
        description="GenerateData calls that wait their turn.",
    )
    max_running_streams: int = Field(
        default=32,
        ge=1,
        description="GenerateDataStream calls that run at once.",
    )
    max_queued_streams: int = Field(
        default=64,
        ge=0,
        description="GenerateDataStream calls that wait their turn.",
    )


class GenerationSettings(BaseModel):
    """Generation: chunks, requests at once per partition, coherence."""

    chunk_size: int = Field(
        default=1000,
        ge=1,
        description="Records per result chunk.",
    )
    partition_concurrency: int = Field(
        default=16,
        ge=1,
        description=(
            "Requests of one partition handled at once (one at a time per request id), so a small "
            "request never waits behind a large one that shares its partition."
        ),
    )
    coherence_threshold: float = Field(
        default=0.85,
        description=(
            "LLM batches scoring below this get one more call for their low-scoring records; the "
            "learner stores no dataset scoring below it."
        ),
    )


class BackstopSettings(BaseModel):
    """Backstops for requests that cost more than validation foresaw."""

    generation_budget_seconds: float = Field(
        default=300.0,
        gt=0,
        description=(
            "A request still generating after this long is stopped, dead-lettered and its caller "
            "told (RESOURCE_EXHAUSTED); the caller's own deadline stops it sooner. For scale: a "
            "1,000,000-cart stream takes ~40 s end to end (make bench); orders cost twice as much "
            "to generate (~50 us each). Delivery markers are remembered for 2x this + 60 s."
        ),
    )
    stuck_after_seconds: float = Field(
        default=360.0,
        gt=0,
        description=(
            "A consumer whose position has not moved for this long while records wait on its "
            "partition is stuck: health says so and /health/ready fails. Longer than the budget "
            "(one request may legitimately hold a partition's position that long)."
        ),
    )
    heartbeat_stale_seconds: float = Field(
        default=15.0,
        gt=0,
        description=(
            "A service process whose event loop has not written its heartbeat for this long is "
            "frozen (health says so, /health/ready fails); it writes one every second."
        ),
    )
    min_free_disk_mb: float = Field(
        default=200.0,
        ge=0,
        description=(
            "Below this much free space on the file system of DATA_DIR, KAFKA_DATA_DIR or the "
            "pattern store, health says `disk full` and /health/ready fails (before a write does)."
        ),
    )
    max_deliveries: int = Field(
        default=3,
        ge=0,
        description=(
            "A message whose handling was started this many times without finishing (its process "
            "died or lost the partition every time) is dead-lettered and its caller answered "
            "instead of being started again. Counted with markers on the deliveries topic, written "
            "before each attempt (services/kit/runtime/deliveries.py). 0: no markers and no limit."
        ),
    )
    dead_letter_attempts: int = Field(
        default=5,
        ge=1,
        description=(
            "A failed message is dead-lettered with up to this many tries (backing off 0.2 s to 10 "
            "s); past them it is skipped with an ERROR line and a metric, so no single message can "
            "stop its partition (the original stays in its topic while retained)."
        ),
    )


class StoreSettings(BaseModel):
    """Pattern store (RAG, hybrid, learning)."""

    pattern_store_path: str = Field(
        default=".data/patterns.sqlite",
        description=(
            "Unset WEAVIATE_URL: the embedded store, a SQLite file here plus the packaged MiniLM "
            "model (keywords only without the model)."
        ),
    )
    weaviate_url: str | None = Field(
        default=None,
        description="A Weaviate server to keep the patterns in, instead of the embedded store.",
    )
    weaviate_api_key: SecretStr | None = Field(
        default=None,
        description="Weaviate's API key, when it asks for one.",
    )
    weaviate_grpc_port: int = Field(
        default=50_051,
        description="Weaviate's gRPC port.",
    )
    pattern_store_timeout_seconds: float = Field(
        default=5.0,
        gt=0,
        description=(
            "Every store call is bounded by this: the Weaviate client alone retries for ~60 s."
        ),
    )
    pattern_store_refresh_seconds: float = Field(
        default=5.0,
        gt=0,
        description=(
            "How long the router trusts its cached per-(collection, domain, entity) pattern counts "
            "before re-reading them in the background (it never waits on the store per request)."
        ),
    )
    rag_top_k: int = Field(
        default=5,
        ge=1,
        le=100,
        description="Patterns retrieved per request.",
    )
    rag_alpha: float = Field(
        default=0.75,
        ge=0.0,
        le=1.0,
        description=(
            "Hybrid ranking weight: 1.0 vectors only, 0.0 keywords only (Weaviate's default 0.75)."
        ),
    )


class LearningSettings(BaseModel):
    """Learning: which datasets become patterns, and how many are kept."""

    learn_paths: Annotated[list[str], NoDecode] = Field(
        default=["llm", "hybrid", "traditional:context"],
        description=(
            "Every successful dataset goes to the outcomes topic; the learner stores those that "
            'pass its gate. Which paths\' outputs are learned ("<path>" or "<path>:context"; '
            "comma-separated or JSON). Never rag: the store would feed on its own variations. "
            "Plain traditional output says nothing a seed does not."
        ),
    )
    patterns_per_entity_max: int = Field(
        default=500,
        ge=1,
        description=(
            "At most this many patterns per (collection, domain, entity) and tenant; lowest "
            "quality and least used are pruned first."
        ),
    )
    patterns_shared_tenants: Annotated[list[str], NoDecode] = Field(
        default=[],
        description=(
            "Learned patterns are their tenant's: retrieved for its requests only. Patterns "
            "learned from these tenants' datasets are stored shared, for every tenant "
            "(comma-separated or JSON; the seeds are always shared)."
        ),
    )
    learn_sample_records: int = Field(
        default=20,
        ge=1,
        le=1000,
        description=(
            "What an outcome carries of the dataset: its first records, within both bounds."
        ),
    )
    learn_sample_max_bytes: int = Field(
        default=64 * 1024,
        ge=256,
        le=1024 * 1024,
        description="At most this many bytes of the dataset's first records.",
    )
    learner_retry_max_seconds: float = Field(
        default=30.0,
        gt=0,
        description=(
            "While the store is unavailable the learner retries with backoff up to this delay; "
            "outcomes wait in their topic meanwhile."
        ),
    )

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


class RedisSettings(BaseModel):
    """Redis (optional)."""

    redis_url: str | None = Field(
        default=None,
        description=(
            "Unset: no result cache, no cross-instance idempotency or rate limit; with it set but "
            "unreachable, the bridge serves uncached and health says degraded."
        ),
    )
    redis_key_prefix: str = Field(
        default="testdata:",
        description="Every Redis key starts with this.",
    )
    redis_timeout_seconds: float = Field(
        default=0.5,
        gt=0,
        description="How long one Redis call may take.",
    )
    redis_breaker_failures: int = Field(
        default=3,
        ge=1,
        description=(
            "After this many Redis failures in a row, calls skip Redis (served without it, health "
            "degraded) for the cool-off; then one call tries it again."
        ),
    )
    redis_breaker_cool_off_seconds: float = Field(
        default=10.0,
        gt=0,
        description="How long calls skip Redis once it failed that often.",
    )


class ServingSettings(BaseModel):
    """Result cache, per-client rate limit and idempotency of the bridge."""

    cache_ttl_seconds: int = Field(
        default=3600,
        ge=1,
        description=(
            "use_cache=true answers are kept this long; only datasets within both bounds are "
            "cached."
        ),
    )
    cache_max_records: int = Field(
        default=10_000,
        ge=0,
        description="Datasets with more records are not cached.",
    )
    cache_max_bytes: int = Field(
        default=8 << 20,
        ge=0,
        description="Datasets larger than this are not cached.",
    )
    rate_limit_per_second: float = Field(
        default=0.0,
        ge=0,
        description=(
            "Per-client token bucket on the bridge (0 = off): tokens per second and bucket size."
        ),
    )
    rate_limit_burst: int = Field(
        default=50,
        ge=1,
        description="The bucket size: calls a client may make at once.",
    )
    idempotency_ttl_seconds: int = Field(
        default=86_400,
        ge=1,
        description=(
            "`idempotency-key` answers (and resumable streams' pinned requests) are kept this "
            "long; without Redis in process, at most this many."
        ),
    )
    idempotency_max_entries: int = Field(
        default=10_000,
        ge=1,
        description="At most this many answers kept in process.",
    )


#: The sections in the order the configuration page shows them.
SECTIONS: tuple[type[BaseModel], ...] = (
    ServiceSettings,
    AuthSettings,
    ClientSettings,
    KafkaSettings,
    BrokerSettings,
    LLMSettings,
    BridgeSettings,
    GenerationSettings,
    BackstopSettings,
    Limits,
    StoreSettings,
    LearningSettings,
    RedisSettings,
    ServingSettings,
)

SectionT = TypeVar("SectionT", bound=BaseModel)


class Settings(
    ServingSettings,
    RedisSettings,
    LearningSettings,
    StoreSettings,
    Limits,
    BackstopSettings,
    GenerationSettings,
    BridgeSettings,
    LLMSettings,
    BrokerSettings,
    KafkaSettings,
    ClientSettings,
    AuthSettings,
    ServiceSettings,
    BaseSettings,
):
    """Every knob of every service, read from the flat environment; one section each."""

    # Not frozen (as before), though its `Limits` section is.
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", frozen=False
    )

    def section(self, model: type[SectionT]) -> SectionT:
        """This section's fields, on their own (already validated here)."""
        return model.model_construct(**{name: getattr(self, name) for name in model.model_fields})

    @property
    def service(self) -> ServiceSettings:
        return self.section(ServiceSettings)

    @property
    def auth(self) -> AuthSettings:
        return self.section(AuthSettings)

    @property
    def client(self) -> ClientSettings:
        return self.section(ClientSettings)

    @property
    def kafka(self) -> KafkaSettings:
        return self.section(KafkaSettings)

    @property
    def broker(self) -> BrokerSettings:
        return self.section(BrokerSettings)

    @property
    def llm(self) -> LLMSettings:
        return self.section(LLMSettings)

    @property
    def bridge(self) -> BridgeSettings:
        return self.section(BridgeSettings)

    @property
    def generation(self) -> GenerationSettings:
        return self.section(GenerationSettings)

    @property
    def backstops(self) -> BackstopSettings:
        return self.section(BackstopSettings)

    @property
    def limits(self) -> Limits:
        """The request bounds every service plans with."""
        return self.section(Limits)

    @property
    def store(self) -> StoreSettings:
        return self.section(StoreSettings)

    @property
    def learning(self) -> LearningSettings:
        return self.section(LearningSettings)

    @property
    def redis(self) -> RedisSettings:
        return self.section(RedisSettings)

    @property
    def serving(self) -> ServingSettings:
        return self.section(ServingSettings)


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests construct `Settings(...)` directly instead."""
    return Settings()
