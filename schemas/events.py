"""Event contracts: what publishers put on the input topic and what subscribers read from the status topic.

These models are the single source of truth; `schemas/json/*.schema.json` is generated from them with
`python -m schemas.generate`.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, NotRequired, Required

import orjson
from pydantic import AfterValidator, BaseModel, ConfigDict, Field, StringConstraints, TypeAdapter
from typing_extensions import TypedDict  # pydantic needs this one before Python 3.12

E164_PATTERN = r"^\+[1-9][0-9]{6,14}$"

MessageId = Annotated[str, StringConstraints(min_length=1, max_length=256)]
Identifier = Annotated[str, StringConstraints(min_length=1, max_length=256)]
ReplacementValue = str | int | float | bool | None
METADATA_MAX_BYTES = 65_536
"""Largest `metadata` of a send-request, as compact JSON: every status repeats it."""


def metadata_size(value: Any) -> int:
    """Bytes of `value` as compact JSON (what a status carries); a value JSON cannot carry counts as too large."""
    try:
        return len(orjson.dumps(value))
    except TypeError:
        return METADATA_MAX_BYTES + 1


def _bounded_metadata(value: dict[str, Any]) -> dict[str, Any]:
    if (size := metadata_size(value)) > METADATA_MAX_BYTES:
        raise ValueError(f"metadata takes {size:,} bytes as JSON; at most {METADATA_MAX_BYTES:,}")
    return value


def _aware(value: datetime) -> datetime:
    if value.tzinfo is None:
        raise ValueError("timestamp must carry a time zone offset (RFC 3339)")
    return value


# Checks live in the field types, not in model validators, so that `SendRequestFields` carries them too.
Metadata = Annotated[dict[str, Any], AfterValidator(_bounded_metadata)]
Timestamp = Annotated[datetime, AfterValidator(_aware)]


class SendRequest(BaseModel):
    """One SMS to send: the value of a record on the send-request topic (UTF-8 JSON).

    Unknown fields are ignored so that publishers can move ahead of consumers.
    """

    model_config = ConfigDict(extra="ignore", frozen=True, title="SendRequest")

    message_id: MessageId = Field(description="Unique id of this message; the idempotency key.")
    campaign_id: Identifier = Field(description="Campaign the message belongs to; messages batch per campaign.")
    provider: Identifier = Field(description="Name of a provider configured in the service.")
    to: Annotated[str, StringConstraints(pattern=E164_PATTERN)] = Field(
        description="Recipient in E.164 form, e.g. +14155550100."
    )
    body: str | None = Field(default=None, description="Message text ($$Body).")
    template_id: Annotated[str, StringConstraints(max_length=256)] | None = Field(
        default=None, description="Provider or regulator template id ($$TemplateID)."
    )
    template_variables: Any = Field(
        default=None, description="Template variables ($$TemplateVariables): any JSON value."
    )
    replacements: dict[str, ReplacementValue] = Field(
        default_factory=dict,
        description="Values of the provider's custom replacements, keyed by name without `$$`.",
    )
    created_at: Timestamp | None = Field(
        default=None, description="RFC 3339 creation time; defaults to the Kafka record timestamp."
    )
    expires_at: Timestamp | None = Field(
        default=None, description="RFC 3339 time after which the message must not be sent."
    )
    metadata: Metadata | None = Field(
        default=None,
        description="Opaque object passed through unchanged to every status of this message; at most "
        f"{METADATA_MAX_BYTES:,} bytes as JSON (a status must stay well within Kafka's record size).",
    )


def _fields_of(model: type[BaseModel]) -> Any:
    """A `TypedDict` with the fields of `model`, their types and checks: the given fields only, no defaults.

    Only what the field types carry is carried: a model with validators or aliases of its own is refused."""
    found = model.__pydantic_decorators__
    if found.field_validators or found.model_validators or found.validators or found.root_validators:
        raise TypeError(f"{model.__name__}: put its checks in its field types for the dict form to carry them")
    fields: dict[str, Any] = {}
    for name, info in model.model_fields.items():
        if info.alias or info.validation_alias:
            raise TypeError(f"{model.__name__}.{name}: an alias would not reach the dict form")
        kind = Annotated[(info.annotation, *info.metadata)] if info.metadata else info.annotation
        fields[name] = Required[kind] if info.is_required() else NotRequired[kind]
    typed = TypedDict(f"{model.__name__}Fields", fields)  # type: ignore[misc]
    typed.__pydantic_config__ = ConfigDict(extra=model.model_config.get("extra"))  # type: ignore[attr-defined]
    return typed


SendRequestFields = _fields_of(SendRequest)
"""A send-request as a plain dict of the fields it gives, validated exactly as `SendRequest` validates it (a
test holds the two together). The service's intake uses it: no model instance per message, at less than half
the cost."""

validate_send_request = TypeAdapter(SendRequestFields).validator.validate_json
"""Validate a send-request's raw JSON into a `SendRequestFields` dict; raises `pydantic.ValidationError`."""


class Status(StrEnum):
    """Outcome of a message, as published on the status topic."""

    SENT = "sent"
    """The provider accepted the message."""
    FAILED = "failed"
    """The provider refused the message, or retries ran out, or (a delivery report) it could not send it."""
    REJECTED = "rejected"
    """The send-request itself was invalid; it was never sent."""
    DISPATCH_ERROR = "dispatch_error"
    """The message could not be dispatched (for example, authentication with the provider failed)."""
    EXPIRED = "expired"
    """The message expired before it could be sent; it was not sent."""
    DELIVERED = "delivered"
    """Delivery report: the message reached the handset."""
    UNDELIVERED = "undelivered"
    """Delivery report: the network could not deliver the message."""
    CLICKED = "clicked"
    """Delivery report: the recipient opened a link of the message."""
    REPLIED = "replied"
    """Delivery report: the recipient answered the message."""


class Encoding(StrEnum):
    """How the message body travels over the air."""

    GSM_7 = "GSM-7"
    """The GSM 03.38 alphabet: 160 characters in one SMS, 153 per part of a longer one."""
    UCS_2 = "UCS-2"
    """Any other text: 70 UTF-16 code units in one SMS, 67 per part."""


class Reason(BaseModel):
    """Why a message ended as it did: a stable code for machines and a message for people."""

    model_config = ConfigDict(frozen=True)

    code: str = Field(description="Stable machine-readable code, e.g. `http_status`, `invalid_event`.")
    message: str = Field(description="Human-readable explanation; never contains secrets.")


class Source(BaseModel):
    """Where the send-request was read from."""

    model_config = ConfigDict(frozen=True)

    topic: str
    partition: int
    offset: int


class DeliveryStatus(BaseModel):
    """A status of a message: the value of a record on the status topic (key = `message_id`).

    The pipeline publishes one (`sent`, `failed`, `rejected`, `dispatch_error` or `expired`) per message; a
    provider's delivery reports add `delivered`, `undelivered`, `failed`, `clicked` or `replied` later. A
    report that could not be matched to a message has no `message_id` and is keyed by `provider_message_id`.
    """

    model_config = ConfigDict(frozen=True, title="DeliveryStatus")

    schema_version: int = Field(default=1, description="Version of this contract.")
    message_id: str | None = Field(
        description="Our message id; null only for a delivery report that could not be matched to a message."
    )
    campaign_id: str | None = Field(
        default=None,
        description="Null for a rejected event that lacked it, and for a delivery report whose message is not "
        "remembered (see `provider_message_id`).",
    )
    provider: str | None = Field(default=None, description="Null only for a rejected event that lacked it.")
    to: str | None = Field(default=None, description="Recipient; null only for a rejected event that lacked it.")
    status: Status
    reason: Reason | None = None
    http_status: int | None = Field(default=None, description="HTTP status of the provider's last answer.")
    provider_message_id: str | None = Field(default=None, description="Id the provider gave the message.")
    attempts: int = Field(default=0, ge=0, description="HTTP attempts made for this message.")
    encoding: Encoding | None = Field(
        default=None, description="Encoding the body needs; null when the message has no body (template only)."
    )
    segments: int | None = Field(
        default=None,
        ge=1,
        description="SMS parts the body takes (GSM-7: 160, or 153 per part, extension characters counting two; "
        "UCS-2: 70, or 67 per part, in UTF-16 code units); null when the message has no body.",
    )
    batch_id: str | None = Field(default=None, description="Id of the provider request batch it was sent in.")
    batch_size: int | None = Field(default=None, ge=1, description="Number of messages in that batch.")
    created_at: datetime | None = Field(default=None, description="When the send-request was created.")
    completed_at: datetime = Field(description="When this status was decided (a delivery report: received).")
    source: Source | None = Field(
        description="Where the send-request was read from; null for a delivery report (it came from a callback)."
    )
    metadata: dict[str, Any] | None = None


DLQ_HEADERS = {
    "error_code": "sms-error-code",
    "error_message": "sms-error-message",
    "source_topic": "sms-source-topic",
    "source_partition": "sms-source-partition",
    "source_offset": "sms-source-offset",
}
"""Headers on every dead-letter record, naming why it was refused and where it came from."""
