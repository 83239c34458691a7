"""The Kafka source: fetching send-requests, pausing under backpressure, rebalances and offset commits.

Offsets are committed manually, only up to the first record whose status Kafka has not acknowledged yet
(`OffsetTracker`). Commits happen on an interval, on revoke and at shutdown.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, ConsumerRebalanceListener, ConsumerRecord, TopicPartition
from aiokafka.errors import CommitFailedError, IllegalStateError, KafkaError
from aiokafka.structs import OffsetAndMetadata

from consumer.kafka_client import connection_kwargs
from consumer.metrics import Metrics
from consumer.offsets import OffsetTracker, Ticket

log = structlog.get_logger("consumer.source")

RecordHandler = Callable[[Sequence[tuple[ConsumerRecord[bytes, bytes], Ticket[TopicPartition]]]], None]


class _Rebalance(ConsumerRebalanceListener):
    def __init__(self, source: KafkaSource) -> None:
        self._source = source

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._source._on_revoked(revoked)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self._source._on_assigned(assigned)


class KafkaSource:
    """Reads the input topic and hands records to a handler; commits what the handler reports done."""

    def __init__(
        self,
        consumer: AIOKafkaConsumer,
        topic: str,
        *,
        max_records: int,
        commit_interval: float,
        pending: Callable[[], int],
        high_water: int,
        low_water: int,
        drain: Callable[[float], Awaitable[int]],
        drain_timeout: float,
        commit_timeout: float = 10.0,
        metrics: Metrics | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._consumer = consumer
        self._topic = topic
        self._max_records = max_records
        self._commit_interval = commit_interval
        self._pending = pending
        self._high = high_water
        self._low = low_water
        self._drain = drain
        self._drain_timeout = drain_timeout
        self._commit_timeout = commit_timeout
        self.tracker: OffsetTracker[TopicPartition] = OffsetTracker()
        self._paused = False
        self._stopping = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self.assigned = asyncio.Event()

    def subscribe(self) -> None:
        self._consumer.subscribe([self._topic], listener=_Rebalance(self))

    @property
    def paused(self) -> bool:
        return self._paused

    def complete(self, tickets: Sequence[Ticket[TopicPartition]]) -> None:
        """Mark records finished (their statuses are acknowledged)."""
        complete = self.tracker.complete
        for ticket in tickets:
            complete(ticket)

    def stop(self) -> None:
        """Stop fetching; `run` returns after the current fetch."""
        self._stopping.set()

    async def run(self, handle: RecordHandler) -> None:
        """Fetch and hand out records until `stop()`."""
        consumer = self._consumer
        track = self.tracker.track
        while not self._stopping.is_set():
            self._apply_backpressure()
            batches = await consumer.getmany(timeout_ms=200, max_records=self._max_records)
            if self._stopping.is_set() and not batches:
                break
            for tp, records in batches.items():
                handle([(record, track(tp, record.offset)) for record in records])
                self._metrics.consumed.inc(len(records))
            self._apply_backpressure()

    def _apply_backpressure(self) -> None:
        pending = self._pending()
        if not self._paused and pending >= self._high:
            self._paused = True
            self._metrics.paused.set(1)
            self._consumer.pause(*self._consumer.assignment())
            log.info("fetching paused", pending=pending, limit=self._high)
        elif self._paused and pending <= self._low:
            self._paused = False
            self._metrics.paused.set(0)
            self._consumer.resume(*self._consumer.assignment())
            log.info("fetching resumed", pending=pending)

    async def run_commits(self) -> None:
        """Commit finished offsets every `commit_interval` seconds; runs until cancelled."""
        while True:
            await asyncio.sleep(self._commit_interval)
            await self.commit()
            self._update_lag()

    def _update_lag(self) -> None:
        committed = self.tracker.committed_offsets()
        for tp in self._consumer.assignment():
            end = self._consumer.highwater(tp)
            position = committed.get(tp)
            if end is not None and position is not None:
                self._metrics.lag.labels(f"{tp.topic}-{tp.partition}").set(max(0, end - position))

    async def commit(self) -> dict[TopicPartition, int]:
        """Commit what is finished, for partitions still assigned. Never raises for commit failures."""
        async with self._commit_lock:
            assignment = self._consumer.assignment()
            offsets = {tp: o for tp, o in self.tracker.committable().items() if tp in assignment}
            if not offsets:
                return {}
            started = time.perf_counter()
            try:
                await asyncio.wait_for(
                    self._consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in offsets.items()}),
                    self._commit_timeout,
                )
            except (CommitFailedError, IllegalStateError, KafkaError, TimeoutError) as exc:
                self._metrics.commit_failures.inc()
                # The offsets stay uncommitted and are tried again; the worst case is a re-read.
                log.warning("commit failed", error=type(exc).__name__, partitions=len(offsets))
                return {}
            self._metrics.commit_latency.observe(time.perf_counter() - started)
            self.tracker.mark_committed(offsets)
            log.debug("committed", offsets={f"{tp.topic}-{tp.partition}": o for tp, o in offsets.items()})
            return offsets

    async def _on_revoked(self, revoked: set[TopicPartition]) -> None:
        # aiokafka rebalances eagerly: every partition is revoked. Finish what is in flight (bounded), commit
        # it, and let the next owner start exactly after it. Work that outlives the deadline is abandoned
        # (`drain` cancels it and says how many messages it abandoned) and stays uncommitted for the next owner.
        if revoked:
            abandoned = await self._drain(self._drain_timeout)
            if abandoned:
                log.warning(
                    "in-flight work outlived the revoke deadline: abandoned, the next owner reads it again",
                    in_flight=abandoned,
                )
            await self.commit()
        self.tracker.revoke(revoked)
        self.assigned.clear()

    def _on_assigned(self, assigned: set[TopicPartition]) -> None:
        self.tracker.assign(assigned)
        if self._paused and assigned:
            self._consumer.pause(*assigned)
        log.info("partitions assigned", partitions=sorted(f"{tp.topic}-{tp.partition}" for tp in assigned))
        if assigned:
            self.assigned.set()


def consumer_kwargs(settings: Any) -> dict[str, Any]:
    """aiokafka consumer options from `KafkaSettings`."""
    return {
        **connection_kwargs(settings),
        "client_id": settings.client_id,
        "group_id": settings.group_id,
        "enable_auto_commit": False,
        "auto_offset_reset": settings.auto_offset_reset,
        "session_timeout_ms": settings.session_timeout_ms,
        "heartbeat_interval_ms": settings.heartbeat_interval_ms,
        "rebalance_timeout_ms": settings.rebalance_timeout_ms,
        "max_poll_interval_ms": settings.max_poll_interval_ms,
        "max_partition_fetch_bytes": settings.max_partition_fetch_bytes,
        "isolation_level": "read_committed",
    }
