"""Every shipped preset end to end: send-requests on a real Kafka broker, the real service, and a fake of the
provider that checks requests the way the provider documents them and answers in its documented shapes.

Each run sends one campaign that batches (with, where the provider reports per-number results, one number
the provider refuses on its own) and one campaign whose sender (or template) the provider refuses as a whole.
"""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import orjson
import pytest
from aiohttp import web

from consumer.app import Service
from consumer.config import interpolate, load_preset, parse_config
from consumer.segments import message_facts
from consumer.testing import collect, create_topics, produce
from schemas.events import DeliveryStatus
from tests.fakes.providers import BLOCKED, FAKES, FakeProvider, invalid
from tests.support import FAST_PIPELINE, LOOPBACK_OPS, kafka_section, start_app

pytestmark = pytest.mark.kafka

MAIN_BODY = "Spring sale starts now ✓ 20% off"  # UCS-2, one SMS
BLOCKED_BODY = "Hello {name}, see you at 10"  # GSM-7 with extension characters
TEMPLATE_ID = "1107161234567890123"


@dataclass(frozen=True)
class Case:
    """How one preset is run: its environment, what its fake expects, and what the statuses must say."""

    env: dict[str, str]
    credentials: dict[str, str]
    batched: bool
    record_code: str | None
    """Reason code of a number refused on its own; None: the provider reports no per-number result."""
    blocked_by_template: bool = False
    extra: dict[str, Any] = field(default_factory=dict)


CASES: dict[str, Case] = {
    "bulksms": Case(
        {"BULKSMS_USERNAME": "acme", "BULKSMS_PASSWORD": "bulk-s3cret-pw"},
        {"username": "acme", "password": "bulk-s3cret-pw"},
        batched=True,
        record_code="provider_record_refused",
    ),
    "exotel": Case(
        {"EXOTEL_API_KEY": "exo-key", "EXOTEL_API_TOKEN": "exo-s3cret-token", "EXOTEL_ACCOUNT_SID": "acme1"},
        {"username": "exo-key", "password": "exo-s3cret-token"},
        batched=True,
        record_code="provider_record_refused",
    ),
    "msg91": Case(
        {"MSG91_AUTHKEY": "msg91-s3cret-key"},
        {"authkey": "msg91-s3cret-key"},
        batched=True,
        record_code=None,
        blocked_by_template=True,
    ),
    "nimbus": Case(
        {"NIMBUS_USER_ID": "acme", "NIMBUS_PASSWORD": "nimbus-s3cret-pw", "NIMBUS_ENTITY_ID": "1101000000000000"},
        {"user": "acme", "password": "nimbus-s3cret-pw"},
        batched=False,
        record_code="provider_refused",
    ),
    "plivo": Case(
        {"PLIVO_AUTH_ID": "MAACME", "PLIVO_AUTH_TOKEN": "plivo-s3cret-token"},
        {"auth_id": "MAACME", "auth_token": "plivo-s3cret-token"},
        batched=True,
        record_code="provider_record_refused",
    ),
    "smsindiahub": Case(
        {"SMSINDIAHUB_USER": "acme", "SMSINDIAHUB_PASSWORD": "sih-s3cret-pw"},
        {"user": "acme", "password": "sih-s3cret-pw"},
        batched=True,
        record_code="provider_record_missing",
    ),
    "textlocal": Case(
        {"TEXTLOCAL_API_KEY": "tl-s3cret-key"},
        {"apikey": "tl-s3cret-key"},
        batched=True,
        record_code="provider_record_missing",
    ),
    "pinpoint": Case(
        {
            "PINPOINT_APPLICATION_ID": "app-123",
            "AWS_REGION": "eu-west-1",
            "AWS_ACCESS_KEY_ID": "AKIDEXAMPLE",
            "AWS_SECRET_ACCESS_KEY": "aws-s3cret-access-key",
        },
        {"access_key_id": "AKIDEXAMPLE", "secret_access_key": "aws-s3cret-access-key", "region": "eu-west-1"},
        batched=True,
        record_code="provider_record_refused",
    ),
    "mitto": Case(
        {"MITTO_API_KEY": "mitto-s3cret-key"},
        {"api_key": "mitto-s3cret-key"},
        batched=False,
        record_code="provider_refused",
    ),
    "twilio": Case(
        {"TWILIO_ACCOUNT_SID": "ACacme", "TWILIO_AUTH_TOKEN": "twilio-s3cret-token"},
        {"sid": "ACacme", "token": "twilio-s3cret-token"},
        batched=False,
        record_code="provider_refused",
    ),
    "sinch": Case(
        {"SINCH_SERVICE_PLAN_ID": "plan123", "SINCH_API_TOKEN": "sinch-s3cret-token"},
        {"token": "sinch-s3cret-token"},
        batched=True,
        record_code=None,
    ),
}


def preset_path(name: str, env: dict[str, str]) -> tuple[str, str]:
    """The preset's endpoint for `env`: (path with query, for the fake; the whole URL)."""
    url, problems = interpolate(load_preset(name)["url"], env)
    assert not problems
    parts = urlsplit(url)
    return parts.path, url


@pytest.fixture
async def fake_server() -> AsyncIterator[Any]:
    runners: list[web.AppRunner] = []

    async def start(fake: FakeProvider) -> str:
        runner, base = await start_app(fake.app())
        runners.append(runner)
        return base.removeprefix("http://")

    yield start
    for runner in runners:
        await runner.cleanup()


def events_for(name: str, case: Case) -> list[dict[str, Any]]:
    main = [f"+9198765432{i:02d}" for i in range(1, 5)]
    if case.record_code is not None:
        main.append("+919876543299")  # refused on its own
    out = []
    for i, to in enumerate(main):
        out.append(
            {
                "message_id": f"{name}-main-{i}",
                "campaign_id": "spring",
                "provider": name,
                "to": to,
                "body": MAIN_BODY,
                "template_id": TEMPLATE_ID,
                "replacements": {"sender": "ACME"},
                "metadata": {"i": i},
            }
        )
    for i, to in enumerate(["+919876543211", "+919876543212"]):
        out.append(
            {
                "message_id": f"{name}-blocked-{i}",
                "campaign_id": "blocked",
                "provider": name,
                "to": to,
                "body": BLOCKED_BODY,
                "template_id": BLOCKED if case.blocked_by_template else TEMPLATE_ID,
                "replacements": {"sender": "ACME" if case.blocked_by_template else BLOCKED},
            }
        )
    return out


@pytest.mark.parametrize("name", sorted(CASES))
async def test_preset_against_its_provider(name, kafka_bootstrap, fake_server):
    case = CASES[name]
    path, preset_url = preset_path(name, case.env)
    fake = FAKES[name](path, **case.credentials)
    address = await fake_server(fake)
    url = urlunsplit(urlsplit(preset_url)._replace(scheme="http", netloc=address))
    config = parse_config(
        {
            "kafka": kafka_section(kafka_bootstrap),
            "pipeline": {**FAST_PIPELINE, "linger_ms": 300},
            "observability": LOOPBACK_OPS,
            "providers": {name: {"preset": name, "url": url, **case.extra}},
        },
        env=case.env,
    )
    kafka = config.kafka
    await create_topics(kafka_bootstrap, {kafka.input_topic: 1, kafka.status_topic: 1, kafka.dlq_topic: 1})
    service = Service(config)
    task = asyncio.create_task(service.run())
    events = events_for(name, case)
    try:
        await produce(kafka_bootstrap, kafka.input_topic, events, partition_of=lambda e: 0)
        raw = await collect(kafka_bootstrap, kafka.status_topic, len(events), timeout=30)
    finally:
        service.request_stop()
        await asyncio.wait_for(task, 30)

    assert fake.problems == []
    assert len(raw) == len(events)
    statuses = {s["message_id"]: DeliveryStatus.model_validate(s) for s in raw}
    for ev in events:
        status = statuses[ev["message_id"]]
        assert (status.encoding, status.segments) == message_facts(ev["body"])
        if ev["to"] in fake.issued:
            assert status.status.value == "sent", status
            assert status.provider_message_id == fake.issued[ev["to"]]
        else:
            assert ev["to"] in fake.refused
            assert status.status.value == "failed" and status.reason is not None
            expected = case.record_code if ev["campaign_id"] == "spring" else "provider_refused"
            assert status.reason.code == expected, status.reason
    sent = {ev["to"] for ev in events if ev["campaign_id"] == "spring" and not invalid(ev["to"])}
    assert set(fake.issued) == sent
    if case.record_code is not None:
        assert "+919876543299" in fake.refused  # a number refused on its own, inside an accepted answer
    spring = [ev for ev in events if ev["campaign_id"] == "spring"]
    if case.batched:
        # One request per campaign: the whole campaign travelled together, the blocked one apart.
        assert len(fake.requests) == 2
        assert {statuses[ev["message_id"]].batch_size for ev in spring} == {len(spring)}
    else:
        assert len(fake.requests) == len(events)
    # Credentials never reach a status.
    text = orjson.dumps(raw).decode()
    assert not any(secret in text for secret in case.env.values() if "s3cret" in secret)
