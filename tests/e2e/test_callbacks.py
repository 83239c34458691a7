"""Delivery reports end to end: messages sent through the real service to a fake provider, then that
provider's documented callbacks fired at the service's operations port, and the statuses read back from Kafka.
"""

from __future__ import annotations

import asyncio
import base64
from collections.abc import AsyncIterator
from typing import Any
from urllib.parse import parse_qsl, urlsplit, urlunsplit

import aiohttp
import orjson
import pytest

from consumer.app import Service
from consumer.callbacks import twilio_signature
from consumer.config import parse_config
from consumer.testing import capture_logs, collect, create_topics, produce
from schemas.events import DeliveryStatus
from tests.e2e.test_operations import samples
from tests.e2e.test_presets import CASES, preset_path
from tests.fakes.providers import FAKES, FakeProvider
from tests.support import FAST_PIPELINE, LOOPBACK_OPS, kafka_section, start_app

pytestmark = pytest.mark.kafka

TOKEN = "cb-s3cret-token"
NUMBERS = ["+919876543201", "+919876543202", "+919876543203"]


class Running:
    """The service with one preset provider whose callbacks need `?token=TOKEN` (BulkSMS: basic auth)."""

    def __init__(self, name: str, fake: FakeProvider, service: Service, bootstrap: str) -> None:
        self.name, self.fake, self.service, self.bootstrap = name, fake, service, bootstrap
        assert service.ops is not None and service.ops.port
        self.base = f"http://127.0.0.1:{service.ops.port}/callbacks/{name}"
        self.http = aiohttp.ClientSession()

    async def fire(
        self, content_type: str, body: bytes, *, token: str | None = TOKEN, signature: str | None = None
    ) -> tuple[int, Any]:
        headers = {"Content-Type": content_type}
        params = {}
        if signature is not None:
            headers["X-Twilio-Signature"] = signature
        elif self.name == "bulksms":
            if token is not None:
                headers["Authorization"] = "Basic " + base64.b64encode(f"hooks:{token}".encode()).decode()
        elif token is not None:
            params["token"] = token
        async with self.http.post(self.base, data=body, headers=headers, params=params) as response:
            return response.status, await response.json()

    async def statuses(self, count: int, timeout: float = 30) -> list[dict[str, Any]]:
        return await collect(self.bootstrap, self.service.config.kafka.status_topic, count, timeout=timeout)


@pytest.fixture
async def running(kafka_bootstrap) -> AsyncIterator[Any]:
    started: list[tuple[Running, asyncio.Task[None], Any]] = []

    async def start(name: str, auth: dict[str, Any] | None = None) -> Running:
        case = CASES[name]
        path, preset_url = preset_path(name, case.env)
        fake = FAKES[name](path, **case.credentials)
        runner, base = await start_app(fake.app())
        url = urlunsplit(urlsplit(preset_url)._replace(scheme="http", netloc=base.removeprefix("http://")))
        if auth is None:
            auth = (
                {"type": "basic", "username": "hooks", "password": TOKEN}
                if name == "bulksms"
                else {"type": "secret", "query": "token", "secret": TOKEN}
            )
        config = parse_config(
            {
                "kafka": kafka_section(kafka_bootstrap),
                "pipeline": FAST_PIPELINE,
                "observability": LOOPBACK_OPS,
                "providers": {name: {"preset": name, "url": url, "callback": {"auth": auth}}},
            },
            env=case.env,
        )
        kafka = config.kafka
        await create_topics(kafka_bootstrap, {kafka.input_topic: 1, kafka.status_topic: 1, kafka.dlq_topic: 1})
        service = Service(config)
        task = asyncio.create_task(service.run())
        for _ in range(200):
            if service.ops is not None and service.ops.port:
                break
            await asyncio.sleep(0.05)
        run = Running(name, fake, service, kafka_bootstrap)
        started.append((run, task, runner))
        events = [
            {
                "message_id": f"{name}-{i}",
                "campaign_id": "spring",
                "provider": name,
                "to": to,
                "body": "Your code is 1234",
                "template_id": "1107161234567890123",
                "replacements": {"sender": "ACME"},
                "metadata": {"i": i},
            }
            for i, to in enumerate(NUMBERS)
        ]
        await produce(kafka_bootstrap, kafka.input_topic, events, partition_of=lambda e: 0)
        sent = await run.statuses(len(events))
        assert [s["status"] for s in sent] == ["sent"] * len(events), sent
        return run

    yield start
    for run, task, runner in started:
        run.service.request_stop()
        await asyncio.wait_for(task, 30)
        await run.http.close()
        await runner.cleanup()


@pytest.mark.parametrize("name", ["bulksms", "exotel", "msg91", "plivo", "sinch", "twilio"])
async def test_a_providers_callbacks_become_delivered_and_undelivered_statuses_of_the_message(running, name):
    """BulkSMS echoes our message id; the others give only their id (MSG91 and Sinch one id per request, told
    apart by the recipient)."""
    run = await running(name)
    for to, delivered in zip(NUMBERS, (True, False, True), strict=True):
        status, body = await run.fire(*run.fake.callback(to, delivered))
        assert status == 200, body
        assert body["published"] == 1
    statuses = await run.statuses(6)
    reports = {s["message_id"]: DeliveryStatus.model_validate(s) for s in statuses[3:]}
    assert set(reports) == {f"{name}-0", f"{name}-1", f"{name}-2"}
    assert reports[f"{name}-0"].status.value == "delivered"
    assert reports[f"{name}-1"].status.value in ("undelivered", "failed")
    for i, to in enumerate(NUMBERS):
        report = reports[f"{name}-{i}"]
        assert (report.campaign_id, report.to, report.provider, report.metadata) == ("spring", to, name, {"i": i})
        assert report.provider_message_id == run.fake.issued[to]
        assert report.source is None and report.reason is not None
    assert TOKEN not in orjson.dumps(statuses).decode()


async def test_refused_repeated_intermediate_and_unknown_callbacks(running):
    run = await running("twilio")
    fake = run.fake
    with capture_logs(secrets=[TOKEN], level="info") as logs:
        # Not authenticated, wrong secret: 401, nothing published.
        assert (await run.fire(*fake.callback(NUMBERS[0]), token=None))[0] == 401
        assert (await run.fire(*fake.callback(NUMBERS[0]), token="wrong"))[0] == 401
        # Malformed: 400.
        assert (await run.fire("application/x-www-form-urlencoded", b"MessageSid=SM1"))[0] == 400
        assert (await run.fire("text/xml", b"<Status/>"))[0] == 400
        # An intermediate status: acknowledged, not published.
        content_type, body = fake.callback(NUMBERS[0])
        status, answer = await run.fire(content_type, body.replace(b"=delivered", b"=sent"))
        assert status == 200 and answer["ignored"] == 1 and answer["published"] == 0
        # Delivered twice: published once.
        assert (await run.fire(*fake.callback(NUMBERS[0])))[1]["published"] == 1
        assert (await run.fire(*fake.callback(NUMBERS[0])))[1] == {
            "published": 0,
            "uncorrelated": 0,
            "duplicate": 1,
            "ignored": 0,
        }
        # A message this instance does not know: published with the provider's id and no message id.
        status, answer = await run.fire(*fake.callback(NUMBERS[1], provider_id="SMunknown"))
        assert status == 200 and answer["uncorrelated"] == 1
    statuses = await run.statuses(3 + 2 + 1, timeout=10)
    assert len(statuses) == 5, statuses
    delivered, missed = (DeliveryStatus.model_validate(s) for s in statuses[3:])
    assert (delivered.message_id, delivered.status.value) == ("twilio-0", "delivered")
    assert (missed.message_id, missed.provider_message_id, missed.campaign_id) == (None, "SMunknown", None)
    assert missed.to == NUMBERS[1]
    text = logs.getvalue()
    assert "callback refused" in text and TOKEN not in text and NUMBERS[0] not in text
    async with run.http.get(run.base.rsplit("/callbacks", 1)[0] + "/metrics") as response:
        m = samples(await response.text())
    count = {
        result: m.get(("sms_callbacks_total", (("provider", "twilio"), ("result", result))), 0)
        for result in ("unauthorized", "malformed", "ignored", "published", "duplicate", "uncorrelated")
    }
    assert count == {"unauthorized": 2, "malformed": 2, "ignored": 1, "published": 1, "duplicate": 1, "uncorrelated": 1}


async def test_twilio_callbacks_signed_with_the_auth_token_are_taken_and_forged_ones_refused(running):
    auth_token = "twilio-auth-t0ken"
    public = "https://hooks.example.com"  # what Twilio calls; a proxy forwards it to the service
    auth = {"type": "twilio_signature", "auth_token": auth_token, "public_url": public}
    run = await running("twilio", auth)
    content_type, body = run.fake.callback(NUMBERS[2], delivered=False)
    fields = dict(parse_qsl(body.decode()))
    called = public + "/callbacks/twilio"
    with capture_logs(secrets=[auth_token], level="info") as logs:
        assert (await run.fire(content_type, body, signature=None))[0] == 401
        forged = twilio_signature("not-the-token", called, fields)
        assert (await run.fire(content_type, body, signature=forged))[0] == 401
        # Signed for the address the request reached, not the one configured: not Twilio's.
        local = twilio_signature(auth_token, run.base, fields)
        assert (await run.fire(content_type, body, signature=local))[0] == 401
        status, answer = await run.fire(content_type, body, signature=twilio_signature(auth_token, called, fields))
    assert status == 200 and answer["published"] == 1
    statuses = await run.statuses(len(NUMBERS) + 1, timeout=10)
    report = DeliveryStatus.model_validate(statuses[-1])
    assert (report.message_id, report.status.value) == ("twilio-2", "undelivered")
    assert auth_token not in logs.getvalue() and "callback refused" in logs.getvalue()
