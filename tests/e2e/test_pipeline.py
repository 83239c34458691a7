"""End to end on a real Kafka broker and a real HTTP provider: send-requests in, statuses out, offsets right."""

from __future__ import annotations

import asyncio
from collections import Counter
from typing import Any

import orjson
import pytest
from aiohttp import web

from consumer.app import Service
from consumer.config import parse_config
from consumer.testing import collect, committed_offsets, create_topics, end_offsets, produce, wait_for
from schemas.events import DLQ_HEADERS, DeliveryStatus
from tests.support import FAST_PIPELINE, LOOPBACK_OPS, batch_provider, kafka_section, start_app

pytestmark = pytest.mark.kafka

PARTITIONS = 3


class RecordingProvider:
    """A JSON batch provider that records every request and can hold back one campaign's requests."""

    def __init__(self) -> None:
        self.requests: list[dict[str, Any]] = []
        self.held_campaign: str | None = None
        self.release = asyncio.Event()
        self.holding = 0

    async def handle(self, request: web.Request) -> web.Response:
        doc = orjson.loads(await request.read())
        if request.headers.get("Content-Type", "").split(";")[0] != "application/json":
            return web.json_response({"error": "json only"}, status=415)
        if doc["campaign"] == self.held_campaign:
            self.holding += 1
            await self.release.wait()
        self.requests.append(doc)
        results = [{"id": f"pm-{m['ref']}", "status": "accepted"} for m in doc["messages"]]
        return web.json_response({"results": results})


@pytest.fixture
async def provider():
    recorder = RecordingProvider()
    app = web.Application()
    app.router.add_post("/send", recorder.handle)
    runner, base = await start_app(app)
    recorder.url = base + "/send"  # type: ignore[attr-defined]
    yield recorder
    recorder.release.set()
    await runner.cleanup()


def make_config(bootstrap: str, url: str, batch_size: int = 100, linger_ms: int = 50) -> Any:
    return parse_config(
        {
            "kafka": kafka_section(bootstrap),
            "pipeline": {**FAST_PIPELINE, "linger_ms": linger_ms},
            "observability": LOOPBACK_OPS,
            "providers": {"batcher": batch_provider(url, batch_size)},
        },
        env={},
    )


def event(i: int, campaign: str, **extra: Any) -> dict[str, Any]:
    doc = {
        "message_id": f"m-{i}",
        "campaign_id": campaign,
        "provider": "batcher",
        "to": f"+1415{i:07d}",
        "body": f"message {i} ✓",
        "metadata": {"n": i},
    }
    doc.update(extra)
    return doc


async def start(config: Any) -> tuple[Service, asyncio.Task[None]]:
    kafka = config.kafka
    await create_topics(
        kafka.bootstrap_servers, {kafka.input_topic: PARTITIONS, kafka.status_topic: 3, kafka.dlq_topic: 1}
    )
    service = Service(config)
    return service, asyncio.create_task(service.run())


async def stop(service: Service, task: asyncio.Task[None]) -> None:
    service.request_stop()
    await asyncio.wait_for(task, 30)


async def test_ten_thousand_messages_get_exactly_one_status_each(kafka_bootstrap, provider):
    config = make_config(kafka_bootstrap, provider.url)
    kafka = config.kafka
    service, task = await start(config)
    n = 10_000
    campaigns = ["spring", "otp", "news", "promo"]
    events = [event(i, campaigns[i % len(campaigns)]) for i in range(n)]
    await produce(kafka_bootstrap, kafka.input_topic, events, partition_of=lambda e: int(e["message_id"][2:]) % 3)
    statuses = await collect(kafka_bootstrap, kafka.status_topic, n, timeout=120)
    ends = await end_offsets(kafka_bootstrap, kafka.input_topic, PARTITIONS)
    await wait_for(
        lambda: _committed_equals(kafka_bootstrap, kafka, ends),
        timeout=20,
        what="offsets committed to the end of every partition",
    )
    await stop(service, task)

    assert len(statuses) == n
    counts = Counter(s["message_id"] for s in statuses)
    assert set(counts) == {f"m-{i}" for i in range(n)} and set(counts.values()) == {1}
    parsed = [DeliveryStatus.model_validate(s) for s in statuses]
    assert {s.status.value for s in parsed} == {"sent"}
    by_id = {s.message_id: s for s in parsed}
    sample = by_id["m-4242"]
    assert sample.provider_message_id == "pm-m-4242" and sample.metadata == {"n": 4242}
    assert sample.campaign_id == "news" and sample.attempts == 1 and sample.source.partition == 4242 % 3
    assert sample.created_at is not None and sample.completed_at >= sample.created_at

    # The provider saw every message once, in batches of at most 100 that never mix campaigns.
    sizes = [len(r["messages"]) for r in provider.requests]
    assert sum(sizes) == n and max(sizes) == 100 and all(0 < s <= 100 for s in sizes)
    assert sizes.count(100) >= 0.9 * len(sizes)
    for request in provider.requests:
        numbers = {int(m["ref"][2:]) % len(campaigns) for m in request["messages"]}
        assert numbers == {campaigns.index(request["campaign"])}
    # Batch facts in the statuses agree with what the provider received.
    assert Counter(s.batch_size for s in parsed if s.batch_size == 100)[100] == sizes.count(100) * 100


async def _committed_equals(bootstrap: str, kafka: Any, ends: dict[int, Any]) -> bool:
    committed = await committed_offsets(bootstrap, kafka.group_id, kafka.input_topic, PARTITIONS)
    return committed == ends


async def test_offsets_never_pass_a_message_whose_status_is_not_published(kafka_bootstrap, provider):
    # Batches of 30 and a long linger: the 30 held messages (10 per partition) travel in one batch that mixes
    # all three partitions, while later offsets of the same partitions finish first.
    config = make_config(kafka_bootstrap, provider.url, batch_size=30, linger_ms=5000)
    kafka = config.kafka
    provider.held_campaign = "slow"
    service, task = await start(config)
    # Per partition: offsets 0..9 belong to the held campaign, 10..59 to a fast one.
    events = []
    for p in range(PARTITIONS):
        events += [event(p * 1000 + i, "slow" if i < 10 else "fast") for i in range(60)]
    await produce(kafka_bootstrap, kafka.input_topic, events, partition_of=lambda e: int(e["message_id"][2:]) // 1000)
    fast = await collect(kafka_bootstrap, kafka.status_topic, 150, timeout=60)
    assert len(fast) == 150 and {s["campaign_id"] for s in fast} == {"fast"}
    await wait_for(lambda: provider.holding >= 1, timeout=10, what="the held batch")
    # Give the committer several intervals: it must not move past the held messages.
    for _ in range(5):
        await service.source.commit()  # type: ignore[union-attr]
        committed = await committed_offsets(kafka_bootstrap, kafka.group_id, kafka.input_topic, PARTITIONS)
        assert all(offset in (None, 0) for offset in committed.values()), committed
    provider.release.set()
    statuses = await collect(kafka_bootstrap, kafka.status_topic, 180, timeout=60)
    assert Counter(s["message_id"] for s in statuses).most_common(1)[0][1] == 1 and len(statuses) == 180
    held = [r for r in provider.requests if r["campaign"] == "slow"]
    assert len(held) == 1 and {int(m["ref"][2:]) // 1000 for m in held[0]["messages"]} == {0, 1, 2}
    await wait_for(
        lambda: _committed_equals(kafka_bootstrap, kafka, {p: 60 for p in range(PARTITIONS)}),
        timeout=20,
        what="offsets at the end after release",
    )
    await stop(service, task)


async def test_invalid_events_are_rejected_dead_lettered_and_the_consumer_keeps_going(kafka_bootstrap, provider):
    config = make_config(kafka_bootstrap, provider.url, batch_size=5, linger_ms=20)
    kafka = config.kafka
    service, task = await start(config)
    bad: list[Any] = [
        b"{definitely not json",
        b"\xff\xfe invalid utf-8",
        {"message_id": "bad-missing-to", "campaign_id": "c", "provider": "batcher", "body": "x"},
        {"message_id": "bad-provider", "campaign_id": "c", "provider": "nope", "to": "+14155550100", "body": "x"},
        {"message_id": "bad-number", "campaign_id": "c", "provider": "batcher", "to": "12345", "body": "x"},
    ]
    good = [event(i, "c") for i in range(20)]
    await produce(kafka_bootstrap, kafka.input_topic, [*good[:10], *bad, *good[10:]], partition_of=lambda e: 0)
    statuses = await collect(kafka_bootstrap, kafka.status_topic, 23, timeout=60)
    dead = await collect(kafka_bootstrap, kafka.dlq_topic, 5, timeout=30, with_headers=True)
    await wait_for(
        lambda: _committed_equals(kafka_bootstrap, kafka, {0: 25, 1: None, 2: None}),
        timeout=20,
        what="offsets committed past the invalid events",
    )
    await stop(service, task)

    by_id = {s["message_id"]: s for s in statuses}
    assert len(statuses) == 23
    assert all(by_id[f"m-{i}"]["status"] == "sent" for i in range(20))
    assert (
        by_id["bad-missing-to"]["status"] == "rejected" and by_id["bad-missing-to"]["reason"]["code"] == "invalid_event"
    )
    assert "to" in by_id["bad-missing-to"]["reason"]["message"]
    assert by_id["bad-provider"]["reason"]["code"] == "unknown_provider"
    assert by_id["bad-number"]["reason"]["code"] == "invalid_event"
    assert len(dead) == 5
    raw_values = {d[3] for d in dead}
    assert bad[0] in raw_values and bad[1] in raw_values
    codes = Counter(d[2][DLQ_HEADERS["error_code"]] for d in dead)
    assert codes == {b"invalid_json": 2, b"invalid_event": 2, b"unknown_provider": 1}
    assert all(d[2][DLQ_HEADERS["source_topic"]] == kafka.input_topic.encode() for d in dead)
