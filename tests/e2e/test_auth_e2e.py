"""End to end on a real Kafka broker: a provider behind OAuth 2.0 whose token endpoint refuses the credentials.

The messages end `dispatch_error` / `auth_failed`, their offsets are committed, and the consumer keeps going:
once the token endpoint accepts the client again, sending resumes.
"""

from __future__ import annotations

import uuid
from typing import Any

import orjson
import pytest
from aiohttp import web

from consumer.config import parse_config
from consumer.testing import capture_logs, collect, committed_offsets, end_offsets, produce, wait_for
from tests.e2e.test_pipeline import PARTITIONS, event, start, stop
from tests.support import FAST_PIPELINE, LOOPBACK_OPS, batch_provider, kafka_section, start_app

pytestmark = pytest.mark.kafka

CLIENT_SECRET = "e2e-cl1ent-s3cret"


class OAuthProvider:
    """A token endpoint that refuses or accepts the client, and a batch SMS endpoint that wants its tokens."""

    def __init__(self) -> None:
        self.accept = False
        self.token_calls = 0
        self.tokens: set[str] = set()
        self.sent: list[str] = []
        self.url = ""

    async def token(self, request: web.Request) -> web.Response:
        self.token_calls += 1
        form = await request.post()
        if not self.accept or form.get("client_secret") != CLIENT_SECRET:
            return web.json_response(
                {"error": "invalid_client", "error_description": "client authentication failed"}, status=401
            )
        token = f"tok-{uuid.uuid4().hex}"
        self.tokens.add(token)
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": 3600})

    async def send(self, request: web.Request) -> web.Response:
        if request.headers.get("Authorization", "").removeprefix("Bearer ") not in self.tokens:
            return web.json_response({"error": "invalid_token"}, status=401)
        doc = orjson.loads(await request.read())
        self.sent += [m["ref"] for m in doc["messages"]]
        return web.json_response({"results": [{"id": f"pm-{m['ref']}"} for m in doc["messages"]]})


@pytest.fixture
async def oauth_provider():
    provider = OAuthProvider()
    app = web.Application()
    app.router.add_post("/token", provider.token)
    app.router.add_post("/send", provider.send)
    runner, provider.url = await start_app(app)
    yield provider
    await runner.cleanup()


def make_config(bootstrap: str, base: str) -> Any:
    auth = {
        "type": "oauth2",
        "token_url": base + "/token",
        "client_id": "e2e",
        "client_secret": "${E2E_CLIENT_SECRET}",
        "client_auth": "body",
        "retry_interval_s": 0.3,
    }
    return parse_config(
        {
            "kafka": kafka_section(bootstrap),
            "pipeline": FAST_PIPELINE,
            "observability": LOOPBACK_OPS,
            "providers": {"batcher": batch_provider(base + "/send", 10, auth=auth)},
        },
        env={"E2E_CLIENT_SECRET": CLIENT_SECRET},
    )


async def test_refused_credentials_end_as_auth_failed_and_the_consumer_keeps_going(kafka_bootstrap, oauth_provider):
    config = make_config(kafka_bootstrap, oauth_provider.url)
    kafka = config.kafka
    with capture_logs(level="info") as logs:
        service, task = await start(config)
        await produce(kafka_bootstrap, kafka.input_topic, [event(i, "otp") for i in range(30)])
        refused = await collect(kafka_bootstrap, kafka.status_topic, 30, timeout=60)

        # The client is fixed at the token endpoint: the next message after the retry interval goes out.
        oauth_provider.accept = True
        published = 30
        probes = 0

        async def a_probe_was_sent() -> bool:
            nonlocal published, probes
            probe = event(1000 + probes, "probe")
            probes += 1
            await produce(kafka_bootstrap, kafka.input_topic, [probe])
            published += 1
            statuses = await collect(kafka_bootstrap, kafka.status_topic, published, timeout=30)
            return any(s["message_id"] == probe["message_id"] and s["status"] == "sent" for s in statuses)

        await wait_for(a_probe_was_sent, timeout=60, what="sending to resume once the token endpoint accepts")
        await produce(kafka_bootstrap, kafka.input_topic, [event(2000 + i, "news") for i in range(30)])
        statuses = await collect(kafka_bootstrap, kafka.status_topic, published + 30, timeout=60)
        ends = await end_offsets(kafka_bootstrap, kafka.input_topic, PARTITIONS)

        async def all_committed() -> bool:
            committed = await committed_offsets(kafka_bootstrap, kafka.group_id, kafka.input_topic, PARTITIONS)
            return all(committed[p] == end for p, end in ends.items() if end)

        await wait_for(all_committed, timeout=20, what="every offset committed, refused messages included")
        await stop(service, task)

    assert len(refused) == 30
    for status in refused:
        assert status["status"] == "dispatch_error" and status["reason"]["code"] == "auth_failed", status
        assert status["reason"]["message"].startswith("authentication failed") and status["attempts"] == 0
        assert status["http_status"] is None and CLIENT_SECRET not in orjson.dumps(status).decode()
    assert "invalid_client" in refused[0]["reason"]["message"]
    later_ids = {f"m-{2000 + i}" for i in range(30)}
    later = [s for s in statuses if s["message_id"] in later_ids]
    assert len(later) == 30 and {s["status"] for s in later} == {"sent"}
    assert later_ids <= set(oauth_provider.sent)
    assert not {f"m-{i}" for i in range(30)} & set(oauth_provider.sent)
    # The token endpoint is not asked for every refused batch: at most once per retry interval.
    assert oauth_provider.token_calls <= 2 + probes
    text = logs.getvalue()
    assert "oauth2 token request failed" in text and CLIENT_SECRET not in text
    assert not any(token in text for token in oauth_provider.tokens)
