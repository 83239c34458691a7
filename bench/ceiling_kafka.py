"""Ceiling K: the least a Kafka-to-Kafka loop must do for the same events, without HTTP.

It reads the input topic in a consumer group (manual commits, `read_committed`, as the service does), decodes
each event with orjson, and publishes one status of the same shape and size as the service's with an
idempotent `acks=all` producer. Fetch size, linger and batch size are the service's defaults. Acknowledgements
are awaited per fetch in the background, with at most `--max-pending` records unacknowledged; finished offsets
are committed every second. Prints `ready` once it owns partitions; SIGTERM finishes the outstanding work,
commits and stops.

`--api send` publishes record by record with `producer.send()`, the plain loop ceiling K stands for; `--api
batch` fills record batches per partition (`create_batch()` / `send_batch()`, keys partitioned by the same
murmur2 hash), as the service's status publisher does: what the Kafka client allows at best.

    python -m bench.ceiling_kafka --bootstrap HOST:PORT --input T --status T --group G [--api send|batch]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import signal
import uuid
from collections import deque
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka.partitioner import DefaultPartitioner
from aiokafka.structs import OffsetAndMetadata

from consumer import loop

# The service's defaults (`KafkaSettings` in schemas/config.py), so that the loop fetches and batches as it does;
# a unit test keeps them equal. Imported, they would bring pydantic into this process's memory figure.
MAX_PARTITION_FETCH_BYTES = 262_144
STATUS_MAX_BATCH_BYTES = 262_144
STATUS_LINGER_MS = 5


class _Ready(ConsumerRebalanceListener):
    def __init__(self, ready: asyncio.Event) -> None:
        self._ready = ready

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        if assigned:
            self._ready.set()


def status_value(event: dict, topic: str, partition: int, offset: int, timestamp_ms: int, batch_id: str) -> bytes:
    """A status shaped like `schemas.events.DeliveryStatus`, as the service would publish for a sent message."""
    return orjson.dumps(
        {
            "schema_version": 1,
            "message_id": event["message_id"],
            "campaign_id": event["campaign_id"],
            "provider": event["provider"],
            "to": event["to"],
            "status": "sent",
            "reason": None,
            "http_status": 200,
            "provider_message_id": "r0",
            "attempts": 1,
            "encoding": "GSM-7",
            "segments": 1,
            "batch_id": batch_id,
            "batch_size": 1000,
            "created_at": datetime.fromtimestamp(timestamp_ms / 1000, UTC),
            "completed_at": datetime.now(UTC),
            "source": {"topic": topic, "partition": partition, "offset": offset},
            "metadata": event.get("metadata"),
        },
        option=orjson.OPT_UTC_Z,
    )


async def run(args: argparse.Namespace) -> None:
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    ready = asyncio.Event()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=args.bootstrap,
        group_id=args.group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
        isolation_level="read_committed",
        max_partition_fetch_bytes=MAX_PARTITION_FETCH_BYTES,
    )
    producer = AIOKafkaProducer(
        bootstrap_servers=args.bootstrap,
        acks="all",
        enable_idempotence=True,
        linger_ms=STATUS_LINGER_MS,
        max_batch_size=STATUS_MAX_BATCH_BYTES,
    )
    await producer.start()
    consumer.subscribe([args.input], listener=_Ready(ready))
    await consumer.start()
    done: dict[TopicPartition, int] = {}
    pending: deque[tuple[asyncio.Future[list[object]], TopicPartition, int, int]] = deque()
    in_flight = 0

    def settle() -> None:
        nonlocal in_flight
        while pending and pending[0][0].done():
            future, tp, next_offset, count = pending.popleft()
            future.result()
            done[tp] = max(done.get(tp, 0), next_offset)
            in_flight -= count

    async def commit() -> None:
        settle()
        if done:
            await consumer.commit({tp: OffsetAndMetadata(o, "") for tp, o in done.items()})

    async def committer() -> None:
        while True:
            await asyncio.sleep(1.0)
            await commit()

    commits = asyncio.create_task(committer())
    announced = False
    status_topic = args.status
    partitioner = DefaultPartitioner()
    partitions = sorted(await producer.partitions_for(status_topic))
    try:
        while not stop.is_set():
            batches = await consumer.getmany(timeout_ms=200, max_records=args.max_records)
            if ready.is_set() and not announced:
                print("ready", flush=True)
                announced = True
            for tp, records in batches.items():
                batch_id = uuid.uuid4().hex
                futures = []
                if args.api == "batch":
                    builders: dict[int, Any] = {}
                    for record in records:
                        event = orjson.loads(record.value)
                        value = status_value(event, tp.topic, tp.partition, record.offset, record.timestamp, batch_id)
                        key = event["message_id"].encode()
                        partition = partitioner(key, partitions, partitions)
                        builder = builders.get(partition)
                        if builder is None:
                            builder = builders[partition] = producer.create_batch()
                        if builder.append(key=key, value=value, timestamp=None) is None:
                            futures.append(await producer.send_batch(builder, status_topic, partition=partition))
                            builder = builders[partition] = producer.create_batch()
                            builder.append(key=key, value=value, timestamp=None)
                    for partition, builder in builders.items():
                        futures.append(await producer.send_batch(builder, status_topic, partition=partition))
                else:
                    for record in records:
                        event = orjson.loads(record.value)
                        value = status_value(event, tp.topic, tp.partition, record.offset, record.timestamp, batch_id)
                        futures.append(await producer.send(status_topic, value, key=event["message_id"].encode()))
                pending.append((asyncio.gather(*futures), tp, records[-1].offset + 1, len(records)))
                in_flight += len(records)
            settle()
            while in_flight > args.max_pending and pending:
                await asyncio.wait([pending[0][0]])
                settle()
        while pending:
            await asyncio.wait([pending[0][0]])
            settle()
        await commit()
    finally:
        commits.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await commits
        await consumer.stop()
        await producer.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench.ceiling_kafka", description=__doc__)
    parser.add_argument("--bootstrap", required=True)
    parser.add_argument("--input", required=True)
    parser.add_argument("--status", required=True)
    parser.add_argument("--group", required=True)
    parser.add_argument("--max-records", type=int, default=2000)
    parser.add_argument("--max-pending", type=int, default=20_000)
    parser.add_argument("--api", choices=("send", "batch"), default="send")
    args = parser.parse_args(argv)
    loop.run(run(args))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
