"""Crash safety: SIGKILL the service at random points while messages flow; nothing is lost."""

from __future__ import annotations

import asyncio
import os
import random
import time
from collections import Counter

import pytest

from consumer.testing import collect, create_topics, produce
from tests.faults.harness import CountingProvider, ServiceProcess, service_config

pytestmark = [pytest.mark.kafka, pytest.mark.fault]

KILLS = int(os.environ.get("SMS_FAULT_KILLS", "5"))
MESSAGES = int(os.environ.get("SMS_FAULT_MESSAGES", "20000"))


async def test_sigkill_during_flow_loses_nothing_and_duplicates_stay_bounded(kafka_bootstrap, tmp_path):
    provider = CountingProvider(latency=0.03)
    await provider.start()
    config = service_config(kafka_bootstrap, provider.url)
    kafka = config["kafka"]
    await create_topics(kafka_bootstrap, {kafka["input_topic"]: 3, kafka["status_topic"]: 3, kafka["dlq_topic"]: 1})
    events = [
        {"message_id": f"m{i}", "campaign_id": f"c{i % 5}", "provider": "p", "to": f"+1415{i:07d}", "body": "hi"}
        for i in range(MESSAGES)
    ]
    await produce(kafka_bootstrap, kafka["input_topic"], events, key_of="message_id")
    service = ServiceProcess(config, tmp_path)
    rng = random.Random(int(os.environ.get("SMS_FAULT_SEED", "7")))
    kills = 0
    try:
        while kills < KILLS:
            service.start()
            before = sum(provider.sends.values())
            # Kill once the service is mid-flow: some sends happened since it started, at a random extra delay.
            deadline = time.monotonic() + 60
            while sum(provider.sends.values()) - before < 200 and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
                service.rss_kb()
            await asyncio.sleep(rng.uniform(0.0, 1.0))
            if len(provider.sends) >= MESSAGES:
                break  # everything went out before this kill: the remaining kills would prove nothing more
            service.kill()
            kills += 1
        service.start()
        statuses = await collect(kafka_bootstrap, kafka["status_topic"], MESSAGES, timeout=300, distinct="message_id")
        ids = {s["message_id"] for s in statuses}
        assert service.terminate() == 0
    finally:
        if service.alive():
            service.kill()
        await provider.stop()

    missing = MESSAGES - len(ids)
    http_duplicates = sum(n - 1 for n in provider.sends.values() if n > 1)
    status_duplicates = len(statuses) - len(ids)
    bound_per_kill = config["pipeline"]["max_pending_messages"] + config["kafka"]["max_poll_records"]
    print(
        f"\ncrash test: messages={MESSAGES} kills={kills} lost={missing} http_duplicates={http_duplicates} "
        f"status_duplicates={status_duplicates} bound={kills * bound_per_kill} "
        f"peak_rss_mb={service.peak_rss_kb / 1024:.0f}"
    )
    assert kills >= min(KILLS, 1)
    assert missing == 0, f"{missing} messages have no status"
    assert len(provider.sends) == MESSAGES, "every message reached the provider"
    assert {s["status"] for s in statuses} == {"sent"}
    assert http_duplicates <= kills * bound_per_kill
    assert Counter(provider.sends.values()).most_common(1)[0][0] == 1  # most messages were sent exactly once
