"""Configuration contract: the YAML file the service reads (`kafka:`, `pipeline:`, `observability:`,
`providers:`).

Every option, its default and its environment variable is listed in the generated reference
(`python -m schemas.generate` writes `docs/configuration.md` and `schemas/json/service-config.schema.json`).
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

MAX_BATCH_SIZE = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoAuth(_Strict):
    """No authentication."""

    type: Literal["none"] = "none"


class BasicAuth(_Strict):
    """HTTP Basic authentication."""

    type: Literal["basic"]
    username: str = Field(min_length=1)
    password: SecretStr


Auth = Annotated[NoAuth | BasicAuth, Field(discriminator="type")]


class BatchConfig(_Strict):
    """JSON batching: the array under `key` in the payload holds one item per message."""

    key: str = Field(min_length=1, description="Top-level key of the JSON payload that holds the records.")
    size: int = Field(ge=1, le=MAX_BATCH_SIZE, description="Records per request (1..1000).")


class ResponseConfig(_Strict):
    """How a provider's answer maps to per-message outcomes."""

    accepted_status: list[int] | None = Field(
        default=None, description="HTTP statuses that mean accepted; default any 2xx."
    )
    message_id: str | None = Field(
        default=None,
        description="JSON pointer to the provider message id in a single-message answer, e.g. `/id`.",
    )
    records: str | None = Field(
        default=None,
        description="JSON pointer to the per-record array of a batch answer (`` = the whole body), "
        "matched to the messages by position.",
    )
    record_message_id: str | None = Field(
        default=None, description="JSON pointer to the provider message id inside each record, e.g. `/id`."
    )
    record_status: str | None = Field(
        default=None,
        description="JSON pointer to a record's status; with `record_accepted`, a record whose status is not "
        "listed failed even though the request was accepted.",
    )
    record_accepted: list[str | int | bool] = Field(
        default_factory=list, description="Values of `record_status` that mean the record was accepted."
    )
    record_error: str | None = Field(default=None, description="JSON pointer to a failed record's error text.")

    @field_validator("message_id", "records", "record_message_id", "record_status", "record_error")
    @classmethod
    def _pointer(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not value.startswith("/"):
            raise ValueError("a JSON pointer is empty or starts with '/'")
        return value

    @model_validator(mode="after")
    def _record_status(self) -> ResponseConfig:
        if (self.record_status is None) != (not self.record_accepted):
            raise ValueError("`record_status` and `record_accepted` go together")
        if self.record_status is not None and self.records is None:
            raise ValueError("`record_status` needs `records`")
        return self


class RetryConfig(_Strict):
    """Retries of timeouts, connection errors, 429 and 5xx."""

    max_attempts: int = Field(default=4, ge=1, le=50, description="HTTP attempts per request, first included.")
    backoff_initial_ms: int = Field(default=200, ge=0, description="First backoff ceiling (full jitter).")
    backoff_max_ms: int = Field(default=10_000, ge=0, description="Largest backoff between attempts.")


class RateLimitConfig(_Strict):
    """Requests and messages per second the provider allows; either may be left out."""

    requests_per_s: float | None = Field(default=None, gt=0, description="HTTP requests per second.")
    messages_per_s: float | None = Field(default=None, gt=0, description="Messages per second (batch records count).")
    burst_s: float = Field(
        default=1.0, gt=0, description="Seconds of allowance that may be spent at once after an idle spell."
    )


class BreakerConfig(_Strict):
    """Circuit breaker: stop sending to a provider that keeps failing, probe it before resuming."""

    failure_threshold: int = Field(
        default=5, ge=1, description="Consecutive failed attempts (timeouts, connection errors, 5xx) that open it."
    )
    open_s: float = Field(default=10.0, gt=0, description="How long it stays open before one probe request.")
    max_open_s: float = Field(default=120.0, gt=0, description="Upper bound of the open time as probes keep failing.")


class ProviderConfig(_Strict):
    """One HTTP SMS provider, described as a request template.

    Placeholders `$$To`, `$$Body`, `$$TemplateID`, `$$TemplateVariables`, `$$CampaignID`, `$$MessageID` and
    custom `$$name` may stand in the URL, query, header values and payload.
    """

    method: Literal["GET", "POST"] = Field(default="POST", description="HTTP method.")
    url: str = Field(description="Endpoint; http or https; placeholders allowed in path and query.")
    auth: Auth = Field(default_factory=NoAuth, description="`{type: none}` or `{type: basic, username, password}`.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    query: dict[str, str] = Field(default_factory=dict, description="Query parameters (key-value pairs).")
    format: Literal["form", "json"] | None = Field(
        default=None, description="POST body encoding: key-value `form` or a `json` payload structure."
    )
    payload: Any = Field(
        default=None,
        description="For `form`: an object of key-value pairs. For `json`: the whole JSON payload structure.",
    )
    batch: BatchConfig | None = Field(default=None, description="JSON batching; none = one request per message.")
    response: ResponseConfig = Field(default_factory=ResponseConfig, description="How answers map to outcomes.")
    concurrency: int = Field(default=16, ge=1, le=4096, description="Requests in flight at once.")
    timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one HTTP attempt, in seconds.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries of failed attempts.")
    rate_limit: RateLimitConfig | None = Field(default=None, description="Requests and messages per second.")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig, description="Circuit breaker.")

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("must start with http:// or https://")
        return value

    @field_validator("headers")
    @classmethod
    def _header_names(cls, value: dict[str, str]) -> dict[str, str]:
        for name in value:
            if not name or any(ch in name for ch in " \t\r\n:"):
                raise ValueError(f"invalid header name {name!r}")
        return value

    @model_validator(mode="after")
    def _shape(self) -> ProviderConfig:
        if self.method == "GET":
            if self.format is not None or self.payload is not None:
                raise ValueError("a GET provider takes `query`, not `format`/`payload`")
            if self.batch is not None:
                raise ValueError("batching needs a POST JSON payload")
        elif self.format is None:
            raise ValueError("a POST provider needs `format`: form or json")
        elif self.payload is None:
            raise ValueError("a POST provider needs a `payload`")
        if self.format == "form":
            if not isinstance(self.payload, dict) or not all(
                isinstance(v, str | int | float | bool) for v in self.payload.values()
            ):
                raise ValueError("a form payload is an object of key-value pairs with scalar values")
            if self.batch is not None:
                raise ValueError("batching needs a JSON payload")
        return self


class _EnvFirstSettings(BaseSettings):
    """Settings whose environment variables override the values given in the YAML file."""

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return env_settings, init_settings


class KafkaSettings(_EnvFirstSettings):
    """Kafka connection and topics. Each option can be overridden by `SMS_KAFKA_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="SMS_KAFKA_", extra="forbid", frozen=True)

    bootstrap_servers: str = Field(default="127.0.0.1:9092", description="Comma-separated host:port list.")
    client_id: str = Field(default="sms-consumer", description="Client id the brokers see (logs, quotas).")
    group_id: str = Field(default="sms-consumer", description="Consumer group of the service's instances.")
    input_topic: str = Field(default="sms.send-requests", description="Topic of send-request events.")
    status_topic: str = Field(default="sms.delivery-status", description="Topic of delivery-status events.")
    dlq_topic: str = Field(default="sms.send-requests.dlq", description="Dead-letter topic for bad events.")
    auto_offset_reset: Literal["earliest", "latest"] = Field(
        default="earliest", description="Where a new group starts reading."
    )
    session_timeout_ms: int = Field(
        default=30_000, ge=1000, description="A member silent this long is removed from the group."
    )
    heartbeat_interval_ms: int = Field(default=3_000, ge=100, description="Heartbeat period to the coordinator.")
    rebalance_timeout_ms: int = Field(
        default=60_000, ge=1000, description="Time members get to finish in-flight work on a rebalance."
    )
    max_poll_interval_ms: int = Field(
        default=300_000, ge=1000, description="Longest gap between fetches before the member leaves the group."
    )
    max_poll_records: int = Field(default=2_000, ge=1, description="Records taken from one fetch.")
    max_partition_fetch_bytes: int = Field(
        default=1_048_576, ge=1024, description="Prefetch bound per partition (memory)."
    )
    status_linger_ms: int = Field(default=5, ge=0, description="Producer linger for status records.")
    status_max_batch_bytes: int = Field(
        default=1_048_576, ge=16_384, description="Producer batch size for status records."
    )
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="none", description="Compression of status and dead-letter records."
    )


class PipelineSettings(_EnvFirstSettings):
    """Batching, memory bound, commits and shutdown. Each option can be overridden by `SMS_PIPELINE_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="SMS_PIPELINE_", extra="forbid", frozen=True)

    linger_ms: int = Field(default=100, ge=0, description="How long a batch waits to fill before it is sent.")
    max_pending_messages: int = Field(
        default=20_000,
        ge=1,
        description="Bound on messages buffered plus in flight; fetching pauses above it.",
    )
    resume_below_ratio: float = Field(
        default=0.5, gt=0, lt=1, description="Fetching resumes below this share of max_pending_messages."
    )
    commit_interval_ms: int = Field(default=1_000, ge=10, description="How often finished offsets are committed.")
    shutdown_timeout_s: float = Field(default=30.0, gt=0, description="Drain deadline on SIGTERM.")
    max_message_age_s: float | None = Field(
        default=None,
        gt=0,
        description="A message older than this (from `created_at`) is not sent: it ends `expired`.",
    )
    status_retry_backoff_s: float = Field(
        default=1.0, gt=0, description="Pause before publishing a status again after the producer failed."
    )


class ObservabilitySettings(_EnvFirstSettings):
    """Logging, health and metrics. Each option can be overridden by `SMS_OBSERVABILITY_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="SMS_OBSERVABILITY_", extra="forbid", frozen=True)

    log_level: Literal["debug", "info", "warning", "error"] = Field(default="info", description="Lowest level logged.")
    log_format: Literal["json", "console", "auto"] = Field(
        default="auto", description="`auto`: console in a terminal, JSON lines otherwise."
    )
    http_enabled: bool = Field(default=True, description="Serve `/healthz`, `/readyz` and `/metrics`.")
    http_host: str = Field(default="0.0.0.0", description="Address of the operations HTTP server.")
    http_port: int = Field(default=9400, ge=0, le=65535, description="Port of the operations HTTP server (0: any).")
    max_loop_lag_s: float = Field(
        default=5.0, gt=0, description="`/healthz` fails when the event loop is this late or stops beating."
    )


class ServiceConfig(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ServiceConfig")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    providers: dict[str, ProviderConfig] = Field(min_length=1, description="Providers by name.")

    @field_validator("providers")
    @classmethod
    def _names(cls, value: dict[str, ProviderConfig]) -> dict[str, ProviderConfig]:
        for name in value:
            if not name or len(name) > 256:
                raise ValueError(f"invalid provider name {name!r}")
        return value
