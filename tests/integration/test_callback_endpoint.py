"""The delivery-report endpoint over real HTTP, with a publisher whose acknowledgements the test controls:
each callback is answered only after its publish ends, and a failed or late publish answers 503 so the
provider calls again (the Kafka side, and the joining of concurrent publishes, are covered elsewhere)."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

import aiohttp
import orjson
import pytest
from aiohttp import web
from prometheus_client import CollectorRegistry

from consumer.callback_endpoint import CallbackEndpoint
from consumer.metrics import Metrics
from schemas.config import CallbackConfig, CallbackSettings
from tests.support import start_app

TOKEN = "endpoint-token"


class Publisher:
    """Records every publish; each waits for `release` (set by default) and fails while `failing`."""

    def __init__(self) -> None:
        self.calls: list[list[tuple[bytes, bytes]]] = []
        self.release = asyncio.Event()
        self.release.set()
        self.failing = False

    async def publish(
        self, statuses: Sequence[tuple[bytes, bytes]], dead_letters: Sequence[Any] = (), *, alone: bool = False
    ) -> None:
        self.calls.append(list(statuses))
        await self.release.wait()
        if self.failing:
            raise ConnectionError("broker unreachable")

    def published_ids(self) -> list[str]:
        return [orjson.loads(value)["provider_message_id"] for call in self.calls for _, value in call]


class Endpoint:
    def __init__(self, endpoint: CallbackEndpoint, publisher: Publisher, base: str, metrics: Metrics) -> None:
        self.endpoint, self.publisher, self.base, self.metrics = endpoint, publisher, base, metrics
        self.http = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))

    async def fire(self, sid: str) -> tuple[int, dict[str, Any]]:
        body = {"MessageSid": sid, "To": "+14155550100", "MessageStatus": "delivered"}
        async with self.http.post(f"{self.base}/callbacks/acme", data=body, params={"token": TOKEN}) as response:
            return response.status, await response.json()

    def counted(self, result: str) -> float:
        return self.metrics.callbacks.labels("acme", result).value


@pytest.fixture
async def endpoint() -> AsyncIterator[Endpoint]:
    config = CallbackConfig.model_validate(
        {
            "auth": {"type": "secret", "query": "token", "secret": TOKEN},
            "message_id": "MessageSid",
            "recipient": "To",
            "status": "MessageStatus",
            "statuses": {"delivered": "delivered"},
        }
    )
    metrics = Metrics(CollectorRegistry())
    callbacks = CallbackEndpoint({"acme": config}, CallbackSettings(publish_timeout_s=1.0), metrics)
    publisher = Publisher()
    callbacks.attach(publisher)  # type: ignore[arg-type]
    app = web.Application()
    app.router.add_routes(callbacks.routes())
    runner, base = await start_app(app)
    running = Endpoint(callbacks, publisher, base, metrics)
    yield running
    await running.http.close()
    await runner.cleanup()


async def test_callbacks_are_answered_only_after_their_statuses_are_acknowledged(endpoint):
    publisher = endpoint.publisher
    publisher.release.clear()
    pending = [asyncio.create_task(endpoint.fire(f"SM{i}")) for i in range(101)]
    await asyncio.sleep(0.5)
    assert len(publisher.calls) == 101 and not any(t.done() for t in pending)  # held until Kafka acknowledges
    publisher.release.set()
    answers = await asyncio.gather(*pending)
    assert all(code == 200 and body["uncorrelated"] == 1 for code, body in answers)
    assert sorted(publisher.published_ids()) == sorted(f"SM{i}" for i in range(101))
    assert endpoint.counted("uncorrelated") == 101


async def test_a_failed_publish_answers_503_and_the_provider_s_next_call_publishes(endpoint):
    publisher = endpoint.publisher
    publisher.failing = True
    answers = await asyncio.gather(*(endpoint.fire(f"SM{i}") for i in range(5)))
    assert [code for code, _ in answers] == [503] * 5
    assert endpoint.counted("publish_failed") == 5
    publisher.failing = False
    # Not remembered as published: the same callbacks again are published, not dropped as repeats.
    answers = await asyncio.gather(*(endpoint.fire(f"SM{i}") for i in range(5)))
    assert [(code, body["uncorrelated"]) for code, body in answers] == [(200, 1)] * 5
    assert (await endpoint.fire("SM0"))[1]["duplicate"] == 1


async def test_a_publish_kafka_does_not_acknowledge_in_time_answers_503_within_the_timeout(endpoint):
    publisher = endpoint.publisher
    publisher.release.clear()
    started = time.monotonic()
    first = asyncio.create_task(endpoint.fire("SM-late-1"))
    await asyncio.sleep(0.5)
    # Arrives while the first publish hangs: its own deadline counts from its arrival, not from its publish.
    second = asyncio.create_task(endpoint.fire("SM-late-2"))
    assert (await first)[0] == 503
    assert time.monotonic() - started < 1.5
    assert (await second)[0] == 503
    assert time.monotonic() - started < 2.0
    publisher.release.set()
    assert (await endpoint.fire("SM-late-1"))[0] == 200
