"""The local Kafka harness against real brokers: clients, broker failure, the CLI."""

from __future__ import annotations

import asyncio
import os
import signal
import sys
import time
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.structs import TopicPartition

from consumer.devbroker import KafkaCluster
from tests.conftest import CreateTopics, TopicNames, create_kafka_topics

pytestmark = pytest.mark.kafka

PROJECT_ROOT = Path(__file__).resolve().parents[2]
local_cluster_only = pytest.mark.skipif(
    bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")),
    reason="starts its own brokers; skipped when testing against KAFKA_BOOTSTRAP_SERVERS",
)


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float, what: str) -> None:
    """Poll ``condition`` until it holds, failing after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while not await condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f}s waiting for {what}")
        await asyncio.sleep(0.1)


async def consume(bootstrap: str, topic: str, count: int, group: str | None = None) -> list[bytes]:
    """Read ``count`` records of ``topic`` from the beginning."""
    consumer = AIOKafkaConsumer(
        topic, bootstrap_servers=bootstrap, group_id=group, auto_offset_reset="earliest", enable_auto_commit=False
    )
    await consumer.start()
    values: list[bytes] = []
    try:
        deadline = time.monotonic() + 60
        while len(values) < count and time.monotonic() < deadline:
            batches = await consumer.getmany(timeout_ms=500)
            values.extend(r.value for records in batches.values() for r in records if r.value is not None)
    finally:
        await consumer.stop()
    return values


def assert_cluster_gone(workdir: Path) -> None:
    """No process of the cluster in ``workdir`` is alive and the directory is deleted."""
    assert cluster_processes(workdir) == []
    assert not workdir.exists()


def cluster_processes(workdir: Path) -> list[int]:
    """Pids of live processes whose command line mentions ``workdir``."""
    needle = str(workdir).encode()
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes()
        except OSError:
            continue
        if needle in cmdline:
            found.append(int(entry.name))
    return found


async def test_round_trip_with_consumer_group_commit(
    kafka_bootstrap: str, topic_names: TopicNames, create_topics: CreateTopics
) -> None:
    topic, group = topic_names("roundtrip"), topic_names("group")
    await create_topics(kafka_bootstrap, {topic: 3})
    sent = [f"message-{i}".encode() for i in range(30)]

    producer = AIOKafkaProducer(bootstrap_servers=kafka_bootstrap, enable_idempotence=True, acks="all")
    await producer.start()
    try:
        for i, value in enumerate(sent):
            await producer.send(topic, value, key=str(i).encode())
        await producer.flush()
    finally:
        await producer.stop()

    consumer = AIOKafkaConsumer(
        topic,
        bootstrap_servers=kafka_bootstrap,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    await consumer.start()
    received: list[bytes] = []
    next_offsets: dict[TopicPartition, int] = {}
    try:
        deadline = time.monotonic() + 60
        while len(received) < len(sent):
            assert time.monotonic() < deadline, f"received only {len(received)} of {len(sent)}"
            for tp, records in (await consumer.getmany(timeout_ms=500)).items():
                for record in records:
                    assert record.value is not None
                    received.append(record.value)
                    next_offsets[tp] = record.offset + 1
        await consumer.commit(next_offsets)
        for tp, offset in next_offsets.items():
            assert await consumer.committed(tp) == offset
    finally:
        await consumer.stop()
    assert sorted(received) == sorted(sent)
    assert sum(next_offsets.values()) == len(sent)

    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    try:
        committed = await admin.list_consumer_group_offsets(group)
    finally:
        await admin.close()
    assert {tp: meta.offset for tp, meta in committed.items()} == next_offsets


@local_cluster_only
async def test_three_brokers_keep_accepting_acks_all_writes_with_one_broker_down(
    topic_names: TopicNames,
) -> None:
    cluster = KafkaCluster(brokers=3, partitions=3)
    await asyncio.to_thread(cluster.start)
    workdir = cluster.workdir
    bootstrap = cluster.bootstrap_servers
    topic = topic_names("replicated")
    try:
        assert len(cluster_processes(workdir)) == 3
        await create_kafka_topics(bootstrap, {topic: 3}, replication_factor=3)
        admin = AIOKafkaAdminClient(bootstrap_servers=bootstrap)
        await admin.start()
        try:
            [described] = await admin.describe_topics([topic])
            assert all(len(p["replicas"]) == 3 for p in described["partitions"])

            producer = AIOKafkaProducer(
                bootstrap_servers=bootstrap, acks="all", enable_idempotence=True, request_timeout_ms=30000
            )
            await producer.start()
            try:
                for i in range(10):
                    await producer.send_and_wait(topic, f"before-{i}".encode())

                await asyncio.to_thread(cluster.kill_broker, 1)
                assert not cluster.is_running(1)
                # min.insync.replicas=2: two live replicas still accept acks=all writes.
                async with asyncio.timeout(60):
                    for i in range(10):
                        await producer.send_and_wait(topic, f"during-{i}".encode())

                # Restart from a thread that ends right away: the broker must outlive it.
                with ThreadPoolExecutor(max_workers=1) as pool:
                    restart = pool.submit(cluster.start_broker, 1)
                    await asyncio.wrap_future(restart)
                assert cluster.is_running(1)

                async def fully_replicated() -> bool:
                    [info] = await admin.describe_topics([topic])
                    return all(sorted(p["isr"]) == [1, 2, 3] for p in info["partitions"])

                await wait_until(fully_replicated, 60, "the restarted broker to rejoin every ISR")
                await producer.send_and_wait(topic, b"after")
            finally:
                await producer.stop()
        finally:
            await admin.close()

        values = await consume(bootstrap, topic, 21)
        assert len(values) == 21
        assert set(values) >= {b"before-0", b"during-9", b"after"}
    finally:
        await asyncio.to_thread(cluster.stop)
    assert_cluster_gone(workdir)


@local_cluster_only
async def test_dev_broker_command_serves_clients_and_stops_on_sigterm(tmp_path: Path) -> None:
    with (tmp_path / "stderr.log").open("wb") as stderr:
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "consumer.devbroker",
            "--brokers",
            "1",
            cwd=PROJECT_ROOT,
            stdout=asyncio.subprocess.PIPE,
            stderr=stderr,
        )
    try:
        assert proc.stdout is not None
        lines: dict[str, str] = {}
        async with asyncio.timeout(180):  # includes the one-time jar download
            while "workdir" not in lines:
                line = (await proc.stdout.readline()).decode()
                assert line, f"dev-broker exited early:\n{(tmp_path / 'stderr.log').read_text()}"
                key, _, value = line.partition(": ")
                lines[key] = value.strip()
        bootstrap = lines["bootstrap servers"]
        assert bootstrap.startswith("127.0.0.1:")
        assert lines["broker 1"].startswith(bootstrap)
        workdir = Path(lines["workdir"])

        producer = AIOKafkaProducer(bootstrap_servers=bootstrap, acks="all")
        await producer.start()
        try:
            # Topics are auto-created on first use.
            metadata = await producer.send_and_wait("dev-broker-smoke", b"hello")
        finally:
            await producer.stop()
        assert metadata.offset == 0
        assert await consume(bootstrap, "dev-broker-smoke", 1) == [b"hello"]

        proc.send_signal(signal.SIGTERM)
        assert await asyncio.wait_for(proc.wait(), timeout=40) == 0
        assert_cluster_gone(workdir)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()
