"""Configuration contract: the YAML file the service reads (`kafka:`, `pipeline:`, `observability:`,
`providers:`).

Every option, its default and its environment variable is listed in the generated reference
(`python -m schemas.generate` writes `docs/configuration.md` and `schemas/json/service-config.schema.json`).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

MAX_BATCH_SIZE = 1000


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class NoAuth(_Strict):
    """No authentication."""

    type: Literal["none"] = "none"


def _read_secret_files(data: Any, names: tuple[str, ...]) -> Any:
    """Fill each secret `name` from the file named by `name_file`, read at configuration load.

    A trailing line break is dropped (secret files written by `echo` or mounted by orchestrators end with one).
    Errors name the option and the path, never the content.
    """
    if not isinstance(data, dict):
        return data
    out = dict(data)
    for name in names:
        option = f"{name}_file"
        path = out.get(option)
        if not isinstance(path, str):
            continue
        if out.get(name) is not None:
            raise ValueError(f"give `{name}` or `{option}`, not both")
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as exc:
            raise ValueError(f"{option}: cannot read {path}: {exc.strerror or type(exc).__name__}") from None
        except UnicodeDecodeError:
            raise ValueError(f"{option}: cannot read {path}: not UTF-8 text") from None
        value = text.rstrip("\r\n")
        if not value:
            raise ValueError(f"{option}: {path} is empty")
        out[name] = value
    return out


def _secret_alternatives(*names: str) -> Callable[[dict[str, Any]], None]:
    """JSON Schema: each secret is required unless its `*_file` alternative is given."""

    def edit(schema: dict[str, Any]) -> None:
        required = [r for r in schema.get("required", []) if r not in names]
        if required:
            schema["required"] = required
        else:
            schema.pop("required", None)
        schema["allOf"] = [{"anyOf": [{"required": [n]}, {"required": [f"{n}_file"]}]} for n in names]

    return edit


def _check_http_url(value: str) -> str:
    if not value.startswith(("http://", "https://")):
        raise ValueError("must start with http:// or https://")
    return value


class BasicAuth(_Strict):
    """HTTP Basic authentication."""

    model_config = ConfigDict(json_schema_extra=_secret_alternatives("password"))

    type: Literal["basic"] = Field(description="`basic`.")
    username: str = Field(min_length=1, description="User name.")
    password: SecretStr = Field(description="Password; or give `password_file`.")
    password_file: str | None = Field(
        default=None, description="File holding the password, read at start-up (a trailing line break is dropped)."
    )

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        return _read_secret_files(data, ("password",))


class OAuth2Auth(_Strict):
    """OAuth 2.0 client credentials (RFC 6749 section 4.4): a bearer token from `token_url`, cached and renewed.

    One token per provider is shared by all its senders; it is refreshed before it expires and once when the
    provider answers 401.
    """

    model_config = ConfigDict(json_schema_extra=_secret_alternatives("client_secret"))

    type: Literal["oauth2"] = Field(description="`oauth2`.")
    token_url: str = Field(description="Token endpoint; http or https.")
    client_id: str = Field(min_length=1, description="Client id.")
    client_secret: SecretStr = Field(description="Client secret; or give `client_secret_file`.")
    client_secret_file: str | None = Field(
        default=None,
        description="File holding the client secret, read at start-up (a trailing line break is dropped).",
    )
    scope: str | None = Field(default=None, description="Space-separated scopes to request; none = the default.")
    extra_params: dict[str, str] = Field(
        default_factory=dict,
        description="More form fields for the token request, e.g. `audience` or `resource`.",
    )
    client_auth: Literal["basic", "body"] = Field(
        default="basic",
        description="How the client authenticates to the token endpoint: `basic` (HTTP Basic header, RFC 6749 "
        "form-encoded id and secret) or `body` (`client_id` and `client_secret` form fields).",
    )
    refresh_before_s: float = Field(
        default=30.0,
        ge=0,
        description="A token is refreshed when this many seconds of its lifetime remain, or "
        "`refresh_before_ratio` of it, whichever comes later.",
    )
    refresh_before_ratio: float = Field(
        default=0.1, ge=0, lt=1, description="Share of a token's lifetime left when it is refreshed (see above)."
    )
    default_expires_in_s: float = Field(
        default=3600.0, gt=0, description="Lifetime assumed when the token endpoint gives no `expires_in`."
    )
    retry_interval_s: float = Field(
        default=120.0,
        gt=0,
        description="After the token endpoint refused the credentials (4xx, or no `access_token`), wait this long "
        "before asking again; messages due meanwhile end `dispatch_error` / `auth_failed`.",
    )
    transient_retry_interval_s: float = Field(
        default=5.0,
        gt=0,
        description="After the token endpoint timed out, could not be reached or answered 5xx/408/429, wait this "
        "long before asking again.",
    )
    timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one token request, in seconds.")

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        return _read_secret_files(data, ("client_secret",))

    @field_validator("token_url")
    @classmethod
    def _token_url(cls, value: str) -> str:
        return _check_http_url(value)


class SigV4Auth(_Strict):
    """AWS Signature Version 4 (End User Messaging SMS, Pinpoint); needs the `aws` extra (botocore).

    Every request is signed as it is sent: method, URL with query, headers and body.
    """

    model_config = ConfigDict(json_schema_extra=_secret_alternatives("secret_access_key"))

    type: Literal["sigv4"] = Field(description="`sigv4`.")
    access_key_id: str = Field(min_length=1, description="AWS access key id.")
    secret_access_key: SecretStr = Field(description="AWS secret access key; or give `secret_access_key_file`.")
    secret_access_key_file: str | None = Field(
        default=None,
        description="File holding the secret access key, read at start-up (a trailing line break is dropped).",
    )
    session_token: SecretStr | None = Field(
        default=None, description="Session token of temporary credentials; or give `session_token_file`."
    )
    session_token_file: str | None = Field(
        default=None, description="File holding the session token, read at start-up."
    )
    region: str = Field(min_length=1, description="AWS region, e.g. `eu-west-1`.")
    service: str = Field(
        min_length=1,
        description="Signing name of the service: `sms-voice` (End User Messaging SMS), `mobiletargeting` (Pinpoint).",
    )

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        return _read_secret_files(data, ("secret_access_key", "session_token"))


Auth = Annotated[NoAuth | BasicAuth | OAuth2Auth | SigV4Auth, Field(discriminator="type")]
AUTH_MODELS: tuple[type[BaseModel], ...] = (NoAuth, BasicAuth, OAuth2Auth, SigV4Auth)


BatchMode = Literal["records", "joined", "recipients", "keyed"]
DEFAULT_SEPARATOR = ","


class BatchConfig(_Strict):
    """Batching: several messages in one request, in one of four shapes chosen by `mode`.

    `records`: an array holding one record per message, under `key` or (without `key`) as the whole JSON body.
    `joined`: one shared body, the recipients joined with `separator` into the form field, query parameter or
    JSON key named `key`, whose value is exactly `$$To`. `recipients`: one shared body, the recipients as an
    array under `key` (template `[$$To]`). `keyed`: an object under `key` with one entry per recipient
    (template `{$$To: {...}}`). In the last three, messages share a request only if everything but the
    recipient renders the same, body included, and a request never holds the same recipient twice.
    """

    mode: BatchMode = Field(
        default="records", description="Shape of a batch: `records`, `joined`, `recipients` or `keyed`."
    )
    key: str | None = Field(
        default=None,
        min_length=1,
        description="Where the messages go: the top-level JSON key (or, for `joined`, form field or query "
        "parameter); required except for `records` as the whole body.",
    )
    separator: str | None = Field(
        default=None,
        description=f"`joined` only: what joins the recipients; default `{DEFAULT_SEPARATOR}`. No digit or `+`, "
        "so it can never occur inside an E.164 number.",
    )
    size: int = Field(ge=1, le=MAX_BATCH_SIZE, description="Messages per request (1..1000).")

    @field_validator("separator")
    @classmethod
    def _separator(cls, value: str | None) -> str | None:
        if value is not None and (not 1 <= len(value) <= 8 or any(ch.isdigit() or ch in "+\r\n" for ch in value)):
            raise ValueError("1 to 8 characters, none of them a digit, '+' or a line break")
        return value

    @model_validator(mode="after")
    def _mode(self) -> BatchConfig:
        if self.key is None and self.mode != "records":
            raise ValueError(f"mode {self.mode} needs `key`")
        if self.separator is not None and self.mode != "joined":
            raise ValueError("`separator` applies to mode joined only")
        return self

    @property
    def join_with(self) -> str:
        """The separator of mode `joined`."""
        return self.separator or DEFAULT_SEPARATOR


class ResponseConfig(_Strict):
    """How a provider's answer maps to per-message outcomes."""

    accepted_status: list[int] | None = Field(
        default=None, description="HTTP statuses that mean accepted; default any 2xx."
    )
    message_id: str | None = Field(
        default=None,
        description="JSON pointer to the provider message id of the answer, e.g. `/id`; in a batch answer, the "
        "id of the whole request, given to every message that has no id of its own.",
    )
    body_status: str | None = Field(
        default=None,
        description="JSON pointer to a request-level status inside an accepted answer; with `body_accepted`, an "
        "answer whose status is not listed (or missing) fails all its messages (`provider_refused`).",
    )
    body_accepted: list[str | int | bool] = Field(
        default_factory=list, description="Values of `body_status` that mean the request was accepted."
    )
    body_error: str | None = Field(
        default=None, description="JSON pointer to the error text of a refused answer (`body_status`)."
    )
    records: str | None = Field(
        default=None,
        description="JSON pointer to the per-record results of a batch answer (`` = the whole body): an array "
        "matched by position (or by `record_recipient`), or an object keyed by recipient.",
    )
    record_recipient: str | None = Field(
        default=None,
        description="JSON pointer to the recipient inside each record: records are then matched by number "
        "(digits only, so `+91…`, `91…` and 91… all match).",
    )
    record_message_id: str | None = Field(
        default=None,
        description="JSON pointer to the provider message id inside each record, e.g. `/id`; without it a "
        "record that is a plain string or number is the id itself.",
    )
    refused_recipients: str | None = Field(
        default=None,
        description="JSON pointer to a list of recipients the provider refused in an accepted answer; they "
        "fail, and position matching of `records` skips them.",
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

    @field_validator(
        "message_id",
        "body_status",
        "body_error",
        "records",
        "record_recipient",
        "record_message_id",
        "record_status",
        "record_error",
        "refused_recipients",
    )
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
        if (self.body_status is None) != (not self.body_accepted):
            raise ValueError("`body_status` and `body_accepted` go together")
        if self.record_recipient is not None and self.records is None:
            raise ValueError("`record_recipient` needs `records`")
        return self

    @property
    def reads_body(self) -> bool:
        """Whether mapping an answer needs its JSON body."""
        return (
            self.message_id is not None
            or self.body_status is not None
            or self.records is not None
            or self.refused_recipients is not None
        )


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
    max_open_s: float = Field(
        default=30.0,
        gt=0,
        description="Upper bound of the open time as probes keep failing: after a long outage sending resumes "
        "at most this long after the provider is back.",
    )


CallbackStatus = Literal["delivered", "undelivered", "failed", "clicked", "replied"]


class CallbackSecretAuth(_Strict):
    """A shared secret the provider sends with every callback, in a header or a query parameter (put it in
    the callback URL you give the provider: `https://you.example/callbacks/x?token=...`)."""

    model_config = ConfigDict(json_schema_extra=_secret_alternatives("secret"))

    type: Literal["secret"] = Field(description="`secret`.")
    header: str | None = Field(default=None, min_length=1, description="Header that carries the secret.")
    query: str | None = Field(default=None, min_length=1, description="Query parameter that carries the secret.")
    secret: SecretStr = Field(description="The shared secret; or give `secret_file`.")
    secret_file: str | None = Field(
        default=None, description="File holding the secret, read at start-up (a trailing line break is dropped)."
    )

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        return _read_secret_files(data, ("secret",))

    @model_validator(mode="after")
    def _where(self) -> CallbackSecretAuth:
        if (self.header is None) == (self.query is None):
            raise ValueError("give exactly one of `header` and `query`")
        if not self.secret.get_secret_value():
            raise ValueError("`secret` is empty")
        return self


class CallbackBasicAuth(BasicAuth):
    """HTTP Basic credentials the provider sends with every callback (`https://user:password@you.example/...`)."""


class CallbackTwilioAuth(_Strict):
    """Twilio's request signature, checked against the account's auth token.

    `X-Twilio-Signature` is the base64 HMAC-SHA1, keyed with the auth token, of the URL Twilio called
    followed by the form fields sorted by name (name and value, no separators); a JSON body is covered by the
    `bodySHA256` query parameter instead."""

    model_config = ConfigDict(json_schema_extra=_secret_alternatives("auth_token"))

    type: Literal["twilio_signature"] = Field(description="`twilio_signature`.")
    auth_token: SecretStr = Field(description="The Twilio account's auth token; or give `auth_token_file`.")
    auth_token_file: str | None = Field(
        default=None, description="File holding the auth token, read at start-up (a trailing line break is dropped)."
    )
    public_url: str = Field(
        pattern=r"^https?://[^/?#@]+$",
        description="Scheme and host (and port, if any) of the callback URL as given to Twilio, such as "
        "`https://hooks.example.com`: the signature covers the URL Twilio called, and a request's own `Host` "
        "header is the caller's to choose. The path and query are the request's own.",
    )

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        return _read_secret_files(data, ("auth_token",))

    @model_validator(mode="after")
    def _token(self) -> CallbackTwilioAuth:
        if not self.auth_token.get_secret_value():
            raise ValueError("`auth_token` is empty")
        return self


class CallbackNoAuth(_Strict):
    """No authentication: every callback is taken (only behind a gateway that authenticates them)."""

    type: Literal["none"] = Field(description="`none`.")


CallbackAuth = Annotated[
    CallbackNoAuth | CallbackSecretAuth | CallbackBasicAuth | CallbackTwilioAuth, Field(discriminator="type")
]
CALLBACK_AUTH_MODELS: tuple[type[BaseModel], ...] = (
    CallbackNoAuth,
    CallbackSecretAuth,
    CallbackBasicAuth,
    CallbackTwilioAuth,
)


class CallbackConfig(_Strict):
    """Delivery reports: how the provider's callbacks to `/callbacks/<provider>` read.

    A location is a JSON pointer (`/status/type`) into a JSON report, or a field name (`MessageStatus`) of a
    form or query-string callback. A JSON body holds one report or an array of them; `json_field` names a form
    or query field whose value is such a JSON document (MSG91 `data`).
    """

    auth: CallbackAuth | None = Field(
        default=None,
        description="How callbacks authenticate, by `type`: `secret`, `basic`, `twilio_signature` or `none`. "
        "Without it every "
        "callback of this provider is refused (401).",
    )
    json_field: str | None = Field(
        default=None, min_length=1, description="Form or query field whose value is the JSON report(s)."
    )
    reports: str | None = Field(
        default=None,
        description="JSON pointer to the report or array of reports inside a JSON document; default the document.",
    )
    message_id: str | None = Field(default=None, description="Location of the provider's message id.")
    client_reference: str | None = Field(
        default=None,
        description="Location of our message id echoed back (the provider's client reference field, sent as "
        "`$$MessageID`); correlates without memory.",
    )
    recipient: str | None = Field(default=None, description="Location of the recipient's number.")
    status: str = Field(description="Location of the provider's status value.")
    error_code: str | None = Field(default=None, description="Location of the provider's error code.")
    statuses: dict[str, CallbackStatus] = Field(
        min_length=1,
        description="Provider status values (compared as text) and the status each becomes: `delivered`, "
        "`undelivered`, `failed`, `clicked` or `replied`. A value not listed (`queued`, `sent`, ...) is "
        "acknowledged and not published.",
    )

    @field_validator("reports")
    @classmethod
    def _pointer(cls, value: str | None) -> str | None:
        if value is not None and value != "" and not value.startswith("/"):
            raise ValueError("a JSON pointer is empty or starts with '/'")
        return value

    @model_validator(mode="after")
    def _ids(self) -> CallbackConfig:
        if self.message_id is None and self.client_reference is None:
            raise ValueError("give `message_id` or `client_reference` (or both)")
        return self


class ProviderConfig(_Strict):
    """One HTTP SMS provider, described as a request template.

    Placeholders `$$To`, `$$Body`, `$$TemplateID`, `$$TemplateVariables`, `$$CampaignID`, `$$MessageID` and
    custom `$$name` may stand in the URL, query, header values and payload.
    """

    method: Literal["GET", "POST"] = Field(default="POST", description="HTTP method.")
    preset: str | None = Field(
        default=None,
        description="Name of a shipped preset (`consumer/presets/<name>.yaml`) merged under the values given "
        "here: objects merge key by key, anything else replaces, `null` removes, `auth` replaces as a whole.",
    )
    url: str = Field(description="Endpoint; http or https; placeholders allowed in path and query.")
    auth: Auth = Field(
        default_factory=NoAuth,
        description="Authentication, by `type`: `none`, `basic`, `oauth2` or `sigv4` (see the sections below).",
    )
    headers: dict[str, str] = Field(default_factory=dict, description="Extra HTTP headers.")
    query: dict[str, str] = Field(default_factory=dict, description="Query parameters (key-value pairs).")
    format: Literal["form", "json"] | None = Field(
        default=None, description="POST body encoding: key-value `form` or a `json` payload structure."
    )
    recipient_format: Literal["e164", "digits"] = Field(
        default="e164",
        description="How `$$To` renders: `e164` (+919812345678) or `digits` (919812345678, for providers that "
        "want international numbers without `+`).",
    )
    payload: Any = Field(
        default=None,
        description="For `form`: an object of key-value pairs. For `json`: the whole JSON payload structure.",
    )
    batch: BatchConfig | None = Field(default=None, description="Batching; none = one request per message.")
    response: ResponseConfig = Field(default_factory=ResponseConfig, description="How answers map to outcomes.")
    concurrency: int = Field(default=16, ge=1, le=4096, description="Requests in flight at once.")
    timeout_s: float = Field(default=10.0, gt=0, description="Timeout of one HTTP attempt, in seconds.")
    retry: RetryConfig = Field(default_factory=RetryConfig, description="Retries of failed attempts.")
    rate_limit: RateLimitConfig | None = Field(default=None, description="Requests and messages per second.")
    breaker: BreakerConfig = Field(default_factory=BreakerConfig, description="Circuit breaker.")
    callback: CallbackConfig | None = Field(
        default=None, description="Delivery reports the provider posts to `/callbacks/<name>`; none = not taken."
    )

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
        joined = self.batch is not None and self.batch.mode == "joined"
        if self.method == "GET":
            if self.format is not None or self.payload is not None:
                raise ValueError("a GET provider takes `query`, not `format`/`payload`")
            if self.batch is not None and not joined:
                raise ValueError("a GET provider batches only with mode joined (recipients in a query parameter)")
        elif self.format is None:
            raise ValueError("a POST provider needs `format`: form or json")
        elif self.payload is None:
            raise ValueError("a POST provider needs a `payload`")
        if self.format == "form":
            if not isinstance(self.payload, dict) or not all(
                isinstance(v, str | int | float | bool) for v in self.payload.values()
            ):
                raise ValueError("a form payload is an object of key-value pairs with scalar values")
            if self.batch is not None and not joined:
                raise ValueError("a form provider batches only with mode joined (recipients in a form field)")
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
        default=262_144,
        ge=1024,
        description="Prefetch bound per partition: fetched records held per assigned partition (memory).",
    )
    status_linger_ms: int = Field(default=5, ge=0, description="Producer linger for status records.")
    status_max_batch_bytes: int = Field(
        default=262_144,
        ge=16_384,
        description="Producer batch size for status records: held per partition of the status topic (memory).",
    )
    compression_type: Literal["none", "gzip", "snappy", "lz4", "zstd"] = Field(
        default="none", description="Compression of status and dead-letter records."
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = Field(
        default="PLAINTEXT",
        description="How clients talk to the brokers: `PLAINTEXT`, `SSL` (TLS), `SASL_PLAINTEXT` (SASL "
        "authentication, no TLS) or `SASL_SSL` (SASL over TLS).",
    )
    ssl_cafile: str | None = Field(
        default=None,
        description="PEM file of the CA certificates that signed the brokers' certificates; none = the system's "
        "trusted CAs. `SSL`/`SASL_SSL` only.",
    )
    ssl_certfile: str | None = Field(
        default=None,
        description="PEM file of the client certificate (mutual TLS), with its key unless `ssl_keyfile` is given.",
    )
    ssl_keyfile: str | None = Field(default=None, description="PEM file of the client certificate's private key.")
    ssl_key_password: SecretStr | None = Field(
        default=None, description="Password of an encrypted private key; or give `ssl_key_password_file`."
    )
    ssl_key_password_file: str | None = Field(
        default=None, description="File holding the private key's password, read at start-up."
    )
    ssl_check_hostname: bool = Field(
        default=True, description="Check that a broker's certificate names the host connected to."
    )
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = Field(
        default=None,
        description="SASL mechanism: `PLAIN`, `SCRAM-SHA-256` or `SCRAM-SHA-512`; required with `SASL_*`.",
    )
    sasl_username: str | None = Field(default=None, min_length=1, description="SASL user name.")
    sasl_password: SecretStr | None = Field(default=None, description="SASL password; or give `sasl_password_file`.")
    sasl_password_file: str | None = Field(
        default=None,
        description="File holding the SASL password, read at start-up (a trailing line break is dropped).",
    )

    @model_validator(mode="before")
    @classmethod
    def _files(cls, data: Any) -> Any:
        return _read_secret_files(data, ("sasl_password", "ssl_key_password"))

    @model_validator(mode="after")
    def _security(self) -> KafkaSettings:
        protocol = self.security_protocol
        tls = protocol in ("SSL", "SASL_SSL")
        sasl = protocol.startswith("SASL_")
        given = {name for name in type(self).model_fields if getattr(self, name) is not None}
        if not tls:
            stray = sorted(n for n in given if n.startswith("ssl_") and n != "ssl_check_hostname")
            if stray:
                raise ValueError(f"{', '.join(stray)}: apply to security_protocol SSL or SASL_SSL only")
        if not sasl:
            stray = sorted(n for n in given if n.startswith("sasl_"))
            if stray:
                raise ValueError(f"{', '.join(stray)}: apply to security_protocol SASL_PLAINTEXT or SASL_SSL only")
        else:
            missing = [n for n in ("sasl_mechanism", "sasl_username", "sasl_password") if n not in given]
            if missing:
                raise ValueError(f"security_protocol {protocol} needs {', '.join(missing)}")
        if self.ssl_certfile is None and (self.ssl_keyfile is not None or self.ssl_key_password is not None):
            raise ValueError("ssl_keyfile and ssl_key_password need ssl_certfile")
        for name in ("ssl_cafile", "ssl_certfile", "ssl_keyfile"):
            path = getattr(self, name)
            if path is not None and not (Path(path).is_file() and os.access(path, os.R_OK)):
                raise ValueError(f"{name}: {path} is not a readable file")
        return self


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


class CallbackSettings(_EnvFirstSettings):
    """Delivery-report endpoint memory bounds. Each option can be overridden by `SMS_CALLBACKS_<NAME>`."""

    model_config = SettingsConfigDict(env_prefix="SMS_CALLBACKS_", extra="forbid", frozen=True)

    correlation_size: int = Field(
        default=1_000_000,
        ge=0,
        description="Sent messages remembered (least recently used first out) to correlate callbacks that carry "
        "only the provider's message id; per instance, lost on restart.",
    )
    dedupe_size: int = Field(
        default=200_000, ge=0, description="Recent delivery reports remembered to drop repeated callbacks."
    )
    publish_timeout_s: float = Field(
        default=10.0, gt=0, description="A callback whose status Kafka has not acknowledged by then gets 503."
    )


class ServiceConfig(BaseModel):
    """The whole configuration file."""

    model_config = ConfigDict(extra="forbid", frozen=True, title="ServiceConfig")

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    pipeline: PipelineSettings = Field(default_factory=PipelineSettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    callbacks: CallbackSettings = Field(default_factory=CallbackSettings)
    providers: dict[str, ProviderConfig] = Field(min_length=1, description="Providers by name.")

    @field_validator("providers")
    @classmethod
    def _names(cls, value: dict[str, ProviderConfig]) -> dict[str, ProviderConfig]:
        for name in value:
            if not name or len(name) > 256:
                raise ValueError(f"invalid provider name {name!r}")
        return value
