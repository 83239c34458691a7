"""Provider faults through the real pipeline: outages, throttling, malformed input floods."""

from __future__ import annotations

import asyncio
import random
from collections import Counter

import pytest

from consumer.testing import collect, create_topics, produce, wait_for
from tests.faults.harness import CountingProvider, ServiceProcess, service_config

pytestmark = [pytest.mark.kafka, pytest.mark.fault]


def events(n: int, prefix: str = "m") -> list[dict[str, str]]:
    return [
        {"message_id": f"{prefix}{i}", "campaign_id": f"c{i % 3}", "provider": "p", "to": f"+1415{i:07d}", "body": "hi"}
        for i in range(n)
    ]


async def setup(kafka_bootstrap, counting, **overrides):
    config = service_config(kafka_bootstrap, counting.url, **overrides)
    kafka = config["kafka"]
    await create_topics(kafka_bootstrap, {kafka["input_topic"]: 3, kafka["status_topic"]: 3, kafka["dlq_topic"]: 1})
    return config, kafka


async def metric(service: ServiceProcess, name: str) -> float:
    """Read one metric from the service's /metrics (summed over labels)."""
    import re

    import aiohttp

    port = None
    for line in service.log.read_text().splitlines():
        match = re.search(
            r'"operations server listening".*"port": ?(\d+)|"port": ?(\d+).*"operations server listening"', line
        )
        if match:
            port = int(match.group(1) or match.group(2))
    assert port, "the service did not log its operations port"
    async with aiohttp.ClientSession() as http, http.get(f"http://127.0.0.1:{port}/metrics") as r:
        text = await r.text()
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name) and not line.startswith("#"):
            total += float(line.rsplit(" ", 1)[1])
    return total


async def test_provider_outage_then_recovery_loses_nothing_and_memory_stays_flat(kafka_bootstrap, tmp_path):
    provider = CountingProvider()
    await provider.start()
    config, kafka = await setup(
        kafka_bootstrap,
        provider,
        provider={"breaker": {"failure_threshold": 3, "open_s": 0.5, "max_open_s": 2}},
        pipeline={"max_pending_messages": 500},
    )
    service = ServiceProcess(config, tmp_path)
    n = 5000
    try:
        provider.mode = "error"
        await produce(kafka_bootstrap, kafka["input_topic"], events(n))
        service.start()
        await wait_for(lambda: provider.requests >= 10, timeout=60, what="requests during the outage")
        # An outage: 500s, then a black hole (timeouts), then refused connections; the breaker must be open.
        await asyncio.sleep(2)
        rss_during = service.rss_kb()
        opened = await metric(service, "sms_breaker_opened_total")
        assert opened >= 1
        requests_in_outage = provider.requests
        await asyncio.sleep(2)
        # The breaker keeps the request rate low while the provider is down (probes only).
        assert provider.requests - requests_in_outage < 20
        provider.mode = "ok"
        statuses = await collect(kafka_bootstrap, kafka["status_topic"], n, timeout=120, distinct="message_id")
        rss_after = service.rss_kb()
        assert service.terminate() == 0
    finally:
        if service.alive():
            service.kill()
        await provider.stop()
    ids = {s["message_id"] for s in statuses}
    assert len(ids) == n
    final = {}
    for s in statuses:
        final[s["message_id"]] = s["status"]
    assert Counter(final.values()) == {"sent": n}
    assert len(provider.sends) == n
    print(f"\noutage: rss during={rss_during / 1024:.0f} MB after={rss_after / 1024:.0f} MB breaker opened={opened}")
    assert rss_after < 400 * 1024


async def test_retry_after_slows_the_service_to_the_providers_pace(kafka_bootstrap, tmp_path):
    provider = CountingProvider()
    await provider.start()
    config, kafka = await setup(kafka_bootstrap, provider, provider={"retry": {"max_attempts": 20}})
    service = ServiceProcess(config, tmp_path)
    try:
        provider.mode = "throttle"
        provider.retry_after = "1"
        await produce(kafka_bootstrap, kafka["input_topic"], events(200))
        service.start()
        await wait_for(lambda: provider.requests >= 1, timeout=60, what="the first request")
        # Requests already in flight when the first 429 came back land in the first second: measure after it.
        await asyncio.sleep(1.5)
        start = provider.requests
        await asyncio.sleep(3.2)
        throttled = provider.requests - start
        # Ten batches retrying on their own would make dozens of requests in 3 s; the provider-wide pause lets
        # one probe through per Retry-After period.
        print(f"\nthrottled requests in 3.2 s: {throttled}")
        assert throttled <= 5, throttled
        provider.mode = "ok"
        statuses = await collect(kafka_bootstrap, kafka["status_topic"], 200, timeout=60, distinct="message_id")
        assert {s["status"] for s in statuses} == {"sent"}
        assert service.terminate() == 0
    finally:
        if service.alive():
            service.kill()
        await provider.stop()


async def test_malformed_flood_is_rejected_while_valid_traffic_continues(kafka_bootstrap, tmp_path):
    provider = CountingProvider()
    await provider.start()
    config, kafka = await setup(
        kafka_bootstrap,
        provider,
        provider={
            "payload": {
                "campaign": "$$CampaignID",
                "tag": "$$tag",
                "messages": [{"to": "$$To", "text": "$$Body", "ref": "$$MessageID"}],
            }
        },
    )
    rng = random.Random(3)
    bad: list[bytes | dict] = []
    for i in range(300):
        kind = i % 6
        if kind == 0:
            bad.append(bytes(rng.getrandbits(8) for _ in range(rng.randint(1, 200))))
        elif kind == 1:
            bad.append({"message_id": f"bad{i}", "campaign_id": 5, "provider": "p", "to": "+14155550100"})
        elif kind == 2:
            bad.append(
                {
                    "message_id": f"bad{i}",
                    "campaign_id": "c",
                    "provider": "p",
                    "to": "+1415",
                    "body": "x" * 200_000,
                    "replacements": {"tag": "t"},
                }
            )
        elif kind == 3:
            bad.append(b'{"message_id": "bad' + str(i).encode() + b'", "body": "\xc3\x28"}')
        elif kind == 4:
            bad.append(
                {"message_id": f"bad{i}", "campaign_id": "c", "provider": "ghost", "to": "+14155550100", "body": "x"}
            )
        else:
            bad.append(
                {"message_id": f"bad{i}", "campaign_id": "c", "provider": "p", "to": "+14155550100", "body": "x"}
            )
    good = [dict(e, replacements={"tag": "t"}) for e in events(300, "ok")]
    mixed: list[bytes | dict] = []
    for pair in zip(bad, good, strict=True):
        mixed += pair
    service = ServiceProcess(config, tmp_path)
    try:
        await produce(kafka_bootstrap, kafka["input_topic"], mixed, key_of=None)
        service.start()
        dead = await collect(kafka_bootstrap, kafka["dlq_topic"], 300, timeout=90)
        statuses = await collect(kafka_bootstrap, kafka["status_topic"], 300 + 200, timeout=90, distinct="message_id")
        assert service.alive()
        assert service.terminate() == 0
    finally:
        if service.alive():
            service.kill()
        await provider.stop()
    assert len(dead) == 300
    by_id = {s["message_id"]: s for s in statuses}
    assert all(by_id[f"ok{i}"]["status"] == "sent" for i in range(300))
    rejected = [s for s in statuses if s["status"] == "rejected"]
    codes = Counter(s["reason"]["code"] for s in rejected)
    assert codes["missing_replacement"] == 50 and codes["unknown_provider"] == 50
    assert all(s["message_id"].startswith("bad") for s in rejected)
