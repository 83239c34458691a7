"""The dispatcher's path for providers without batching, against a real aiohttp provider: the workers hand
their statuses over and go on sending while Kafka has not acknowledged them, yet every message counts as in
flight, and its record as not done, until its status is acknowledged."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web

from consumer.auth import NoSigner
from consumer.dispatcher import Dispatcher
from consumer.intake import Intake
from consumer.sender import AiohttpTransport, ProviderSender, make_session
from consumer.status import Origin
from consumer.templates import CompiledProvider
from consumer.testing import wait_for
from schemas.config import ProviderConfig

CONCURRENCY = 4


class HeldPublisher:
    """A status publisher whose calls wait until `release` is set (Kafka slow or away)."""

    def __init__(self) -> None:
        self.release = asyncio.Event()
        self.calls: list[list[tuple[bytes, bytes]]] = []

    async def publish(self, statuses: Any, dead_letters: Any = (), *, alone: bool = False) -> None:
        self.calls.append(list(statuses))
        await self.release.wait()


@pytest.fixture
async def provider(http_server):
    received: list[str] = []
    in_flight = [0, 0]  # now, most at once

    async def handle(request: web.Request) -> web.Response:
        in_flight[0] += 1
        in_flight[1] = max(in_flight[1], in_flight[0])
        try:
            body = await request.json()
            await asyncio.sleep(0.005)
            received.append(body["ref"])
            return web.json_response({"id": f"p-{body['ref']}"})
        finally:
            in_flight[0] -= 1

    app = web.Application()
    app.router.add_post("/send", handle)
    return await http_server(app), received, in_flight


async def test_workers_go_on_sending_while_statuses_wait_for_kafka_and_stay_in_flight(provider):
    url, received, in_flight = provider
    config = ProviderConfig.model_validate(
        {
            "url": url + "/send",
            "format": "json",
            "concurrency": CONCURRENCY,
            "payload": {"to": "$$To", "text": "$$Body", "ref": "$$MessageID"},
            "response": {"message_id": "/id"},
        }
    )
    compiled = CompiledProvider("p", config)
    session = make_session()
    publisher = HeldPublisher()
    done: list[Any] = []
    dispatcher = Dispatcher(
        {"p": ProviderSender(compiled, AiohttpTransport(session), NoSigner())},
        publisher,  # type: ignore[arg-type]
        done.extend,
        linger=0.05,
    )
    intake = Intake({"p": compiled})
    count = 40
    try:
        for i in range(count):
            event = {"message_id": f"m{i}", "campaign_id": "c", "provider": "p", "to": "+14155550100", "body": "hi"}
            envelope = intake.accept(None, orjson.dumps(event), Origin("in", 0, i, 1_700_000_000_000))
            envelope.ticket = i  # type: ignore[union-attr]
            dispatcher.submit(envelope)  # type: ignore[arg-type]
        await wait_for(lambda: len(received) == count, timeout=10, interval=0.01, what="every message sent")
        # Every message was sent, none waited for Kafka, and no more than the concurrency went at once.
        assert sorted(received) == sorted(f"m{i}" for i in range(count))
        assert in_flight[1] <= CONCURRENCY
        # Not one is done: all are in flight until their statuses are acknowledged, so drains wait for them.
        assert done == []
        assert dispatcher.in_flight == count
        assert not await dispatcher.wait_idle(0.1)
        handed = [orjson.loads(value) for call in publisher.calls for _, value in call]
        assert sorted(s["message_id"] for s in handed) == sorted(f"m{i}" for i in range(count))
        assert {s["status"] for s in handed} == {"sent"}
        assert {s["provider_message_id"] for s in handed} == {f"p-m{i}" for i in range(count)}
        # Fewer publishes than messages: statuses handed over together go to Kafka together.
        assert len(publisher.calls) < count
        publisher.release.set()
        assert await dispatcher.wait_idle(5)
        assert sorted(done) == list(range(count))
        assert dispatcher.in_flight == 0
    finally:
        await dispatcher.cancel()
        await session.close()


async def test_abandoning_work_leaves_handed_over_statuses_undone_and_nothing_in_flight(provider):
    url, received, _ = provider
    config = ProviderConfig.model_validate(
        {
            "url": url + "/send",
            "format": "json",
            "concurrency": CONCURRENCY,
            "payload": {"to": "$$To", "text": "$$Body", "ref": "$$MessageID"},
        }
    )
    compiled = CompiledProvider("p", config)
    session = make_session()
    done: list[Any] = []
    dispatcher = Dispatcher(
        {"p": ProviderSender(compiled, AiohttpTransport(session), NoSigner())},
        HeldPublisher(),  # type: ignore[arg-type]
        done.extend,
        linger=0.05,
    )
    intake = Intake({"p": compiled})
    try:
        for i in range(10):
            event = {"message_id": f"m{i}", "campaign_id": "c", "provider": "p", "to": "+14155550100", "body": "hi"}
            envelope = intake.accept(None, orjson.dumps(event), Origin("in", 0, i, 1_700_000_000_000))
            envelope.ticket = i  # type: ignore[union-attr]
            dispatcher.submit(envelope)  # type: ignore[arg-type]
        await wait_for(lambda: len(received) == 10, timeout=10, interval=0.01, what="every message sent")
        await asyncio.sleep(0)  # the last worker hands its status over
        assert dispatcher.in_flight == 10
        await dispatcher.cancel()  # a drain that ran out of time: the records are read again
        assert dispatcher.in_flight == 0
        assert done == []
    finally:
        await session.close()
