"""The status publisher on a real broker: a message's statuses share a partition, however they are grouped."""

from __future__ import annotations

import asyncio
import time
from collections import Counter, defaultdict
from contextlib import asynccontextmanager

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from consumer.status import StatusPublisher
from consumer.testing import collect

pytestmark = pytest.mark.kafka


@asynccontextmanager
async def publisher_on(bootstrap, topic_names, create_topics, partitions, wrap=None):
    """A status publisher on a fresh status topic of `partitions` over an idempotent producer (wrapped by
    `wrap` when given); yields the publisher, the producer it uses and the topic, and stops the producer."""
    topic = topic_names("status")
    await create_topics(bootstrap, {topic: partitions})
    real = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all", enable_idempotence=True)
    await real.start()
    producer = wrap(real) if wrap is not None else real
    try:
        yield StatusPublisher(producer, topic, topic_names("dlq")), producer, topic
    finally:
        await real.stop()


async def test_statuses_of_a_message_share_a_partition_in_a_large_group_or_alone(
    kafka_bootstrap, topic_names, create_topics
):
    async with publisher_on(kafka_bootstrap, topic_names, create_topics, 5) as (publisher, _, topic):
        many = [(f"m{i}".encode(), b'{"n": 1}') for i in range(256)]
        await publisher.publish(many)
        for key, _ in many[:10]:
            await publisher.publish([(key, b'{"n": 2}')])  # one by one
    consumer = AIOKafkaConsumer(topic, bootstrap_servers=kafka_bootstrap, auto_offset_reset="earliest")
    await consumer.start()
    partitions: dict[bytes, set[int]] = defaultdict(set)
    seen = 0
    try:
        deadline = time.monotonic() + 30
        while seen < len(many) + 10 and time.monotonic() < deadline:
            for records in (await consumer.getmany(timeout_ms=1000)).values():
                for record in records:
                    partitions[record.key].add(record.partition)
                    seen += 1
    finally:
        await consumer.stop()
    assert seen == len(many) + 10
    assert all(len(p) == 1 for p in partitions.values())
    assert len({next(iter(p)) for p in partitions.values()}) == 5  # keys spread over every partition


class CountingProducer:
    """The real producer, with its calls counted (and `send_batch` made to fail while `failing`)."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self.sends = 0
        self.batch_sends = 0
        self.failing = False

    async def send(self, *args, **kwargs):
        self.sends += 1
        return await self._producer.send(*args, **kwargs)

    def create_batch(self):
        return self._producer.create_batch()

    async def send_batch(self, *args, **kwargs):
        if self.failing:
            raise KafkaTimeoutError("no room in the accumulator")
        self.batch_sends += 1
        return await self._producer.send_batch(*args, **kwargs)

    async def partitions_for(self, topic):
        return await self._producer.partitions_for(topic)


async def test_concurrent_publishes_are_joined_and_each_returns_once_acknowledged(
    kafka_bootstrap, topic_names, create_topics
):
    async with publisher_on(kafka_bootstrap, topic_names, create_topics, 3, CountingProducer) as (
        publisher,
        producer,
        topic,
    ):
        # One status each, as a sender of one message per request publishes: 500 calls at the same moment.
        calls = [publisher.publish([(f"m{i}".encode(), b'{"status": "sent"}')]) for i in range(500)]
        await asyncio.gather(*calls)
        # All made before the publisher's next turn: one group, one producer batch per partition.
        assert (producer.sends, producer.batch_sends) == (0, 3)
        on_topic = await collect(kafka_bootstrap, topic, 500, timeout=30)
        assert len(on_topic) == 500
        # A failed hand-over fails every call of its group, and the next publish goes through.
        producer.failing = True
        results = await asyncio.gather(
            *(publisher.publish([(f"x{i}".encode(), b"{}")]) for i in range(65)),
            return_exceptions=True,
        )
        assert sum(isinstance(r, KafkaTimeoutError) for r in results) == 65
        producer.failing = False
        await publisher.publish([(f"y{i}".encode(), b'{"status": "ok"}') for i in range(64)])
        after = await collect(kafka_bootstrap, topic, 500 + 64, timeout=30)
        assert Counter(r.get("status") for r in after) == {"sent": 500, "ok": 64}


async def test_a_status_too_large_for_kafka_fails_its_group_before_any_of_it_is_handed_over(
    kafka_bootstrap, topic_names, create_topics
):
    too_large = (b"big", b'{"status": "sent", "metadata": "' + b"x" * 2_000_000 + b'"}')
    async with publisher_on(kafka_bootstrap, topic_names, create_topics, 3, CountingProducer) as (
        publisher,
        producer,
        topic,
    ):
        await publisher.publish([(b"before", b'{"status": "before"}')])  # the partitions have written batches
        calls = [[(f"k{i}".encode(), b'{"status": "sent"}')] for i in range(5)]
        calls.insert(2, [too_large])
        joined = await asyncio.gather(*(publisher.publish(c) for c in calls), return_exceptions=True)
        assert all(isinstance(r, MessageSizeTooLargeError) for r in joined)  # one group: one answer
        assert producer.batch_sends == 1  # nothing of the refused group reached the producer
        # Retried alone (as the dispatcher retries), only the call with the refused status fails again.
        alone = await asyncio.gather(*(publisher.publish(c, alone=True) for c in calls), return_exceptions=True)
        assert [type(r).__name__ for r in alone] == [
            "NoneType",
            "NoneType",
            "MessageSizeTooLargeError",
            "NoneType",
            "NoneType",
            "NoneType",
        ]
        await publisher.publish([(b"after", b'{"status": "after"}')])  # the producer still publishes
    records = await collect(kafka_bootstrap, topic, 8, timeout=5)
    assert sorted(r["status"] for r in records) == ["after", "before"] + ["sent"] * 5


class GatedProducer(CountingProducer):
    """Holds every `send_batch` until `gate` is set."""

    def __init__(self, producer: AIOKafkaProducer) -> None:
        super().__init__(producer)
        self.gate = asyncio.Event()

    async def send_batch(self, *args, **kwargs):
        await self.gate.wait()
        return await super().send_batch(*args, **kwargs)


async def test_a_caller_that_gives_up_before_its_group_is_handed_over_takes_its_statuses_back(
    kafka_bootstrap, topic_names, create_topics
):
    async with publisher_on(kafka_bootstrap, topic_names, create_topics, 1, GatedProducer) as (
        publisher,
        producer,
        topic,
    ):
        first = asyncio.create_task(publisher.publish([(b"first", b'{"n": 1}')]))
        await asyncio.sleep(0.1)  # being handed over, held at the gate
        # A callback whose deadline passes while Kafka is away: it gives up (and its provider calls again).
        with pytest.raises(TimeoutError):
            async with asyncio.timeout(0.2):
                await publisher.publish([(b"gave-up", b'{"n": 2}')])
        # Many more give up, wave after wave, while Kafka is away: what they leave behind does not pile up.
        for _ in range(3):
            wave = [asyncio.create_task(publisher.publish([(b"gave-up", b'{"n": 2}')])) for _ in range(1000)]
            await asyncio.sleep(0)
            for task in wave:
                task.cancel()
            await asyncio.gather(*wave, return_exceptions=True)
        assert sum(len(group.parts) for group in publisher._groups) <= 1024
        later = asyncio.create_task(publisher.publish([(b"later", b'{"n": 3}')]))
        producer.gate.set()
        await asyncio.gather(first, later)
    keys = {r["n"] for r in await collect(kafka_bootstrap, topic, 2, timeout=30)}
    assert keys == {1, 3}
    assert producer.batch_sends == 2
