"""Delivery statuses: building the records of the status topic and the dead-letter topic, and publishing them.

Records are built as plain dicts shaped exactly like `schemas.events.DeliveryStatus` (a test holds them to
it) and serialised once with orjson, which keeps the per-message cost low.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson

from schemas.events import DLQ_HEADERS, Status

SCHEMA_VERSION = 1


@dataclass(frozen=True, slots=True)
class Origin:
    """Where a send-request was read from."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


def now_utc() -> datetime:
    return datetime.now(UTC)


def status_record(
    *,
    message_id: str,
    status: Status,
    origin: Origin,
    campaign_id: str | None = None,
    provider: str | None = None,
    to: str | None = None,
    reason: tuple[str, str] | None = None,
    http_status: int | None = None,
    provider_message_id: str | None = None,
    attempts: int = 0,
    encoding: str | None = None,
    segments: int | None = None,
    batch_id: str | None = None,
    batch_size: int | None = None,
    created_at: datetime | None = None,
    completed_at: datetime | None = None,
    metadata: dict[str, Any] | None = None,
) -> tuple[bytes, bytes]:
    """The (key, value) of one status record."""
    value = {
        "schema_version": SCHEMA_VERSION,
        "message_id": message_id,
        "campaign_id": campaign_id,
        "provider": provider,
        "to": to,
        "status": status.value,
        "reason": {"code": reason[0], "message": reason[1]} if reason else None,
        "http_status": http_status,
        "provider_message_id": provider_message_id,
        "attempts": attempts,
        "encoding": encoding,
        "segments": segments,
        "batch_id": batch_id,
        "batch_size": batch_size,
        "created_at": created_at,
        "completed_at": completed_at or now_utc(),
        "source": {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset},
        "metadata": metadata,
    }
    return message_id.encode(), orjson.dumps(value, option=orjson.OPT_UTC_Z)


def dlq_headers(origin: Origin, code: str, message: str) -> list[tuple[str, bytes]]:
    """Headers of a dead-letter record: why it was refused and where it came from."""
    return [
        (DLQ_HEADERS["error_code"], code.encode()),
        (DLQ_HEADERS["error_message"], message.encode()),
        (DLQ_HEADERS["source_topic"], origin.topic.encode()),
        (DLQ_HEADERS["source_partition"], str(origin.partition).encode()),
        (DLQ_HEADERS["source_offset"], str(origin.offset).encode()),
    ]


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """A raw input record refused as invalid."""

    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes]]


class Producer(Protocol):
    """The part of `aiokafka.AIOKafkaProducer` the publisher uses."""

    async def send(
        self,
        topic: str,
        value: bytes | None = None,
        key: bytes | None = None,
        partition: int | None = None,
        timestamp_ms: int | None = None,
        headers: list[tuple[str, bytes]] | None = None,
    ) -> asyncio.Future[Any]: ...


class StatusPublisher:
    """Publishes statuses and dead letters; returns only once Kafka acknowledged every record."""

    def __init__(self, producer: Producer, status_topic: str, dlq_topic: str) -> None:
        self._producer = producer
        self._status_topic = status_topic
        self._dlq_topic = dlq_topic

    async def publish(self, statuses: Sequence[tuple[bytes, bytes]], dead_letters: Sequence[DeadLetter] = ()) -> None:
        """Send all records and wait for their acknowledgements; raises if any record failed."""
        futures = []
        for letter in dead_letters:
            futures.append(
                await self._producer.send(self._dlq_topic, letter.value, key=letter.key, headers=letter.headers)
            )
        for key, value in statuses:
            futures.append(await self._producer.send(self._status_topic, value, key=key))
        await asyncio.gather(*futures)
