"""The dispatcher's path for providers without batching, against a real aiohttp provider: the workers hand
their statuses over and go on sending while Kafka has not acknowledged them, yet every message counts as in
flight, and its record as not done, until its status is acknowledged."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest
from aiohttp import web
from aiokafka.errors import KafkaTimeoutError, MessageSizeTooLargeError

from consumer.auth import NoSigner
from consumer.dispatcher import Dispatcher
from consumer.intake import Intake
from consumer.sender import AiohttpTransport, ProviderSender, make_session
from consumer.status import Origin
from consumer.templates import CompiledProvider
from consumer.testing import wait_for
from schemas.config import ProviderConfig


class Publisher:
    """A status publisher whose calls wait until `release` is set (Kafka slow or away), and fail with
    `failure(statuses)` when that gives an exception."""

    def __init__(self, failure: Any = None, *, held: bool = False) -> None:
        self.release = asyncio.Event()
        if not held:
            self.release.set()
        self.failure = failure or (lambda statuses: None)
        self.calls: list[list[tuple[bytes, bytes]]] = []
        self.published: list[bytes] = []

    async def publish(self, statuses: Any, dead_letters: Any = (), *, alone: bool = False) -> None:
        self.calls.append(list(statuses))
        await self.release.wait()
        error = self.failure(statuses)
        if error is not None:
            raise error
        self.published += [key for key, _ in statuses]


@pytest.fixture
async def provider(http_server):
    received: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        body = await request.json()
        await asyncio.sleep(0.005)
        received.append(body["ref"])
        return web.json_response({"id": f"p-{body['ref']}"})

    app = web.Application()
    app.router.add_post("/send", handle)
    return await http_server(app), received


@pytest.fixture
async def make_dispatcher(provider):
    url, _ = provider
    session = make_session()
    made: list[Dispatcher] = []

    def make(publisher: Publisher, done: list[Any]) -> tuple[Dispatcher, Intake]:
        config = ProviderConfig.model_validate(
            {
                "url": url + "/send",
                "format": "json",
                "concurrency": 4,
                "payload": {"to": "$$To", "text": "$$Body", "ref": "$$MessageID"},
                "response": {"message_id": "/id"},
            }
        )
        compiled = CompiledProvider("p", config)
        sender = ProviderSender(compiled, AiohttpTransport(session), NoSigner())
        dispatcher = Dispatcher(
            {"p": sender},
            publisher,  # type: ignore[arg-type]
            done.extend,
            linger=0.05,
            publish_retry_backoff=0.02,
        )
        made.append(dispatcher)
        return dispatcher, Intake({"p": compiled})

    yield make
    for dispatcher in made:
        await dispatcher.cancel()
    await session.close()


def submit(dispatcher: Dispatcher, intake: Intake, ids: list[str]) -> None:
    for offset, message_id in enumerate(ids):
        event = {"message_id": message_id, "campaign_id": "c", "provider": "p", "to": "+14155550100", "body": "hi"}
        envelope = intake.accept(None, orjson.dumps(event), Origin("in", 0, offset, 1_700_000_000_000))
        envelope.ticket = message_id  # type: ignore[union-attr]
        dispatcher.submit(envelope)  # type: ignore[arg-type]


async def test_workers_go_on_sending_while_statuses_wait_for_kafka_and_stay_in_flight(provider, make_dispatcher):
    _, received = provider
    publisher = Publisher(held=True)
    done: list[Any] = []
    dispatcher, intake = make_dispatcher(publisher, done)
    ids = [f"m{i}" for i in range(40)]
    submit(dispatcher, intake, ids)
    await wait_for(lambda: len(received) == len(ids), timeout=10, interval=0.01, what="every message sent")
    # Every message was sent while Kafka had not acknowledged a single status.
    assert sorted(received) == sorted(ids)
    # Not one is done: all are in flight until their statuses are acknowledged, so drains wait for them.
    assert done == []
    assert dispatcher.in_flight == len(ids)
    assert not await dispatcher.wait_idle(0.1)
    # One call is with Kafka; what was handed over meanwhile waits for it, to go out in one more call.
    assert len(publisher.calls) == 1
    publisher.release.set()
    assert await dispatcher.wait_idle(5)
    assert sorted(done) == sorted(ids)
    assert dispatcher.in_flight == 0
    assert len(publisher.calls) == 2
    handed = [orjson.loads(value) for call in publisher.calls for _, value in call]
    assert sorted(s["message_id"] for s in handed) == sorted(ids)
    assert {s["status"] for s in handed} == {"sent"}
    assert {s["provider_message_id"] for s in handed} == {f"p-{i}" for i in ids}


async def test_while_kafka_is_away_the_handed_over_statuses_wait_together_and_go_out_together(
    provider, make_dispatcher
):
    _, received = provider
    away = [True]
    publisher = Publisher(lambda statuses: KafkaTimeoutError() if away[0] else None)
    done: list[Any] = []
    dispatcher, intake = make_dispatcher(publisher, done)
    ids = [f"m{i}" for i in range(60)]
    submit(dispatcher, intake, ids)
    await wait_for(lambda: len(received) == len(ids), timeout=10, interval=0.01, what="every message sent")
    await asyncio.sleep(0.2)  # ten backoffs
    failed_calls = len(publisher.calls)
    assert done == []
    assert not dispatcher.publish_healthy
    # One retrying call at a time, not one per message.
    assert failed_calls <= 15
    away[0] = False
    assert await dispatcher.wait_idle(5)
    assert sorted(done) == sorted(ids)
    assert sorted(publisher.published) == sorted(i.encode() for i in ids)
    assert len(publisher.calls) <= failed_calls + 2
    assert dispatcher.in_flight == 0
    assert dispatcher.publish_healthy


async def test_a_status_kafka_refuses_holds_up_only_its_own_message(make_dispatcher):
    def refuse(statuses):
        return MessageSizeTooLargeError() if any(key == b"poison" for key, _ in statuses) else None

    publisher = Publisher(refuse)
    done: list[Any] = []
    dispatcher, intake = make_dispatcher(publisher, done)
    ids = [f"m{i}" for i in range(20)]
    submit(dispatcher, intake, [*ids[:10], "poison", *ids[10:]])
    await wait_for(lambda: sorted(done) == sorted(ids), timeout=10, what="every other message done")
    assert "poison" not in done
    assert dispatcher.in_flight == 1  # its record is not done: its offset is never committed past it
    await asyncio.sleep(0.1)
    assert publisher.published.count(b"poison") == 0
    assert sorted(publisher.published) == sorted(i.encode() for i in ids)  # each once
    submit(dispatcher, intake, ["later"])  # what comes after it is published and done
    await wait_for(lambda: "later" in done, timeout=10, what="a later message done")


async def test_abandoning_work_leaves_handed_over_statuses_undone_and_nothing_in_flight(provider, make_dispatcher):
    _, received = provider
    done: list[Any] = []
    dispatcher, intake = make_dispatcher(Publisher(held=True), done)
    ids = [f"m{i}" for i in range(10)]
    submit(dispatcher, intake, ids)
    await wait_for(lambda: len(received) == len(ids), timeout=10, interval=0.01, what="every message sent")
    await wait_for(lambda: dispatcher.in_flight == len(ids), timeout=5, what="the last status handed over")
    await dispatcher.cancel()  # a drain that ran out of time: the records are read again
    assert dispatcher.in_flight == 0
    assert done == []


async def test_abandoning_work_before_the_publishing_task_took_its_statuses(make_dispatcher):
    done: list[Any] = []
    dispatcher, _ = make_dispatcher(Publisher(), done)
    dispatcher._collect([(b"k", b"{}")], ["ticket"], {("p", "sent"): 1})  # a worker's hand-over
    assert dispatcher.in_flight == 1
    await dispatcher.cancel()  # in the same step: the publishing task never ran
    assert dispatcher.in_flight == 0
    assert done == []
    dispatcher._collect([(b"k2", b"{}")], ["again"], {("p", "sent"): 1})  # and a new hand-over is published
    assert await dispatcher.wait_idle(5)
    assert done == ["again"]


async def test_a_drain_waits_for_acknowledgements_then_abandons_what_outlives_it(provider, make_dispatcher):
    _, received = provider
    publisher = Publisher(held=True)
    done: list[Any] = []
    dispatcher, intake = make_dispatcher(publisher, done)
    submit(dispatcher, intake, ["m0", "m1", "m2"])
    assert await dispatcher.drain(0.3) == 3  # sent, but Kafka never acknowledged: abandoned, read again
    assert received and dispatcher.in_flight == 0 and done == []
    publisher.release.set()
    submit(dispatcher, intake, ["m3", "m4"])
    assert await dispatcher.drain(5) == 0
    assert sorted(done) == ["m3", "m4"]
    # A second stop signal ends the wait at once.
    publisher.release.clear()
    submit(dispatcher, intake, ["m5"])
    interrupt = asyncio.Event()
    interrupt.set()
    assert await dispatcher.drain(60, interrupt) == 1
    assert dispatcher.in_flight == 0
