"""Intake: one raw Kafka record -> a message ready to batch, or a refusal with its status.

Pure apart from reading the clock. Invalid input is never dropped: it becomes a `rejected` status (when a
`message_id` can be read) and a dead-letter record carrying the raw bytes and the reason.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import orjson
from pydantic import ValidationError

from consumer.errors import EventError
from consumer.segments import message_facts
from consumer.status import DeadLetter, Origin, dlq_headers, status_record
from consumer.templates import CompiledProvider, Prepared, message_values
from schemas.events import METADATA_MAX_BYTES, Status, metadata_size, validate_send_request

MAX_REASON = 500


@dataclass(slots=True)
class Envelope:
    """A valid send-request on its way through the pipeline: what batching and its statuses need of it. The
    validated request itself is not kept: a pending message is held for as long as its provider is down."""

    message_id: str
    campaign_id: str
    to: str
    metadata: dict[str, Any] | None
    origin: Origin
    created_at: datetime
    provider: CompiledProvider
    prepared: Prepared
    ticket: Any = None
    encoding: str | None = None
    segments: int | None = None
    deadline: datetime | None = None
    """When the message stops being worth sending (`expires_at` or `created_at` + maximum age)."""


@dataclass(frozen=True, slots=True)
class Refusal:
    """A send-request that ends here: its status (if it has a message id) and, for invalid input, a dead letter."""

    status: tuple[bytes, bytes] | None
    dead_letter: DeadLetter | None
    code: str
    message: str
    outcome: Status = Status.REJECTED
    provider: str | None = None
    message_id: str | None = None
    campaign_id: str | None = None


def _describe_validation(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_input=False, include_url=False)[:5]:
        loc = ".".join(str(p) for p in item["loc"]) or "<event>"
        parts.append(f"{loc}: {item['msg']}")
    return "; ".join(parts)[:MAX_REASON]


def _salvage(value: bytes | None) -> dict[str, Any]:
    """Whatever identifying fields can still be read from an invalid event."""
    if not value:
        return {}
    try:
        doc = orjson.loads(value)
    except orjson.JSONDecodeError:
        return {}
    if not isinstance(doc, dict):
        return {}
    out: dict[str, Any] = {}
    for field in ("message_id", "campaign_id", "provider", "to"):
        item = doc.get(field)
        if isinstance(item, str) and 0 < len(item) <= 256:
            out[field] = item
    metadata = doc.get("metadata")
    if isinstance(metadata, dict) and metadata_size(metadata) <= METADATA_MAX_BYTES:  # else too large to repeat
        out["metadata"] = metadata
    return out


def _facts(request: dict[str, Any], encoding: str | None, segments: int | None) -> dict[str, Any]:
    """What a status of a request that ends at intake says about it."""
    return {
        "message_id": request["message_id"],
        "campaign_id": request["campaign_id"],
        "provider": request["provider"],
        "to": request["to"],
        "metadata": request.get("metadata"),
        "encoding": encoding,
        "segments": segments,
    }


class Intake:
    """Validates send-requests against the contract and the configured providers."""

    def __init__(self, providers: dict[str, CompiledProvider], max_age_s: float | None = None) -> None:
        self._providers = providers
        self._max_age = timedelta(seconds=max_age_s) if max_age_s else None
        # The last record timestamp turned into a time: records of one producer batch share theirs.
        self._last_stamp: tuple[int, datetime] = (-1, datetime.now(UTC))

    def accept(self, key: bytes | None, value: bytes | None, origin: Origin) -> Envelope | Refusal:
        """Turn one record into an `Envelope`, or a `Refusal` when it must not be sent."""
        if value is None:
            return self._refuse(key, value, origin, "invalid_event", "the record has no value", {})
        try:
            # The fields given, as a dict, validated as `SendRequest` validates them (no model per message).
            request = validate_send_request(value)
        except ValidationError as exc:
            code = "invalid_json" if any(e["type"] == "json_invalid" for e in exc.errors()) else "invalid_event"
            return self._refuse(key, value, origin, code, _describe_validation(exc), _salvage(value))
        name = request["provider"]
        provider = self._providers.get(name)
        # Computed once per message; every status of it carries them.
        encoding, segments = message_facts(request.get("body"))
        if provider is None:
            return self._refuse(
                key,
                value,
                origin,
                "unknown_provider",
                f"no provider named {name!r} is configured",
                _facts(request, encoding, segments),
            )
        created_at = request.get("created_at") or self._record_time(origin)
        deadline = request.get("expires_at")
        if self._max_age is not None and (deadline is None or created_at + self._max_age < deadline):
            deadline = created_at + self._max_age
        if deadline is not None and deadline <= (now := datetime.now(UTC)):
            status = status_record(
                status=Status.EXPIRED,
                origin=origin,
                reason=("expired", f"expired at {deadline.isoformat()} before it was sent"),
                created_at=created_at,
                completed_at=now,
                **_facts(request, encoding, segments),
            )
            return Refusal(
                status,
                None,
                "expired",
                "expired before it was sent",
                Status.EXPIRED,
                name,
                request["message_id"],
                request["campaign_id"],
            )
        try:
            prepared = provider.prepare(message_values(request))
        except EventError as exc:
            return self._refuse(key, value, origin, exc.code, exc.message, _facts(request, encoding, segments))
        except Exception as exc:  # one odd event must never stop the consumer: refuse it, keep its bytes
            reason = f"cannot render: {type(exc).__name__}"
            return self._refuse(key, value, origin, "render_error", reason, _facts(request, encoding, segments))
        return Envelope(
            request["message_id"],
            request["campaign_id"],
            request["to"],
            request.get("metadata"),
            origin,
            created_at,
            provider,
            prepared,
            deadline=deadline,
            encoding=encoding,
            segments=segments,
        )

    def _record_time(self, origin: Origin) -> datetime:
        """When the record was written (its Kafka timestamp), or now when it has none."""
        stamp = origin.timestamp_ms
        if stamp is None or stamp < 0:
            return datetime.now(UTC)
        if stamp != self._last_stamp[0]:
            self._last_stamp = (stamp, datetime.fromtimestamp(stamp / 1000, UTC))
        return self._last_stamp[1]

    def _refuse(
        self,
        key: bytes | None,
        value: bytes | None,
        origin: Origin,
        code: str,
        message: str,
        facts: dict[str, Any],
    ) -> Refusal:
        status = None
        if "message_id" in facts:
            status = status_record(
                status=Status.REJECTED,
                origin=origin,
                reason=(code, message),
                created_at=self._record_time(origin),
                **facts,
            )
        letter = DeadLetter(key, value, dlq_headers(origin, code, message))
        return Refusal(
            status,
            letter,
            code,
            message,
            Status.REJECTED,
            facts.get("provider"),
            facts.get("message_id"),
            facts.get("campaign_id"),
        )
