"""Delivery reports while Kafka is down: the provider gets 503 (so it calls again), never a 2xx for a status
Kafka did not acknowledge, and its next call once Kafka is back is published."""

from __future__ import annotations

import asyncio
import os
import time

import aiohttp
import pytest

from consumer.app import Service
from consumer.config import parse_config
from consumer.devbroker import KafkaCluster
from consumer.testing import collect, create_topics, wait_for
from tests.support import FAST_PIPELINE, LOOPBACK_OPS, kafka_section

pytestmark = [pytest.mark.kafka, pytest.mark.fault]

TOKEN = "outage-token"


@pytest.mark.skipif(bool(os.environ.get("KAFKA_BOOTSTRAP_SERVERS")), reason="stops its own broker")
async def test_callbacks_get_503_while_the_broker_is_down_and_are_published_when_called_again():
    cluster = KafkaCluster(brokers=1)
    await asyncio.to_thread(cluster.start)
    service: Service | None = None
    task: asyncio.Task[None] | None = None
    http = aiohttp.ClientSession()
    try:
        bootstrap = cluster.bootstrap_servers
        kafka = kafka_section(bootstrap)
        config = parse_config(
            {
                "kafka": kafka,
                "pipeline": FAST_PIPELINE,
                "observability": LOOPBACK_OPS,
                "callbacks": {"publish_timeout_s": 3},
                "providers": {
                    "acme": {
                        "url": "http://127.0.0.1:9/unused",
                        "format": "form",
                        "payload": {"to": "$$To", "text": "$$Body"},
                        "callback": {
                            "auth": {"type": "secret", "query": "token", "secret": TOKEN},
                            "message_id": "MessageSid",
                            "status": "MessageStatus",
                            "statuses": {"delivered": "delivered"},
                        },
                    }
                },
            },
            env={},
        )
        await create_topics(bootstrap, {kafka["input_topic"]: 1, kafka["status_topic"]: 1, kafka["dlq_topic"]: 1})
        service = Service(config)
        task = asyncio.create_task(service.run())
        await wait_for(lambda: service is not None and service.ops is not None and service.ops.port, 30, what="ops")
        assert service.ops is not None
        url = f"http://127.0.0.1:{service.ops.port}/callbacks/acme"

        async def fire(sid: str) -> int:
            body = {"MessageSid": sid, "MessageStatus": "delivered"}
            async with http.post(url, data=body, params={"token": TOKEN}) as response:
                return response.status

        await wait_for(lambda: _fires_ok(fire, "SM-before"), 30, what="a callback published")
        await asyncio.to_thread(cluster.kill_broker, 0)
        started = time.monotonic()
        codes = await asyncio.gather(*(fire(f"SM-down-{i}") for i in range(3)))
        assert codes == [503, 503, 503]
        assert time.monotonic() - started < 3 + 2  # the publish timeout, not the provider's patience
        await asyncio.to_thread(cluster.start_broker, 0)
        # The provider calls again until it gets a 2xx.
        for i in range(3):
            await wait_for(lambda i=i: _fires_ok(fire, f"SM-down-{i}"), 60, what="a callback published again")
        statuses = await collect(bootstrap, kafka["status_topic"], 4, timeout=30, distinct="provider_message_id")
        published = {s["provider_message_id"] for s in statuses if s["status"] == "delivered"}
        assert published == {"SM-before", "SM-down-0", "SM-down-1", "SM-down-2"}
    finally:
        await http.close()
        if service is not None and task is not None:
            service.request_stop()
            await asyncio.wait_for(task, 60)
        await asyncio.to_thread(cluster.stop, graceful=False)


async def _fires_ok(fire, sid: str) -> bool:
    try:
        return await fire(sid) == 200
    except aiohttp.ClientError:
        return False
