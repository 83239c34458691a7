"""Dispatching: batches messages, sends each batch to its provider, publishes one status per message, and
reports the records whose statuses Kafka acknowledged.

Owns the accumulator, the linger timer and the in-flight batch tasks. A batch is one task, not one task per
message; the messages of a provider that takes one per request queue for a pool of as many worker tasks as the
provider's concurrency, started as work arrives and ended when the queue is empty. `pending` counts messages
buffered plus in flight, which the source uses to pause fetching.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
import time
import uuid
from collections import deque
from collections.abc import Callable, Sequence
from datetime import UTC, datetime
from typing import Any

import structlog
from aiokafka.errors import CorruptRecordException, MessageSizeTooLargeError, RecordListTooLargeError

from consumer.accumulator import Accumulator
from consumer.intake import Envelope, Refusal
from consumer.metrics import Metrics
from consumer.responses import DISPATCH_CODES, RecordOutcome
from consumer.sender import ProviderSender, SendResult
from consumer.status import StatusPublisher, now_utc, status_record
from schemas.events import Status

log = structlog.get_logger("consumer.dispatcher")

GroupKey = tuple[str, str, bytes]
_Part = tuple[list[tuple[bytes, bytes]], list[Any], dict[tuple[str, str], int]]
"""The statuses, tickets and status counts of one message handed over by a worker."""

RECORD_ERRORS = (MessageSizeTooLargeError, RecordListTooLargeError, CorruptRecordException)
"""Failures of a status itself rather than of Kafka being away: retrying it with others would hold them up."""
SentHook = Callable[[str, str, str, str, "dict[str, Any] | None"], None]
"""Told of each message a provider accepted with an id: (provider message id, message id, campaign id, to,
metadata). Delivery reports correlate through it."""


class Dispatcher:
    """Batches envelopes, sends them and publishes their statuses."""

    def __init__(
        self,
        senders: dict[str, ProviderSender],
        publisher: StatusPublisher,
        on_done: Callable[[Sequence[Any]], None],
        *,
        linger: float,
        publish_retry_backoff: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
        metrics: Metrics | None = None,
        sent_hooks: dict[str, SentHook] | None = None,
    ) -> None:
        self._metrics = metrics or Metrics()
        self._sent_hooks = sent_hooks or {}
        self.publish_healthy = True
        self._senders = senders
        self._publisher = publisher
        self._on_done = on_done
        self._acc: Accumulator[GroupKey, Envelope] = Accumulator(linger)
        self._clock = clock
        self._backoff = publish_retry_backoff
        self._tasks: set[asyncio.Task[None]] = set()
        self._in_flight = 0
        # Messages of providers without batching, waiting for one of the provider's workers.
        self._singles: dict[str, deque[Envelope]] = {}
        self._workers: dict[str, int] = {}
        # Their statuses, handed over by the workers and published together by one task (see `_collect`).
        self._collected: list[_Part] = []
        self._publishing: asyncio.Task[None] | None = None
        # Batch ids: unique per process (a random prefix) without a uuid per batch.
        self._batch_prefix = uuid.uuid4().hex[:12]
        self._batch_numbers = itertools.count(1)
        self._counters: dict[tuple[str, str], Any] = {}
        self._batch_sizes: dict[str, Any] = {}
        # Read once (logging is configured before the service starts): asking the logger costs about a
        # microsecond, and the answer is needed for every batch.
        self._debug = log.is_enabled_for(logging.DEBUG)
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending(self) -> int:
        """Messages buffered plus in flight."""
        return len(self._acc) + self._in_flight

    @property
    def buffered(self) -> int:
        return len(self._acc)

    @property
    def in_flight(self) -> int:
        return self._in_flight

    def submit(self, envelope: Envelope) -> None:
        """Buffer a message; a full batch is sent at once."""
        provider = envelope.provider
        if not provider.batching:
            self._queue_single(envelope)
            return
        key = (provider.name, envelope.campaign_id, envelope.prepared.group)
        was_empty = self._acc.next_due() is None
        # Recipient-based batch shapes cannot carry a number twice: a repeat starts the next batch.
        distinct = envelope.to if provider.distinct_recipients else None
        batch = self._acc.add(key, envelope, provider.batch_size, self._clock(), distinct)
        if batch is not None:
            self._launch(batch.items)
        elif was_empty:
            self._wake.set()

    def conclude(self, refusals: Sequence[Refusal], tickets: Sequence[Any]) -> None:
        """Publish the statuses and dead letters of refused records, then report their tickets done."""
        statuses = [r.status for r in refusals if r.status is not None]
        letters = [r.dead_letter for r in refusals if r.dead_letter is not None]
        tally: dict[tuple[str, str], int] = {}
        for r in refusals:
            if r.status is not None:
                label = (r.provider or "-", r.outcome.value)
                tally[label] = tally.get(label, 0) + 1
        codes = [r.code for r in refusals if r.dead_letter is not None]
        self._track(len(tickets), self._publish_then_done(statuses, letters, tickets, tally, codes))

    def flush(self) -> None:
        """Send every buffered batch now, full or not."""
        for batch in self._acc.drain():
            self._launch(batch.items)

    async def run_timer(self) -> None:
        """Send batches whose linger time has passed; runs until cancelled."""
        while True:
            due = self._acc.next_due()
            self._wake.clear()
            if due is None:
                await self._wake.wait()
                continue
            delay = due - self._clock()
            if delay > 0:
                try:
                    await asyncio.wait_for(self._wake.wait(), delay)
                except TimeoutError:
                    pass
                continue
            for batch in self._acc.due(self._clock()):
                self._launch(batch.items)

    async def wait_idle(self, timeout: float) -> bool:
        """Wait until nothing is in flight; False if `timeout` passed first."""
        try:
            await asyncio.wait_for(self._idle.wait(), timeout)
        except TimeoutError:
            return False
        return True

    async def drain(self, timeout: float, interrupt: asyncio.Event | None = None) -> int:
        """Send what is buffered and wait until nothing is in flight, for at most `timeout` (or until `interrupt`
        is set); what is unfinished then is abandoned (`cancel`). Returns how many messages were abandoned."""
        self.flush()
        idle = asyncio.ensure_future(self.wait_idle(timeout))
        waits: list[asyncio.Future[Any]] = [idle]
        if interrupt is not None:
            waits.append(asyncio.ensure_future(interrupt.wait()))
        try:
            await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for wait in waits:
                wait.cancel()
        if idle.done() and not idle.cancelled() and idle.result():
            return 0
        abandoned = self._in_flight
        await self.cancel()
        return abandoned

    async def cancel(self) -> None:
        """Abandon in-flight work (its records stay uncommitted and will be read again)."""
        for queue in self._singles.values():
            self._in_flight -= len(queue)
            queue.clear()
        tasks = list(self._tasks)
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        # Handed over to a publishing task that was cancelled before it took them.
        self._in_flight -= sum(len(tickets) for _, tickets, _ in self._collected)
        self._collected = []
        self._publishing = None

    # -- internals -------------------------------------------------------------------------------------------

    def _track(self, count: int, coro: Any, **context: Any) -> asyncio.Task[None]:
        self._in_flight += count
        self._idle.clear()
        task = asyncio.create_task(coro)
        self._tasks.add(task)

        def finished(t: asyncio.Task[None]) -> None:
            self._tasks.discard(t)
            self._in_flight -= count
            if not self._tasks:
                self._idle.set()
            if not t.cancelled() and t.exception() is not None:
                log.error("batch task failed", exc_info=t.exception(), **context)

        task.add_done_callback(finished)
        return task

    def _queue_single(self, envelope: Envelope) -> None:
        provider = envelope.provider
        name = provider.name
        queue = self._singles.get(name)
        if queue is None:
            queue = self._singles[name] = deque()
        queue.append(envelope)
        self._in_flight += 1
        running = self._workers.get(name, 0)
        # Twice the provider's concurrency: a worker also waits out retry backoffs (holding no HTTP slot), and
        # the sender's own limit keeps HTTP requests within the concurrency meanwhile.
        if running < 2 * provider.config.concurrency:
            self._workers[name] = running + 1
            started: list[bool] = []
            task = self._track(0, self._single_worker(name, queue, started), provider=name)
            task.add_done_callback(lambda _: None if started else self._worker_ended(name))

    def _worker_ended(self, name: str) -> None:
        self._workers[name] -= 1

    async def _single_worker(self, name: str, queue: deque[Envelope], started: list[bool]) -> None:
        """Send queued messages one by one until the queue is empty.

        The worker count drops the moment the queue is found empty (a message queued right after starts a
        new worker); for a worker cancelled before its first step, its done callback drops it."""
        started.append(True)
        try:
            while queue:
                envelope = queue.popleft()
                try:
                    await self._send([envelope], hand_over=True)
                except asyncio.CancelledError:
                    raise
                except Exception:
                    log.exception("sending a message failed", provider=name)
                finally:
                    self._in_flight -= 1
        finally:
            self._worker_ended(name)

    def _launch(self, envelopes: list[Envelope]) -> None:
        first = envelopes[0]
        self._track(
            len(envelopes),
            self._send(envelopes),
            provider=first.provider.name,
            campaign_id=first.campaign_id,
            batch_size=len(envelopes),
        )

    async def _send(self, envelopes: list[Envelope], hand_over: bool = False) -> None:
        """Send one request's messages and publish their statuses; with `hand_over`, the statuses are handed to
        `_collect` and this returns without waiting for Kafka."""
        deadline = None
        deadlines = [e.deadline for e in envelopes if e.deadline is not None]
        if deadlines:
            now = datetime.now(UTC)
            expired = [e for e in envelopes if e.deadline is not None and e.deadline <= now]
            if expired:
                envelopes = [e for e in envelopes if e.deadline is None or e.deadline > now]
                await self._publish_expired(expired)
                if not envelopes:
                    return
                deadlines = [e.deadline for e in envelopes if e.deadline is not None]
            if deadlines:
                deadline = self._clock() + (min(deadlines) - now).total_seconds()
        first = envelopes[0]
        provider = first.provider
        batch_id = f"{self._batch_prefix}{next(self._batch_numbers):08x}"
        try:
            if provider.batching:
                request = provider.render_batch([e.prepared for e in envelopes])
            else:
                assert first.prepared.request is not None
                request = first.prepared.request
            result = await self._senders[provider.name].send(request, len(envelopes), deadline)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.exception("dispatch failed", provider=provider.name, batch_id=batch_id, campaign_id=first.campaign_id)
            failure = RecordOutcome(False, None, "dispatch_error", f"could not dispatch: {type(exc).__name__}")
            result = SendResult([failure] * len(envelopes), 0, None)
        if result.outcomes and result.outcomes[0].code == "expired":
            # The earliest deadline of the batch passed while it waited: the messages whose own deadline
            # passed end here; the others go out again in a batch of their own.
            later = datetime.now(UTC)
            still = [e for e in envelopes if e.deadline is None or e.deadline > later]
            done = [e for e in envelopes if not (e.deadline is None or e.deadline > later)]
            if still:
                self._launch(still)
            await self._publish_expired(done)
            return
        statuses, tally = self._statuses(envelopes, result, batch_id)
        sizes = self._batch_sizes.get(provider.name)
        if sizes is None:
            sizes = self._batch_sizes[provider.name] = self._metrics.batch_size.labels(provider.name)
        sizes.observe(len(envelopes))
        accepted = tally.get((provider.name, Status.SENT), 0)
        if accepted < len(envelopes) or self._debug:
            log_event = log.debug if accepted == len(envelopes) else log.warning
            log_event(
                "batch sent",
                provider=provider.name,
                campaign_id=first.campaign_id,
                batch_id=batch_id,
                batch_size=len(envelopes),
                http_status=result.http_status,
                attempts=result.attempts,
                accepted=accepted,
            )
        if hand_over:
            self._collect(statuses, [e.ticket for e in envelopes], tally)
            return
        await self._publish_then_done(
            statuses,
            (),
            [e.ticket for e in envelopes],
            tally,
            context={"provider": provider.name, "campaign_id": first.campaign_id, "batch_id": batch_id},
        )

    def _collect(
        self, statuses: list[tuple[bytes, bytes]], tickets: list[Any], tally: dict[tuple[str, str], int]
    ) -> None:
        """Take the statuses of a message sent on its own, for `_publish_collected`. The message stays in flight
        (and its record not done) until Kafka acknowledged them."""
        self._collected.append((statuses, tickets, tally))
        self._in_flight += len(tickets)
        if self._publishing is None:
            self._publishing = self._track(0, self._publish_collected())

    async def _publish_collected(self) -> None:
        """Publish the handed-over statuses, all those handed over so far in one call, until none are left.

        One call at a time: while Kafka is away the statuses wait here in one list, and go out together once
        it is back, rather than as one retrying call per message."""
        try:
            while self._collected:
                parts, self._collected = self._collected, []
                await self._publish_parts(parts)
        finally:
            self._publishing = None

    async def _publish_parts(self, parts: list[_Part]) -> None:
        statuses = [status for part, _, _ in parts for status in part]
        tickets = [ticket for _, part, _ in parts for ticket in part]
        tally: dict[tuple[str, str], int] = {}
        for _, _, counts in parts:
            for label, count in counts.items():
                tally[label] = tally.get(label, 0) + count
        split = False

        def each_on_its_own() -> None:
            # A status Kafka refuses: each message's statuses go on their own, so it holds up only its message.
            nonlocal split
            split = True
            for part in parts:
                self._track(0, self._publish_part(*part))

        try:
            await self._publish_then_done(
                statuses, (), tickets, tally, on_refused=each_on_its_own if len(parts) > 1 else None
            )
        finally:
            if not split:
                self._in_flight -= len(tickets)

    async def _publish_part(
        self, statuses: list[tuple[bytes, bytes]], tickets: list[Any], tally: dict[tuple[str, str], int]
    ) -> None:
        try:
            await self._publish_then_done(statuses, (), tickets, tally, alone=True)
        finally:
            self._in_flight -= len(tickets)

    async def _publish_expired(self, envelopes: list[Envelope]) -> None:
        if not envelopes:
            return
        failure = RecordOutcome(False, None, "expired", "expired before it was sent")
        statuses, tally = self._statuses(envelopes, SendResult([failure] * len(envelopes), 0, None), None)
        first = envelopes[0]
        await self._publish_then_done(
            statuses,
            (),
            [e.ticket for e in envelopes],
            tally,
            context={"provider": first.provider.name, "campaign_id": first.campaign_id},
        )

    def _statuses(
        self, envelopes: list[Envelope], result: SendResult, batch_id: str | None
    ) -> tuple[list[tuple[bytes, bytes]], dict[tuple[str, str], int]]:
        """The status records of one request's messages (all of one provider), and their count by status."""
        size = len(envelopes) if batch_id is not None else None
        out = []
        counts: dict[Status, int] = {}
        completed_at = now_utc()  # one moment for the whole request
        http_status, attempts = result.http_status, result.attempts
        # Remembered before the `sent` status is published: a delivery report can arrive that early.
        name = envelopes[0].provider.name
        on_sent = self._sent_hooks.get(name)
        for envelope, outcome in zip(envelopes, result.outcomes, strict=True):
            pid = outcome.provider_message_id
            if outcome.accepted:
                status, reason = Status.SENT, None
                if on_sent is not None and pid is not None:
                    on_sent(pid, envelope.message_id, envelope.campaign_id, envelope.to, envelope.metadata)
            else:
                code = outcome.code
                if code in DISPATCH_CODES:
                    status = Status.DISPATCH_ERROR
                elif code == "expired":
                    status = Status.EXPIRED
                else:
                    status = Status.FAILED
                reason = (code or "failed", outcome.message or "")
            counts[status] = counts.get(status, 0) + 1
            out.append(
                status_record(
                    envelope.message_id,
                    status,
                    envelope.origin,
                    envelope.campaign_id,
                    name,
                    envelope.to,
                    reason,
                    http_status,
                    pid,
                    attempts,
                    envelope.encoding,
                    envelope.segments,
                    batch_id,
                    size,
                    envelope.created_at,
                    completed_at,
                    envelope.metadata,
                )
            )
        return out, {(name, status): count for status, count in counts.items()}

    async def _publish_then_done(
        self,
        statuses: Sequence[Any],
        letters: Sequence[Any],
        tickets: Sequence[Any],
        tally: dict[tuple[str, str], int],
        dead_codes: Sequence[str] = (),
        *,
        alone: bool = False,
        on_refused: Callable[[], None] | None = None,
        context: dict[str, Any] | None = None,
    ) -> None:
        """Publish, retrying until Kafka acknowledged, then report the records done. `on_refused` takes over
        (and nothing is done here) when Kafka refuses a status itself rather than being away."""
        # A record counts as done only once Kafka acknowledged its status: until then its offset is not
        # committed, so a crash here means it is read and sent again, never lost. A retry is published on its
        # own, so a status that cannot be published holds up only its own records.
        retry = alone
        while True:
            try:
                await self._publisher.publish(statuses, letters, alone=retry)
                self.publish_healthy = True
                break
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                self.publish_healthy = False
                self._metrics.status_publish_failures.inc()
                log.warning(
                    "publishing statuses failed; retrying",
                    error=type(exc).__name__,
                    records=len(statuses),
                    **(context or {}),
                )
                if on_refused is not None and isinstance(exc, RECORD_ERRORS):
                    on_refused()
                    return
                await asyncio.sleep(self._backoff)
                retry = True
        metrics = self._metrics
        counters = self._counters
        for label, count in tally.items():
            counter = counters.get(label)
            if counter is None:
                counter = counters[label] = metrics.statuses.labels(*label)
            counter.inc(count)
        for code in dead_codes:
            metrics.dead_letters.labels(code).inc()
        self._on_done(tickets)
