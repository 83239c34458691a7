"""Delivery statuses: building the records of the status topic and the dead-letter topic, and publishing them.

Records are built as plain dicts shaped exactly like `schemas.events.DeliveryStatus` (a test holds them to
it) and serialised once with orjson, which keeps the per-message cost low.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

import orjson
from aiokafka.errors import MessageSizeTooLargeError

from consumer.partitioner import partition_for
from consumer.templates import kept
from schemas.events import DLQ_HEADERS, Status

SCHEMA_VERSION = 1
MAX_RECORD_BYTES = 1_048_576
"""The largest status record handed to the producer: its `max_request_size` (aiokafka's default, kept)."""


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
    """The (key, value) of one status record, keyed by `message_id` (or by `key` when there is none).

    Callers pass keywords, except the per-message path, which passes every argument by position (a call with
    seventeen keywords costs about a microsecond more)."""
    value = {
        "schema_version": SCHEMA_VERSION,
        "message_id": message_id,
        "campaign_id": campaign_id,
        "provider": provider,
        "to": to,
        "status": status,  # a `StrEnum`: orjson writes its value
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


class _Group:
    """Statuses of one or more `publish` calls handed to the producer together: each call's records and the
    future it waits on (cancelled when the caller gave up, which drops its records if not yet handed over)."""

    __slots__ = ("alone", "parts")

    def __init__(self, alone: bool) -> None:
        self.alone = alone
        self.parts: list[tuple[Sequence[tuple[bytes, bytes]], asyncio.Future[None]]] = []


class StatusPublisher:
    """Publishes statuses and dead letters; returns only once Kafka acknowledged every record.

    Statuses of concurrent calls are joined: the calls made while the producer is taking the previous group
    go to it together in the next one (one at a time, in call order, never waiting for acknowledgements in
    between). A group goes out through the producer's batch API, split by partition with the producer's key
    partitioner (so a message's statuses always share a partition): from a third to a half of the CPU of one
    `send()` per record, even for groups of a few records. The producer takes a partition's next batch only
    once it has taken the one before into a request, so calls made meanwhile join the next group: the busier
    the publisher, the larger its batches. Each call returns once its group is acknowledged, or raises when
    any record of the group failed; a call retried with `alone=True` is not joined, so a record that cannot
    be published fails only its own call. A caller that gives up (is cancelled) before its group is handed
    over takes its records back. Dead letters are rare and go one by one.
    """

    def __init__(self, producer: Producer, status_topic: str, dlq_topic: str) -> None:
        self._producer = producer
        self._status_topic = status_topic
        self._dlq_topic = dlq_topic
        self._partitions: list[int] | None = None
        self._groups: deque[_Group] = deque()
        self._feeder: asyncio.Task[None] | None = None

    async def publish(
        self,
        statuses: Sequence[tuple[bytes, bytes]],
        dead_letters: Sequence[DeadLetter] = (),
        *,
        alone: bool = False,
    ) -> None:
        """Send all records and wait for their acknowledgements; raises if any record failed (or, unless
        `alone`, any record of the calls it was joined with)."""
        producer = self._producer
        futures: list[asyncio.Future[Any]] = []
        for letter in dead_letters:
            futures.append(await producer.send(self._dlq_topic, letter.value, key=letter.key, headers=letter.headers))
        if statuses:
            loop = asyncio.get_running_loop()
            groups = self._groups
            group = groups[-1] if groups and not alone and not groups[-1].alone else None
            if group is None:
                group = _Group(alone)
                groups.append(group)
            acked: asyncio.Future[None] = loop.create_future()
            parts = group.parts
            if len(parts) % 1024 == 1023:  # a long wait: callers that gave up leave no records behind
                parts[:] = [part for part in parts if not part[1].done()]
            parts.append((statuses, acked))
            if self._feeder is None:
                self._feeder = loop.create_task(self._feed())
                self._feeder.add_done_callback(self._feeder_ended)
            futures.append(acked)
        if len(futures) == 1:
            await futures[0]
        elif futures:
            await asyncio.gather(*futures)

    async def _feed(self) -> None:
        """Hand the waiting groups to the producer, one after the other, until none are left."""
        groups = self._groups
        while groups:
            parts = [part for part in groups.popleft().parts if not part[1].done()]  # done: the caller gave up
            if not parts:
                continue
            records = parts[0][0] if len(parts) == 1 else [r for records, _ in parts for r in records]
            handed: list[asyncio.Future[Any]] = []
            try:
                await self._enqueue(records, handed)
            except Exception as exc:
                self._partitions = None  # the topic may have changed: look its partitions up again
                _Settlement([acked for _, acked in parts], handed, failed=exc)
                continue
            except BaseException:
                _Settlement([acked for _, acked in parts], handed, failed=ConnectionError("stopped"))
                raise
            _Settlement([acked for _, acked in parts], handed)
        # Cleared here, in the same step that found nothing left: a call made after it starts a new feeder.
        self._feeder = None

    def _feeder_ended(self, task: asyncio.Task[None]) -> None:
        # A done callback, not a `finally`: it runs even for a feeder cancelled before its first step.
        if self._feeder is task:
            self._feeder = None
        if not task.cancelled() and task.exception() is None:
            return
        while self._groups:  # nothing will hand these over: their callers must not wait forever
            for _, acked in self._groups.popleft().parts:
                if not acked.done():
                    acked.set_exception(ConnectionError("the status publisher stopped"))
                    acked.exception()

    async def _enqueue(self, statuses: Sequence[tuple[bytes, bytes]], handed: list[asyncio.Future[Any]]) -> None:
        """Hand `statuses` to the producer; `handed` gets each producer future as soon as it exists."""
        producer, topic = self._producer, self._status_topic
        for key, value in statuses:
            # The batch API takes any record into an empty batch, and the broker would refuse the whole batch
            # it went out in: refused here, before anything of the group is handed over.
            if len(key) + len(value) > MAX_RECORD_BYTES:
                raise MessageSizeTooLargeError(f"a status of {len(value):,} bytes is larger than a producer request")
        partitions = self._partitions
        if partitions is None:
            partitions = self._partitions = sorted(await producer.partitions_for(topic))
        open_batches: dict[int, Any] = {}
        for key, value in statuses:
            partition = partition_for(key, partitions)
            batch = open_batches.get(partition)
            if batch is None:
                batch = open_batches[partition] = producer.create_batch()
            if batch.append(key=key, value=value, timestamp=None) is None:
                handed.append(await producer.send_batch(batch, topic, partition=partition))
                batch = open_batches[partition] = producer.create_batch()
                batch.append(key=key, value=value, timestamp=None)  # an empty batch takes any record
        for partition, batch in open_batches.items():
            handed.append(await producer.send_batch(batch, topic, partition=partition))


class _Settlement:
    """Resolves each target once every producer future is done, or at the first failure with it (`failed`:
    the hand-over itself failed, after `futures` were handed). Targets already done (callers gone) are left."""

    __slots__ = ("failure", "remaining", "targets")

    def __init__(
        self,
        targets: list[asyncio.Future[None]],
        futures: list[asyncio.Future[Any]],
        failed: BaseException | None = None,
    ) -> None:
        self.targets = targets
        self.remaining = len(futures)
        self.failure = failed
        if failed is not None or not futures:
            self._settle()
        for future in futures:
            future.add_done_callback(self._one_done)

    def _one_done(self, future: asyncio.Future[Any]) -> None:
        self.remaining -= 1
        # Always retrieved, so a failure that arrives after the group was answered is not reported as lost.
        failure = ConnectionError("a status send was cancelled") if future.cancelled() else future.exception()
        if self.failure is not None:
            return
        if failure is not None:
            self.failure = failure
            self._settle()  # the first failure answers at once
        elif self.remaining == 0:
            self._settle()

    def _settle(self) -> None:
        failure = self.failure
        for target in self.targets:
            if target.done():
                continue
            if failure is None:
                target.set_result(None)
            else:
                target.set_exception(failure)
                target.exception()  # retrieved here: the caller may be gone by the time it is set
