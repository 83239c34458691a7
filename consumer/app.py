"""Wiring and lifecycle: start the producer, HTTP session, source and dispatcher; run; drain; stop."""

from __future__ import annotations

import asyncio
import gc
import signal
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import structlog
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRecord, TopicPartition
from aiokafka.errors import KafkaError

from consumer.auth import make_signer
from consumer.callback_endpoint import CallbackEndpoint
from consumer.dispatcher import Dispatcher
from consumer.health import LoopLagProbe, OpsServer
from consumer.intake import Envelope, Intake, Refusal
from consumer.kafka_client import connection_failure, connection_kwargs
from consumer.metrics import Metrics
from consumer.offsets import Ticket
from consumer.partitioner import KeyPartitioner
from consumer.sender import AiohttpTransport, ProviderSender, make_session
from consumer.source import KafkaSource, consumer_kwargs
from consumer.status import Origin, StatusPublisher
from consumer.templates import compile_providers
from schemas.config import ServiceConfig

log = structlog.get_logger("consumer.app")

STOP_TIMEOUT = 10.0


def producer_kwargs(settings: Any) -> dict[str, Any]:
    """aiokafka producer options for statuses: acknowledged by all in-sync replicas, idempotent."""
    return {
        **connection_kwargs(settings),
        "client_id": f"{settings.client_id}-status",
        "acks": "all",
        "enable_idempotence": True,
        "linger_ms": settings.status_linger_ms,
        "max_batch_size": settings.status_max_batch_bytes,
        "compression_type": None if settings.compression_type == "none" else settings.compression_type,
        "request_timeout_ms": 30_000,
        "partitioner": KeyPartitioner(),
    }


async def _start_client(client: AIOKafkaProducer | AIOKafkaConsumer, settings: Any) -> None:
    """Start a Kafka client; when it cannot connect, raise `KafkaConnectError` saying why."""
    try:
        await client.start()
    except KafkaError as exc:
        failure = await connection_failure(settings, exc)
        log.error("kafka connection failed", code=failure.code, error=failure.message)
        raise failure from None


@dataclass
class RunStats:
    """Counts of one run, for the caller (the demo prints them)."""

    consumed: int = 0
    refused: int = 0
    by_code: dict[str, int] = field(default_factory=dict)


def tune_gc() -> None:
    """Fewer, cheaper garbage collections: the pipeline allocates many short-lived objects per message, and
    with the default thresholds the collector's full passes over the (bounded) pending messages cost more
    than the work itself. Objects alive at start-up are frozen out of the collector's scans."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 100)


async def _stop_bounded(stopping: Any, what: str) -> None:
    """Stop a Kafka client within STOP_TIMEOUT whatever state the cluster is in (a dead broker must not
    hang the shutdown); only a cancellation of this task itself goes on up."""
    try:
        await asyncio.wait_for(stopping, STOP_TIMEOUT)
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise
        log.warning(f"{what} stopped abruptly")
    except Exception as exc:
        log.warning(f"{what} did not stop cleanly", error=type(exc).__name__)


class Service:
    """The running service. `run()` returns after a stop was requested and the drain finished."""

    def __init__(self, config: ServiceConfig) -> None:
        self.config = config
        self.providers = compile_providers(config.providers)
        self.stats = RunStats()
        self._stop_requested = asyncio.Event()
        self._hard_stop = asyncio.Event()
        self.source: KafkaSource | None = None
        self.dispatcher: Dispatcher | None = None
        self.metrics = Metrics()
        self.loop_probe = LoopLagProbe(self.metrics)
        self.ops: OpsServer | None = None
        self._producer: AIOKafkaProducer | None = None
        callbacks = {name: p.callback for name, p in config.providers.items() if p.callback is not None}
        self.callbacks = CallbackEndpoint(callbacks, config.callbacks, self.metrics) if callbacks else None

    def request_stop(self) -> None:
        """First call: drain and stop. Second call: stop at once without committing unfinished work."""
        if self._stop_requested.is_set():
            log.warning("second stop request: stopping now")
            self._hard_stop.set()
        self._stop_requested.set()

    def install_signal_handlers(self) -> None:
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, self.request_stop)

    def alive(self) -> tuple[bool, dict[str, Any]]:
        """Liveness: the event loop is responsive."""
        import time

        limit = self.config.observability.max_loop_lag_s
        probe = self.loop_probe
        silent = time.monotonic() - probe.last_beat
        ok = probe.last < limit and silent < limit + probe.interval
        return ok, {"loop_lag_s": round(probe.last, 4)}

    def ready(self) -> tuple[bool, dict[str, Any]]:
        """Readiness: partitions assigned, producer connected, statuses publishing."""
        source, dispatcher, producer = self.source, self.dispatcher, self._producer
        assigned = bool(source is not None and source.assigned.is_set())
        connected = bool(producer is not None and producer.client.cluster.brokers())
        publishing = bool(dispatcher is not None and dispatcher.publish_healthy)
        stopping = self._stop_requested.is_set()
        ok = assigned and connected and publishing and not stopping
        return ok, {
            "assigned": assigned,
            "producer_connected": connected,
            "publishing": publishing,
            "stopping": stopping,
        }

    async def run(self) -> None:
        tune_gc()
        kafka, pipeline = self.config.kafka, self.config.pipeline
        obs = self.config.observability
        metrics = self.metrics
        producer_options, consumer_options = producer_kwargs(kafka), consumer_kwargs(kafka)
        if obs.http_enabled:
            routes = self.callbacks.routes() if self.callbacks is not None else []
            self.ops = OpsServer(metrics, self.alive, self.ready, obs.http_host, obs.http_port, routes)
            await self.ops.start()
            log.info("operations server listening", port=self.ops.port)
        probe = asyncio.create_task(self.loop_probe.run(), name="loop-lag")
        producer = AIOKafkaProducer(**producer_options)
        session = make_session()
        consumer = AIOKafkaConsumer(**consumer_options)
        try:
            await _start_client(producer, kafka)
            self._producer = producer
            transport = AiohttpTransport(session)
            senders = {
                name: ProviderSender(
                    p, transport, make_signer(p.config.auth, transport, provider=name, metrics=metrics), metrics=metrics
                )
                for name, p in self.providers.items()
            }
            publisher = StatusPublisher(producer, kafka.status_topic, kafka.dlq_topic)
            if self.callbacks is not None:
                self.callbacks.attach(publisher)
            high = pipeline.max_pending_messages
            source_box: list[KafkaSource] = []
            dispatcher = Dispatcher(
                senders,
                publisher,
                lambda tickets: source_box[0].complete(tickets),
                linger=pipeline.linger_ms / 1000,
                publish_retry_backoff=pipeline.status_retry_backoff_s,
                metrics=metrics,
                sent_hooks=self.callbacks.sent_hooks() if self.callbacks is not None else None,
            )
            metrics.in_flight.set_function(lambda: dispatcher.in_flight)
            metrics.buffered.set_function(lambda: dispatcher.buffered)

            source = KafkaSource(
                consumer,
                kafka.input_topic,
                max_records=kafka.max_poll_records,
                commit_interval=pipeline.commit_interval_ms / 1000,
                pending=lambda: dispatcher.pending,
                high_water=high,
                low_water=int(high * pipeline.resume_below_ratio),
                # Work that outlives the revoke deadline is abandoned: the next owner reads its records again,
                # and sending them here as well, once done waiting out a provider's outage, would send them twice.
                drain=dispatcher.drain,
                drain_timeout=kafka.rebalance_timeout_ms / 1000 * 0.8,
                metrics=metrics,
            )
            source_box.append(source)
            self.source, self.dispatcher = source, dispatcher
            intake = Intake(self.providers, pipeline.max_message_age_s)
            source.subscribe()
            await _start_client(consumer, kafka)
            log.info(
                "service started",
                topic=kafka.input_topic,
                group=kafka.group_id,
                providers=sorted(self.providers),
            )
            await self._serve(source, dispatcher, intake)
        finally:
            if self.callbacks is not None:
                self.callbacks.attach(None)
            await _stop_bounded(consumer.stop(), "consumer")
            await session.close()
            await _stop_bounded(producer.stop(), "status producer")
            self._producer = None
            probe.cancel()
            if self.ops is not None:
                await self.ops.stop()
            log.info("service stopped", consumed=self.stats.consumed, refused=self.stats.refused)

    async def _serve(self, source: KafkaSource, dispatcher: Dispatcher, intake: Intake) -> None:
        stats = self.stats
        accept = intake.accept
        submit = dispatcher.submit

        def handle(records: Sequence[tuple[ConsumerRecord[bytes, bytes], Ticket[TopicPartition]]]) -> None:
            refusals: list[Refusal] = []
            refused_tickets = []
            for record, ticket in records:
                origin = Origin(record.topic, record.partition, record.offset, record.timestamp)
                result = accept(record.key, record.value, origin)
                if isinstance(result, Envelope):
                    result.ticket = ticket
                    submit(result)
                else:
                    refusals.append(result)
                    refused_tickets.append(ticket)
                    stats.by_code[result.code] = stats.by_code.get(result.code, 0) + 1
                    if result.dead_letter is not None:
                        log.warning(
                            "event rejected",
                            code=result.code,
                            reason=result.message,
                            message_id=result.message_id,
                            campaign_id=result.campaign_id,
                            provider=result.provider,
                            partition=origin.partition,
                            offset=origin.offset,
                        )
            stats.consumed += len(records)
            if refusals:
                stats.refused += len(refusals)
                dispatcher.conclude(refusals, refused_tickets)

        tasks = [
            asyncio.create_task(source.run(handle), name="source"),
            asyncio.create_task(dispatcher.run_timer(), name="linger-timer"),
            asyncio.create_task(source.run_commits(), name="committer"),
        ]
        stop_wait = asyncio.create_task(self._stop_requested.wait())
        try:
            done, _ = await asyncio.wait([tasks[0], stop_wait], return_when=asyncio.FIRST_COMPLETED)
            if tasks[0] in done and tasks[0].exception() is not None:
                raise tasks[0].exception()  # type: ignore[misc]
            source.stop()
            await asyncio.wait_for(asyncio.shield(tasks[0]), STOP_TIMEOUT)
            await self._drain(source, dispatcher)
        finally:
            stop_wait.cancel()
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, stop_wait, return_exceptions=True)

    async def _drain(self, source: KafkaSource, dispatcher: Dispatcher) -> None:
        deadline = self.config.pipeline.shutdown_timeout_s
        log.info("draining", buffered=dispatcher.buffered, in_flight=dispatcher.in_flight, deadline_s=deadline)
        abandoned = await dispatcher.drain(deadline, self._hard_stop)
        if abandoned:
            log.warning(
                "drain incomplete: unfinished work stays uncommitted and will be read again", in_flight=abandoned
            )
        committed = await source.commit()
        log.info("final commit", partitions=len(committed))
