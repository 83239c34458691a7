"""The status publisher on a real broker: both of its paths put a message's statuses on one partition."""

from __future__ import annotations

import time
from collections import defaultdict

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer

from consumer.status import BATCH_API_MIN, StatusPublisher

pytestmark = pytest.mark.kafka


async def test_batched_and_single_statuses_of_a_message_share_a_partition(kafka_bootstrap, topic_names, create_topics):
    topic = topic_names("status")
    await create_topics(kafka_bootstrap, {topic: 5})
    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, acks="all", enable_idempotence=True)
    await producer.start()
    try:
        publisher = StatusPublisher(producer, topic, topic_names("dlq"))
        many = [(f"m{i}".encode(), b'{"n": 1}') for i in range(BATCH_API_MIN * 4)]
        await publisher.publish(many)  # the batch API
        for key, _ in many[:10]:
            await publisher.publish([(key, b'{"n": 2}')])  # one by one through send()
    finally:
        await producer.stop()
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
