"""The sender against real aiohttp servers: retries, final refusals, timeouts, refused connections, auth."""

from __future__ import annotations

import asyncio
import base64
import socket
from typing import Any

import pytest
from aiohttp import web

from consumer.auth import make_signer
from consumer.sender import AiohttpTransport, ProviderSender, make_session
from consumer.templates import CompiledProvider, message_values
from schemas.config import ProviderConfig
from schemas.events import SendRequest


class Script:
    """A provider that answers from a script of (status, headers, body, delay) and records requests."""

    def __init__(self, answers: list[tuple[int, dict[str, str], bytes, float]]) -> None:
        self.answers = answers
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({"headers": dict(request.headers), "body": await request.read(), "path": request.path_qs})
        status, headers, body, delay = self.answers[min(len(self.seen), len(self.answers)) - 1]
        if delay:
            await asyncio.sleep(delay)
        return web.Response(status=status, headers=headers, body=body, content_type="application/json")


@pytest.fixture
def server(http_server):
    async def start(script: Script) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", script.handle)
        return await http_server(app)

    return start


@pytest.fixture
async def session():
    s = make_session()
    yield s
    await s.close()


def sender_for(url: str, session: Any, sleeps: list[float], **extra: Any) -> tuple[ProviderSender, Any]:
    config = ProviderConfig.model_validate(
        {
            "url": url + "/send",
            "format": "json",
            "payload": {"to": "$$To", "text": "$$Body"},
            "response": {"message_id": "/id"},
            "retry": {"max_attempts": 3, "backoff_initial_ms": 10, "backoff_max_ms": 20},
            "timeout_s": 0.5,
            **extra,
        }
    )
    provider = CompiledProvider("p", config)

    now = [0.0]

    async def fake_sleep(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    transport = AiohttpTransport(session)
    sender = ProviderSender(
        provider, transport, make_signer(config.auth, transport), sleep=fake_sleep, clock=lambda: now[0]
    )
    request = SendRequest(message_id="m", campaign_id="c", provider="p", to="+14155550100", body="hello")
    prepared = provider.prepare(message_values(request))
    return sender, prepared.request


async def test_5xx_is_retried_then_accepted(server, session):
    script = Script([(503, {}, b"{}", 0), (500, {}, b"{}", 0), (200, {}, b'{"id": "X1"}', 0)])
    sleeps: list[float] = []
    sender, request = sender_for(await server(script), session, sleeps)
    result = await sender.send(request, 1)
    assert result.attempts == 3 and result.http_status == 200
    assert result.outcomes[0].accepted and result.outcomes[0].provider_message_id == "X1"
    assert len(script.seen) == 3 and len(sleeps) == 2 and all(0 <= s <= 0.02 for s in sleeps)


async def test_4xx_is_final_without_retry(server, session):
    script = Script([(400, {}, b'{"error": "bad"}', 0)])
    sleeps: list[float] = []
    sender, request = sender_for(await server(script), session, sleeps)
    result = await sender.send(request, 2)
    assert result.attempts == 1 and len(script.seen) == 1 and sleeps == []
    assert [o.code for o in result.outcomes] == ["provider_refused", "provider_refused"]


async def test_retry_after_is_honoured_on_429(server, session):
    script = Script([(429, {"Retry-After": "3"}, b"{}", 0), (200, {}, b'{"id": "ok"}', 0)])
    sleeps: list[float] = []
    sender, request = sender_for(await server(script), session, sleeps)
    result = await sender.send(request, 1)
    assert result.outcomes[0].accepted and sleeps == [3.0]


async def test_retries_run_out_with_the_last_reason(server, session):
    script = Script([(502, {}, b"{}", 0)])
    sleeps: list[float] = []
    sender, request = sender_for(await server(script), session, sleeps)
    result = await sender.send(request, 1)
    outcome = result.outcomes[0]
    assert not outcome.accepted and result.attempts == 3 and outcome.code == "provider_error"
    assert "gave up after 3 attempt(s)" in (outcome.message or "") and "502" in (outcome.message or "")


async def test_timeouts_are_retried_and_reported(server, session):
    script = Script([(200, {}, b'{"id": "late"}', 2.0)])
    sleeps: list[float] = []
    sender, request = sender_for(await server(script), session, sleeps)
    result = await sender.send(request, 1)
    assert result.attempts == 3 and result.outcomes[0].code == "timeout"


async def test_refused_connections_are_retried_and_reported(session):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    sleeps: list[float] = []
    sender, request = sender_for(f"http://127.0.0.1:{port}", session, sleeps)
    result = await sender.send(request, 1)
    assert result.attempts == 3 and result.outcomes[0].code == "connection_error"
    assert "cannot connect" in (result.outcomes[0].message or "")


async def test_basic_auth_header_is_added_at_send_time(server, session):
    script = Script([(200, {}, b'{"id": "a"}', 0)])
    sleeps: list[float] = []
    sender, request = sender_for(
        await server(script), session, sleeps, auth={"type": "basic", "username": "user", "password": "pässword"}
    )
    assert all(k.lower() != "authorization" for k, _ in request.headers)  # the rendered request holds no secret
    await sender.send(request, 1)
    expected = "Basic " + base64.b64encode("user:pässword".encode()).decode()
    assert script.seen[0]["headers"]["Authorization"] == expected
    assert script.seen[0]["body"] == b'{"to":"+14155550100","text":"hello"}'


async def test_a_429_pauses_every_sender_of_the_provider(server, session):
    script = Script([(429, {"Retry-After": "2"}, b"{}", 0), (200, {}, b'{"id": "ok"}', 0)])
    sleeps: list[float] = []
    sender, request = sender_for(await server(script), session, sleeps)
    first = await sender.send(request, 1)
    assert first.outcomes[0].accepted and sleeps == [2.0]
    # The pause is provider-wide: a request that starts inside it waits for it too.
    sender._pause_until = sender._clock() + 1.5
    await sender.send(request, 1)
    assert sleeps[-1] == 1.5


async def test_breaker_opens_on_repeated_failures_and_closes_after_a_good_probe(server, session):
    script = Script([(503, {}, b"{}", 0)] * 4 + [(200, {}, b'{"id": "ok"}', 0)])
    sleeps: list[float] = []
    sender, request = sender_for(
        await server(script),
        session,
        sleeps,
        retry={"max_attempts": 2, "backoff_initial_ms": 1, "backoff_max_ms": 1},
        breaker={"failure_threshold": 3, "open_s": 30, "max_open_s": 120},
    )
    a = await sender.send(request, 1)
    assert not a.outcomes[0].accepted and sender.breaker.state.value == "closed"
    # The third failure opens the breaker: the retry waits out the open time (30 s), then probes; the probe
    # gets the fourth 503, so the breaker reopens for twice as long.
    b = await sender.send(request, 1)
    assert not b.outcomes[0].accepted and b.attempts == 2
    assert sender.breaker.state.value == "open" and sender.breaker.current_open_s == 60
    # The next request waits instead of failing; its probe succeeds and closes the breaker.
    c = await sender.send(request, 1)
    assert c.outcomes[0].accepted and c.attempts == 1
    long_waits = [round(x) for x in sleeps if x > 1]
    assert long_waits == [30, 60]
    d = await sender.send(request, 1)
    assert d.outcomes[0].accepted and sender.breaker.state.value == "closed"
    assert len(script.seen) == 6


async def test_an_attempt_cancelled_while_holding_the_breakers_probe_lets_the_next_one_probe(server, session):
    script = Script([(503, {}, b"{}", 0), (200, {}, b'{"id": "ok"}', 0)])
    sleeps: list[float] = []
    sender, request = sender_for(
        await server(script),
        session,
        sleeps,
        retry={"max_attempts": 1},
        breaker={"failure_threshold": 1, "open_s": 1, "max_open_s": 2},
        rate_limit={"requests_per_s": 0.1},
    )
    now = [0.0]
    sender._clock = lambda: now[0]
    assert not (await sender.send(request, 1)).outcomes[0].accepted
    assert sender.breaker.state.value == "open"
    now[0] = 5.0  # the breaker lets one probe through, which must wait 5 s more for the rate limit

    async def held(seconds: float) -> None:
        sleeps.append(seconds)
        await asyncio.Event().wait()

    sender._sleep = held
    prober = asyncio.create_task(sender.send(request, 1))
    await asyncio.sleep(0.05)
    assert sleeps[-1] == 5.0 and sender.breaker.probing
    prober.cancel()  # as a drain that runs out of time does
    with pytest.raises(asyncio.CancelledError):
        await prober

    async def passing(seconds: float) -> None:
        sleeps.append(seconds)
        now[0] += seconds

    sender._sleep = passing
    result = await asyncio.wait_for(sender.send(request, 1), 5)
    assert result.outcomes[0].accepted and sender.breaker.state.value == "closed"
    assert len(script.seen) == 2


async def test_rate_limit_spaces_requests(server, session):
    script = Script([(200, {}, b'{"id": "ok"}', 0)])
    sleeps: list[float] = []
    sender, request = sender_for(
        await server(script), session, sleeps, rate_limit={"requests_per_s": 10, "burst_s": 0.1}
    )
    for _ in range(5):
        await sender.send(request, 1)
    # One request of burst, then one every 100 ms.
    assert [round(s, 3) for s in sleeps] == [0.1, 0.1, 0.1, 0.1]
