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

from consumer.partitioner import partition_for
from consumer.templates import kept
from schemas.events import DLQ_HEADERS, Status

SCHEMA_VERSION = 1


@dataclass(slots=True)
class Origin:
    """Where a send-request was read from. Treated as immutable (not frozen: one is made per record)."""

    topic: str
    partition: int
    offset: int
    timestamp_ms: int | None = None


def now_utc() -> datetime:
    return datetime.now(UTC)


def status_record(
    *,
    message_id: str | None,
    status: Status,
    origin: Origin | None,
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
    key: str | None = None,
) -> tuple[bytes, bytes]:
    """The (key, value) of one status record, keyed by `message_id` (or by `key` when there is none)."""
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
        "source": None
        if origin is None
        else {"topic": origin.topic, "partition": origin.partition, "offset": origin.offset},
        "metadata": metadata,
    }
    # Kept until Kafka acknowledged the record: a compact copy (see `templates.kept`).
    return (message_id or key or "").encode(), kept(orjson.dumps(value, option=orjson.OPT_UTC_Z))


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


BATCH_API_MIN = 64
"""From this many statuses in one publish on, the batch API is used."""


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

    def create_batch(self) -> Any: ...

    async def send_batch(self, batch: Any, topic: str, *, partition: int) -> asyncio.Future[Any]: ...

    async def partitions_for(self, topic: str) -> set[int]: ...


class _Joined:
    """Statuses of several `publish` calls that go to the producer together."""

    __slots__ = ("acked", "records")

    def __init__(self, loop: asyncio.AbstractEventLoop) -> None:
        self.records: list[tuple[bytes, bytes]] = []
        self.acked: asyncio.Future[None] = loop.create_future()


class StatusPublisher:
    """Publishes statuses and dead letters; returns only once Kafka acknowledged every record.

    Statuses of concurrent calls are joined: the calls made while the producer is taking the previous group
    go to it together in the next one (one at a time, in call order, never waiting for acknowledgements in
    between). A large group goes out through the producer's batch API, split by partition with the
    producer's key partitioner (so a message's statuses always share a partition): a third of the CPU of
    one `send()` per record. A small group goes through `send()`, which the producer coalesces with its
    other records. Each call returns once its group is acknowledged. Dead letters are rare and go one by one.
    """

    def __init__(self, producer: Producer, status_topic: str, dlq_topic: str) -> None:
        self._producer = producer
        self._status_topic = status_topic
        self._dlq_topic = dlq_topic
        self._partitions: list[int] | None = None
        self._next: _Joined | None = None
        self._feeder: asyncio.Task[None] | None = None

    async def publish(self, statuses: Sequence[tuple[bytes, bytes]], dead_letters: Sequence[DeadLetter] = ()) -> None:
        """Send all records and wait for their acknowledgements; raises if any record failed."""
        producer = self._producer
        futures = []
        for letter in dead_letters:
            futures.append(await producer.send(self._dlq_topic, letter.value, key=letter.key, headers=letter.headers))
        if statuses:
            joined = self._next
            if joined is None:
                joined = self._next = _Joined(asyncio.get_running_loop())
            joined.records += statuses
            if self._feeder is None:
                self._feeder = asyncio.get_running_loop().create_task(self._feed())
            # Shielded: a caller that is cancelled must not cancel the others' acknowledgement.
            futures.append(asyncio.shield(joined.acked))
        if len(futures) == 1:
            await futures[0]
        elif futures:
            await asyncio.gather(*futures)

    async def _feed(self) -> None:
        """Hand the joined statuses to the producer, group after group, until none are waiting."""
        try:
            while (joined := self._next) is not None:
                self._next = None
                try:
                    futures = await self._enqueue(joined.records)
                except BaseException as exc:
                    self._partitions = None  # the topic may have changed: look its partitions up again
                    joined.acked.set_exception(exc if isinstance(exc, Exception) else ConnectionError("stopped"))
                    joined.acked.exception()  # retrieved here: the callers may all have gone
                    if not isinstance(exc, Exception):
                        raise
                    continue
                _settle_when_acked(joined.acked, futures)
        finally:
            self._feeder = None
            if (left := self._next) is not None:  # cancelled: nothing will send these
                self._next = None
                left.acked.set_exception(ConnectionError("the status publisher stopped"))
                left.acked.exception()

    async def _enqueue(self, statuses: Sequence[tuple[bytes, bytes]]) -> list[asyncio.Future[Any]]:
        if len(statuses) < BATCH_API_MIN:
            # A few records: `send()` lets the producer coalesce them with other records (linger).
            producer, topic = self._producer, self._status_topic
            return [await producer.send(topic, value, key=key) for key, value in statuses]
        return await self._send_statuses(statuses)

    async def _send_statuses(self, statuses: Sequence[tuple[bytes, bytes]]) -> list[asyncio.Future[Any]]:
        producer, topic = self._producer, self._status_topic
        partitions = self._partitions
        if partitions is None:
            partitions = self._partitions = sorted(await producer.partitions_for(topic))
        open_batches: dict[int, Any] = {}
        futures = []
        for key, value in statuses:
            partition = partition_for(key, partitions)
            batch = open_batches.get(partition)
            if batch is None:
                batch = open_batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(batch, topic, partition=partition))
                batch = open_batches[partition] = producer.create_batch()
                if batch.append(key=key, value=value, timestamp=None) is None:
                    raise ValueError(f"a status of {len(value)} bytes is larger than a whole producer batch")
        for partition, batch in open_batches.items():
            futures.append(await producer.send_batch(batch, topic, partition=partition))
        return futures


def _settle_when_acked(acked: asyncio.Future[None], futures: list[asyncio.Future[Any]]) -> None:
    """Resolve `acked` once every producer future is done: with the first failure, if any."""
    remaining = len(futures)
    if not remaining:
        acked.set_result(None)
        return

    def one_done(future: asyncio.Future[Any]) -> None:
        nonlocal remaining
        remaining -= 1
        failure = ConnectionError("a status send was cancelled") if future.cancelled() else future.exception()
        if acked.done():
            return  # the group failed already
        if failure is not None:
            acked.set_exception(failure)
            acked.exception()  # retrieved here: the callers may all have gone
        elif remaining == 0:
            acked.set_result(None)

    for future in futures:
        future.add_done_callback(one_done)
