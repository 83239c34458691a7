"""Group and cluster faults: members joining and leaving, a revoke that outlives its deadline, broker restarts."""

from __future__ import annotations

import asyncio
import os
import time
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from consumer.devbroker import KafkaCluster
from consumer.testing import collect, committed_offsets, create_topics, end_offsets, produce, wait_for
from tests.faults.harness import CountingProvider, ServiceProcess, service_config

pytestmark = [pytest.mark.kafka, pytest.mark.fault]


def events(n: int) -> list[dict[str, str]]:
    return [
        {"message_id": f"m{i}", "campaign_id": f"c{i % 4}", "provider": "p", "to": f"+1415{i:07d}", "body": "hi"}
        for i in range(n)
    ]


async def prepare(bootstrap: str, counting: CountingProvider, partitions: int = 6, **overrides):
    config = service_config(bootstrap, counting.url, **overrides)
    kafka = config["kafka"]
    await create_topics(bootstrap, {kafka["input_topic"]: partitions, kafka["status_topic"]: 3, kafka["dlq_topic"]: 1})
    return config, kafka


async def prepare_short_revoke(bootstrap: str, counting: CountingProvider, **provider: Any):
    """Start `counting` and prepare three partitions and a group whose revoke deadline (80% of the rebalance
    timeout) is 2.4 s; `provider` updates the provider's settings."""
    await counting.start()
    timeouts = {"rebalance_timeout_ms": 3000, "session_timeout_ms": 6000}
    return await prepare(bootstrap, counting, partitions=3, kafka=timeouts, provider=provider)


@asynccontextmanager
async def group_members(config: dict[str, Any], workdir: Path, count: int, provider: CountingProvider):
    """`count` service processes of one configuration, each in a directory of its own (not started); kills
    those still running and stops `provider` at the end."""
    members = []
    for i in range(count):
        (workdir / f"m{i}").mkdir()
        members.append(ServiceProcess(config, workdir / f"m{i}"))
    try:
        yield members
    finally:
        for member in members:
            if member.alive():
                member.kill()
        await provider.stop()


class OffsetWatch:
    """Polls the group's committed offsets and records any that move backwards."""

    def __init__(self, bootstrap: str, group: str, topic: str, partitions: int) -> None:
        self.args = (bootstrap, group, topic, partitions)
        self.last: dict[int, int] = {}
        self.backwards: list[tuple[int, int, int]] = []
        self.task: asyncio.Task[None] | None = None

    async def _run(self) -> None:
        while True:
            committed = await committed_offsets(*self.args)
            for p, offset in committed.items():
                if offset is None:
                    continue
                if offset < self.last.get(p, -1):
                    self.backwards.append((p, self.last[p], offset))
                self.last[p] = max(offset, self.last.get(p, -1))
            await asyncio.sleep(0.3)

    def __enter__(self) -> OffsetWatch:
        self.task = asyncio.get_running_loop().create_task(self._run())
        return self

    def __exit__(self, *exc: object) -> None:
        assert self.task is not None
        self.task.cancel()


async def test_members_joining_and_leaving_lose_nothing(kafka_bootstrap, tmp_path):
    provider = CountingProvider(latency=0.03)
    await provider.start()
    config, kafka = await prepare(kafka_bootstrap, provider)
    n = 20_000
    await produce(kafka_bootstrap, kafka["input_topic"], events(n), key_of="message_id")
    changes = 0
    async with group_members(config, tmp_path, 4, provider) as members:
        with OffsetWatch(kafka_bootstrap, kafka["group_id"], kafka["input_topic"], 6) as watch:
            for member in members[:3]:
                member.start()
            await wait_for(lambda: len(provider.sends) > 2000, timeout=90, what="flow")
            members[0].terminate()  # leaves cleanly: drains, commits, leaves the group
            changes += 1
            await wait_for(lambda: len(provider.sends) > 6000, timeout=90, what="flow after a member left")
            members[3].start()  # joins
            changes += 1
            await wait_for(lambda: len(provider.sends) > 10000, timeout=90, what="flow after a member joined")
            members[1].kill()  # crashes
            changes += 1
            statuses = await collect(kafka_bootstrap, kafka["status_topic"], n, timeout=240, distinct="message_id")
        for member in members[2:]:
            assert member.terminate() == 0
    ids = {s["message_id"] for s in statuses}
    duplicates = sum(c - 1 for c in provider.sends.values())
    bound = config["pipeline"]["max_pending_messages"] + config["kafka"]["max_poll_records"]
    print(f"\ngroup changes={changes} lost={n - len(ids)} http_duplicates={duplicates} bound={bound * 3}")
    assert len(ids) == n
    assert watch.backwards == []
    # A clean leave and a join hand over committed work; only the crash can resend in-flight messages.
    assert duplicates <= bound * 3


async def test_revoke_that_outlives_its_deadline_keeps_offsets_monotonic_and_loses_nothing(kafka_bootstrap, tmp_path):
    provider = CountingProvider()
    config, kafka = await prepare_short_revoke(kafka_bootstrap, provider, timeout_s=20, retry={"max_attempts": 2})
    n = 600
    async with group_members(config, tmp_path, 2, provider) as (first, second):
        with OffsetWatch(kafka_bootstrap, kafka["group_id"], kafka["input_topic"], 3) as watch:
            await produce(kafka_bootstrap, kafka["input_topic"], events(n // 2), key_of="message_id")
            first.start()
            await wait_for(lambda: len(provider.sends) >= n // 2, timeout=60, what="the first half sent")
            await wait_for(lambda: watch.last and sum(watch.last.values()) >= n // 2, timeout=30, what="commits")
            provider.mode = "slow"  # requests now hang for 30 s: the next batches stay in flight
            await produce(kafka_bootstrap, kafka["input_topic"], events(n)[n // 2 :], key_of="message_id")
            await wait_for(lambda: provider.requests > n // 2 // 20 + 2, timeout=30, what="requests in flight")
            second.start()  # rebalance: the first member's drain cannot finish within 2.4 s
            await asyncio.sleep(5)
            provider.mode = "ok"
            statuses = await collect(kafka_bootstrap, kafka["status_topic"], n, timeout=120, distinct="message_id")
            await asyncio.sleep(1)
        assert first.terminate() == 0 and second.terminate() == 0
    assert {s["message_id"] for s in statuses} == {f"m{i}" for i in range(n)}
    assert watch.backwards == [], watch.backwards
    assert "outlived the revoke deadline" in first.log.read_text(), "the drain was expected to overrun"


async def test_work_abandoned_at_the_revoke_deadline_is_sent_once_by_the_next_owner(kafka_bootstrap, tmp_path):
    """A member joins while the provider is down: the first member's retries cannot finish before the revoke
    deadline. It abandons them, and once the provider is back every message is sent once and has one status."""
    provider = CountingProvider()
    provider.mode = "error"  # 503 for everything: the batches wait in retry backoff
    retry = {"max_attempts": 50, "backoff_initial_ms": 100, "backoff_max_ms": 300}
    config, kafka = await prepare_short_revoke(kafka_bootstrap, provider, retry=retry)
    n = 600
    async with group_members(config, tmp_path, 2, provider) as (first, second):
        await produce(kafka_bootstrap, kafka["input_topic"], events(n), key_of="message_id")
        first.start()
        await wait_for(lambda: provider.requests >= n // 20, timeout=60, what="every batch tried")
        second.start()  # rebalance: the first member's retries outlive its 2.4 s drain
        await wait_for(
            lambda: "outlived the revoke deadline" in first.log.read_text(), timeout=30, what="the drain overrun"
        )
        await wait_for(lambda: "partitions assigned" in second.log.read_text(), timeout=30, what="the second member")
        provider.mode = "ok"
        statuses = await collect(kafka_bootstrap, kafka["status_topic"], n, timeout=90, distinct="message_id")
        await asyncio.sleep(2)  # anything sent twice would be sent by now
        assert first.terminate() == 0 and second.terminate() == 0
    assert {s["message_id"] for s in statuses} == {f"m{i}" for i in range(n)}
    assert {s["status"] for s in statuses} == {"sent"}
    twice = sorted(ref for ref, count in provider.sends.items() if count > 1)
    assert twice == [], f"{len(twice)} messages sent twice, e.g. {twice[:5]}"
    assert sum(provider.sends.values()) == n
    assert sum((await end_offsets(kafka_bootstrap, kafka["status_topic"], 3)).values()) == n


@pytest.mark.skipif(bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")), reason="needs its own three-broker cluster")
async def test_broker_restarts_lose_nothing(tmp_path):
    cluster = KafkaCluster(brokers=3)
    await asyncio.to_thread(cluster.start)
    provider = CountingProvider(latency=0.02)
    await provider.start()
    service = None
    try:
        bootstrap = cluster.bootstrap_servers
        config, kafka = await prepare(bootstrap, provider, partitions=3)
        n = 10_000
        await produce(bootstrap, kafka["input_topic"], events(n), key_of="message_id")
        service = ServiceProcess(config, tmp_path)
        service.start()
        await wait_for(lambda: len(provider.sends) > 1500, timeout=90, what="flow")
        started = time.monotonic()
        for index in (0, 1):  # node 1 is the first controller and a likely group coordinator
            await asyncio.to_thread(cluster.kill_broker, index)
            await asyncio.sleep(3)
            await asyncio.to_thread(cluster.start_broker, index)
            await asyncio.sleep(2)
        statuses = await collect(bootstrap, kafka["status_topic"], n, timeout=240, distinct="message_id")
        print(f"\nbroker restarts: 2 in {time.monotonic() - started:.0f} s; statuses={len(statuses)}")
        assert {s["message_id"] for s in statuses} == {f"m{i}" for i in range(n)}
        assert service.terminate(60) == 0
    finally:
        if service is not None and service.alive():
            service.kill()
        await provider.stop()
        await asyncio.to_thread(cluster.stop, graceful=False)
