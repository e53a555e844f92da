"""Service configuration, read from the environment and `.env` (names as in the spec)."""

from __future__ import annotations

from functools import lru_cache

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    """Every knob of every service. Env var names are the upper-cased field names."""

    model_config = SettingsConfigDict(env_file=".env", env_file_encoding="utf-8", extra="ignore")

    # Service
    service_name: str = "test-data-agent"
    grpc_port: int = 9001
    http_port: int = 8081
    log_level: str = "INFO"
    instance_id: str = ""  # bridge instance name; random when empty

    # Kafka. Empty bootstrap servers means: start the embedded broker.
    kafka_bootstrap_servers: str = ""
    kafka_client_id: str = "testdata"
    topic_prefix: str = ""  # lets several deployments share one cluster
    # Upper bound on a consumer's wait per fetch. Real Kafka answers a waiting fetch as soon
    # as data arrives, so there it costs no latency. The embedded broker (Tansu) polls at
    # halving intervals instead (a new record waits ~1/6 of this on average, up to 1/2), and
    # lists every batch of a partition per fetch, giving up when this wait runs out: with
    # 10 ms a partition past ~20k batches could no longer be read at all, with 50 ms past
    # ~100k. 50 ms: +4 ms p50 / +15 ms p90 per hop there against 10 ms.
    kafka_fetch_max_wait_ms: int = 50
    # Producer batching delay: 2 ms measured best for many concurrent small requests.
    kafka_linger_ms: int = 2
    # Idempotent producer (with acks=all: no duplicates on retry). None = auto: off on the
    # embedded broker (it has no InitProducerId), on for real clusters.
    kafka_idempotence: bool | None = None
    # Consumer group timeouts. None = auto: 3000/500 ms on the embedded broker (fast
    # handoff of a dead member's partitions), the client's 10000/3000 ms on real clusters.
    kafka_session_timeout_ms: int | None = None
    kafka_heartbeat_interval_ms: int | None = None

    # LLM - Claude
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


@lru_cache(maxsize=1)
def get_settings() -> Settings:
    """Process-wide settings; tests construct `Settings(...)` directly instead."""
    return Settings()
