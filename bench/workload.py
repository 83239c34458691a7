"""The events of a benchmark run, the topics they travel on, producing them, and reading back the statuses.

Input and status topics are created with `message.timestamp.type=LogAppendTime`, so a record's timestamp is the
moment the broker appended it: an input record's timestamp is when it came in (and, as the events carry no
`created_at`, the service takes it as the message's `created_at`), a status record's is when Kafka acknowledged
it. Every figure of a scenario is computed from these broker timestamps.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, TopicPartition

from consumer.testing import create_topics as create_kafka_topics

APPEND_TIME = {"message.timestamp.type": "LogAppendTime"}


@dataclass(frozen=True, slots=True)
class Topics:
    input: str
    status: str
    dlq: str
    partitions: int


async def create_topics(bootstrap: str, topics: Topics) -> None:
    """Create the three topics of a scenario and wait until every partition has a leader."""
    await create_kafka_topics(
        bootstrap,
        {topics.input: topics.partitions, topics.status: topics.partitions, topics.dlq: 1},
        topic_configs={topics.input: APPEND_TIME, topics.status: APPEND_TIME},
    )


CAMPAIGNS = 4
BODY = "Your verification code is {code:06d}. It expires in 10 minutes. Do not share it with anyone."


def event(run: str, i: int, provider: str) -> bytes:
    """Send-request number `i` of a run: about 230 bytes, GSM-7 text, one of a few campaigns."""
    # Copied to its exact size: an orjson result keeps a buffer of some kilobytes alive, and runs hold many.
    raw = orjson.dumps(
        {
            "message_id": f"{run}-{i}",
            "campaign_id": f"bench-{i % CAMPAIGNS}",
            "provider": provider,
            "to": f"+1415{i % 10_000_000:07d}",
            "body": BODY.format(code=(i * 7919) % 1_000_000),
            "metadata": {"n": i},
        }
    )
    return bytes(memoryview(raw))


def events(run: str, count: int, provider: str) -> list[bytes]:
    return [event(run, i, provider) for i in range(count)]


def message_index(message_id: str) -> int:
    return int(message_id.rsplit("-", 1)[1])


def _producer(bootstrap: str, linger_ms: int = 5) -> AIOKafkaProducer:
    return AIOKafkaProducer(
        bootstrap_servers=bootstrap,
        acks="all",
        linger_ms=linger_ms,
        max_batch_size=1_048_576,
        request_timeout_ms=60_000,
    )


@dataclass(slots=True)
class Produced:
    """What went onto the input topic: how many records, and when the first and last came in (broker time)."""

    count: int = 0
    first_ms: int | None = None
    last_ms: int | None = None
    seconds: float = 0.0

    def saw(self, timestamp_ms: int) -> None:
        self.first_ms = timestamp_ms if self.first_ms is None else min(self.first_ms, timestamp_ms)
        self.last_ms = timestamp_ms if self.last_ms is None else max(self.last_ms, timestamp_ms)

    @property
    def rate(self) -> float:
        return self.count / self.seconds if self.seconds > 0 else 0.0


async def produce_burst(bootstrap: str, topic: str, values: list[bytes], partitions: int) -> Produced:
    """Produce `values` as fast as the client can, in whole record batches; record `i` goes to partition
    `i % partitions`."""
    producer = _producer(bootstrap)
    await producer.start()
    out = Produced()
    try:
        started = time.perf_counter()
        futures = []
        builders = [producer.create_batch() for _ in range(partitions)]
        for i, value in enumerate(values):
            partition = i % partitions
            if builders[partition].append(key=None, value=value, timestamp=None) is None:
                futures.append(await producer.send_batch(builders[partition], topic, partition=partition))
                builders[partition] = producer.create_batch()
                builders[partition].append(key=None, value=value, timestamp=None)
        for partition, builder in enumerate(builders):
            if builder.record_count():
                futures.append(await producer.send_batch(builder, topic, partition=partition))
        for metadata in await asyncio.gather(*futures):
            out.saw(metadata.timestamp)
        out.seconds = time.perf_counter() - started
        out.count = len(values)
    finally:
        await producer.stop()
    return out


async def produce_paced(bootstrap: str, topic: str, values: list[bytes], rate: float, partitions: int) -> Produced:
    """Produce `values` at `rate` records per second, in small steps, each record on its own (no batching delay)."""
    producer = _producer(bootstrap, linger_ms=0)
    await producer.start()
    out = Produced()
    step = 0.01
    per_step = max(1, round(rate * step))
    try:
        started = time.perf_counter()
        futures = []
        for begin in range(0, len(values), per_step):
            due = started + (begin / rate)
            delay = due - time.perf_counter()
            if delay > 0:
                await asyncio.sleep(delay)
            for i, value in enumerate(values[begin : begin + per_step], start=begin):
                futures.append(await producer.send(topic, value, partition=i % partitions))
        for metadata in await asyncio.gather(*futures):
            out.saw(metadata.timestamp)
        out.seconds = time.perf_counter() - started
        out.count = len(values)
    finally:
        await producer.stop()
    return out


async def produce_backlog(
    bootstrap: str, topic: str, run: str, count: int, provider: str, partitions: int, chunk: int = 50_000
) -> Produced:
    """Queue `count` events, generated chunk by chunk so that memory stays small."""
    total = Produced()
    started = time.perf_counter()
    for begin in range(0, count, chunk):
        part = await produce_burst(
            bootstrap, topic, [event(run, i, provider) for i in range(begin, min(count, begin + chunk))], partitions
        )
        if part.first_ms is not None and part.last_ms is not None:
            total.saw(part.first_ms)
            total.saw(part.last_ms)
        total.count += part.count
    total.seconds = time.perf_counter() - started
    return total


class EndWatch:
    """Counts the records of a topic from its end offsets, cheaply, while a scenario runs."""

    def __init__(self, bootstrap: str, topic: str, partitions: int) -> None:
        self._consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False)
        self._tps = [TopicPartition(topic, p) for p in range(partitions)]

    async def __aenter__(self) -> EndWatch:
        await self._consumer.start()
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self._consumer.stop()

    async def count(self) -> int:
        ends = await self._consumer.end_offsets(self._tps)
        return sum(ends.values())

    async def wait_for(
        self, count: int, timeout: float, *, poll: float = 0.25, on_poll: Callable[[], None] | None = None
    ) -> int:
        """Wait until the topic holds `count` records; returns how many it holds (fewer after `timeout`)."""
        deadline = time.monotonic() + timeout
        while True:
            seen = await self.count()
            if on_poll is not None:
                on_poll()
            if seen >= count or time.monotonic() > deadline:
                return seen
            await asyncio.sleep(poll)


@dataclass(slots=True)
class Statuses:
    """What the status topic holds for a run's `expected` messages."""

    expected: int
    records: int = 0
    distinct: int = 0
    unknown: int = 0
    by_status: Counter[str] = field(default_factory=Counter)
    first_ms: int | None = None
    last_ms: int | None = None
    latencies_ms: list[float] = field(default_factory=list)
    """created_at -> acknowledged, per status record."""

    @property
    def missing(self) -> int:
        return self.expected - self.distinct

    @property
    def duplicates(self) -> int:
        return self.records - self.distinct - self.unknown

    def percentile(self, q: float) -> float | None:
        if not self.latencies_ms:
            return None
        ordered = self.latencies_ms
        return ordered[min(len(ordered) - 1, max(0, round(q * len(ordered)) - 1))]


def _epoch_ms(text: str) -> float:
    return datetime.fromisoformat(text).timestamp() * 1000


async def read_statuses(bootstrap: str, topic: str, partitions: int, run: str, expected: int) -> Statuses:
    """Read the whole status topic once (after the run, so it costs the measured process nothing)."""
    consumer = AIOKafkaConsumer(bootstrap_servers=bootstrap, enable_auto_commit=False, auto_offset_reset="earliest")
    await consumer.start()
    out = Statuses(expected)
    seen = bytearray(expected)
    prefix = f"{run}-"
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        loads, latencies = orjson.loads, out.latencies_ms
        while remaining:
            batches = await consumer.getmany(*remaining, timeout_ms=1000, max_records=20_000)
            for tp, records in batches.items():
                for record in records:
                    out.records += 1
                    status = loads(record.value)
                    message_id = status["message_id"]
                    if not message_id.startswith(prefix):
                        out.unknown += 1
                        continue
                    index = message_index(message_id)
                    if index >= expected:
                        out.unknown += 1
                        continue
                    if not seen[index]:
                        seen[index] = 1
                        out.distinct += 1
                    out.by_status[status["status"]] += 1
                    acked = record.timestamp
                    out.first_ms = acked if out.first_ms is None else min(out.first_ms, acked)
                    out.last_ms = acked if out.last_ms is None else max(out.last_ms, acked)
                    created = status.get("created_at")
                    if created:
                        latencies.append(acked - _epoch_ms(created))
                if records and records[-1].offset + 1 >= ends[tp]:
                    remaining.discard(tp)
        latencies.sort()
    finally:
        await consumer.stop()
    return out
