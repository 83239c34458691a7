"""Helpers for tests, the demo and benchmarks: topics, producing events, collecting statuses, capturing logs.

Shipped with the package so that users can test their own provider configurations the same way.
"""

from __future__ import annotations

import asyncio
import io
import time
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient, NewTopic

from consumer.observability import Redactor, configure_logging

_TOPIC_ERRORS_OK = (0, 36)  # NONE, TOPIC_ALREADY_EXISTS

Connection = Mapping[str, Any] | None
"""More aiokafka connection arguments for a helper, e.g. `consumer.kafka_client.connection_kwargs(settings)`
(security protocol, TLS context, SASL credentials); its `bootstrap_servers` is replaced by the helper's own."""


def _client_options(bootstrap: str, connection: Connection) -> dict[str, Any]:
    return {**(connection or {}), "bootstrap_servers": bootstrap}


async def create_topics(
    bootstrap: str,
    topics: Mapping[str, int],
    *,
    replication_factor: int | None = None,
    connection: Connection = None,
    topic_configs: Mapping[str, dict[str, str]] | None = None,
) -> None:
    """Create `{name: partitions}` (existing ones are kept) and wait until every partition has a leader.

    The replication factor is 3 on clusters of three or more brokers, else 1. `topic_configs` gives topic
    settings by name (e.g. `message.timestamp.type`).
    """
    configs = topic_configs or {}
    admin = AIOKafkaAdminClient(**_client_options(bootstrap, connection), request_timeout_ms=30000)
    await admin.start()
    try:
        if replication_factor is None:
            brokers = (await admin.describe_cluster())["brokers"]
            replication_factor = 3 if len(brokers) >= 3 else 1
        response = await admin.create_topics(
            [
                NewTopic(name, partitions, replication_factor, topic_configs=configs.get(name, {}))
                for name, partitions in topics.items()
            ]
        )
        failed = [entry for entry in response.topic_errors if entry[1] not in _TOPIC_ERRORS_OK]
        if failed:
            raise RuntimeError(f"creating topics failed: {failed}")
        deadline = time.monotonic() + 30
        while True:
            described = await admin.describe_topics(list(topics))
            if all(
                t["error_code"] == 0
                and len(t["partitions"]) == topics[t["topic"]]
                and all(p["leader"] >= 0 for p in t["partitions"])
                for t in described
            ):
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"topics without leaders after 30 s: {described}")
            await asyncio.sleep(0.05)
    finally:
        await admin.close()


async def produce(
    bootstrap: str,
    topic: str,
    values: Iterable[bytes | dict[str, Any]],
    *,
    key_of: str | None = "campaign_id",
    partition_of: Any = None,
    connection: Connection = None,
) -> int:
    """Produce events (dicts are JSON-encoded; bytes are sent as they are). Returns how many were sent."""
    producer = AIOKafkaProducer(
        **_client_options(bootstrap, connection), acks="all", linger_ms=5, max_batch_size=262_144
    )
    await producer.start()
    try:
        futures = []
        for value in values:
            key = None
            if isinstance(value, dict):
                if key_of and isinstance(value.get(key_of), str):
                    key = value[key_of].encode()
                raw = orjson.dumps(value)
            else:
                raw = value
            partition = partition_of(value) if partition_of else None
            futures.append(await producer.send(topic, raw, key=key, partition=partition))
        await asyncio.gather(*futures)
        return len(futures)
    finally:
        await producer.stop()


async def collect(
    bootstrap: str,
    topic: str,
    count: int,
    timeout: float = 60.0,
    *,
    with_headers: bool = False,
    distinct: str | None = None,
    connection: Connection = None,
) -> list[Any]:
    """Read records of `topic` from the beginning (JSON values decoded when possible) until there are
    `count` of them, or `count` distinct values of the field `distinct` (duplicates are kept in the result).

    Returns what it has when `timeout` passes, so callers assert on the count.
    """
    seen: set[Any] = set()
    consumer = AIOKafkaConsumer(
        topic,
        **_client_options(bootstrap, connection),
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        group_id=None,
    )
    await consumer.start()
    out: list[Any] = []
    deadline = time.monotonic() + timeout
    try:
        while (len(seen) if distinct else len(out)) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=200, max_records=10_000)
            for records in batches.values():
                for record in records:
                    try:
                        value: Any = orjson.loads(record.value) if record.value is not None else None
                    except orjson.JSONDecodeError:
                        value = record.value
                    if distinct and isinstance(value, dict):
                        seen.add(value.get(distinct))
                    if with_headers:
                        out.append((record.key, value, dict(record.headers), record.value))
                    else:
                        out.append(value)
    finally:
        await consumer.stop()
    return out


async def committed_offsets(
    bootstrap: str, group: str, topic: str, partitions: int, *, connection: Connection = None
) -> dict[int, int | None]:
    """The group's committed offset of each partition of `topic`."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(**_client_options(bootstrap, connection), group_id=group, enable_auto_commit=False)
    await consumer.start()
    try:
        out = {}
        for p in range(partitions):
            out[p] = await consumer.committed(TopicPartition(topic, p))
        return out
    finally:
        await consumer.stop()


async def end_offsets(bootstrap: str, topic: str, partitions: int, *, connection: Connection = None) -> dict[int, int]:
    """The end offset of each partition of `topic`."""
    from aiokafka import TopicPartition

    consumer = AIOKafkaConsumer(**_client_options(bootstrap, connection), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = [TopicPartition(topic, p) for p in range(partitions)]
        ends = await consumer.end_offsets(tps)
        return {tp.partition: off for tp, off in ends.items()}
    finally:
        await consumer.stop()


async def wait_for(condition: Any, timeout: float, interval: float = 0.05, what: str = "condition") -> None:
    """Poll `condition()` (sync or async) until it is true; raise AssertionError after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        result = condition()
        if asyncio.iscoroutine(result):
            result = await result
        if result:
            return
        if time.monotonic() >= deadline:
            raise AssertionError(f"timed out after {timeout:g} s waiting for {what}")
        await asyncio.sleep(interval)


@contextmanager
def capture_logs(secrets: Iterable[str] = (), level: str = "debug") -> Iterator[io.StringIO]:
    """Route every log line (structlog and standard library) as JSON into a buffer, with the service's
    redaction, so a test can assert what was (and was not) logged."""
    buffer = io.StringIO()
    configure_logging(level=level, fmt="json", redactor=Redactor(secrets), stream=buffer)
    try:
        yield buffer
    finally:
        configure_logging(level="warning", fmt="json")
