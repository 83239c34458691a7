"""Provider authentication against real aiohttp servers: OAuth 2.0 client credentials (token caching, refresh
before expiry and after a 401, refused and unavailable token endpoints), AWS SigV4 checked by a server that
recomputes the signature, Basic, API keys and static bearer tokens; and no secret in any log line."""

from __future__ import annotations

import asyncio
import base64
import re
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import replace
from typing import Any
from urllib.parse import unquote_plus

import pytest
from aiohttp import web
from botocore.auth import SigV4Auth as BotocoreSigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from consumer.auth import make_signer
from consumer.config import parse_config
from consumer.metrics import Metrics
from consumer.sender import AiohttpTransport, HttpResponse, ProviderSender, SendResult, make_session
from consumer.templates import CompiledProvider, HttpRequest, message_values
from consumer.testing import capture_logs, wait_for
from schemas.config import ProviderConfig
from schemas.events import SendRequest

CLIENT_ID = "sms-client"
CLIENT_SECRET = "cl1ent-s3cr:t/+é&="  # characters that need the RFC 6749 form encoding in the Basic header
AWS_KEY_ID = "AKIDEXAMPLE"
AWS_SECRET = "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY"
AWS_SESSION = "FwoGZXIvYXdzEXAMPLEsessiontoken"
BASIC_PASSWORD = "b4sic-pässword"
API_KEY = "ak-2f9c1e7d5b3a"
QUERY_KEY = "qk-8e6d4c2b0a19"
STATIC_TOKEN = "st-5a7b9c1d3e5f"

Serve = Callable[[dict[str, Any]], Awaitable[str]]


@pytest.fixture
def serve(http_server):
    """`await serve({"/path": handler})` starts an aiohttp server on 127.0.0.1 and returns its base URL."""

    async def start(routes: dict[str, Any]) -> str:
        app = web.Application()
        for path, handler in routes.items():
            app.router.add_route("*", path, handler)
        return await http_server(app)

    return start


@pytest.fixture
async def session():
    s = make_session()
    yield s
    await s.close()


class TokenEndpoint:
    """An OAuth 2.0 token endpoint (client credentials) that issues expiring tokens and counts its calls.

    `mode`: `accept`, `reject` (401 invalid_client, echoing the credentials it got, as a careless server might),
    `unavailable` (503) or `no_token` (200 without an access_token).
    """

    def __init__(self, client_auth: str = "basic", expires_in: float = 3600.0) -> None:
        self.client_auth = client_auth
        self.expires_in = expires_in
        self.mode = "accept"
        self.delay = 0.0
        self.calls: list[float] = []
        self.forms: list[dict[str, str]] = []
        self.headers: list[dict[str, str]] = []
        self.expiry: dict[str, float] = {}
        self.revoked: set[str] = set()

    @property
    def tokens(self) -> list[str]:
        return list(self.expiry)

    async def handle(self, request: web.Request) -> web.Response:
        self.calls.append(time.monotonic())
        form = {k: str(v) for k, v in (await request.post()).items()}
        self.forms.append(form)
        self.headers.append(dict(request.headers))
        if self.delay:
            await asyncio.sleep(self.delay)
        if self.mode == "unavailable":
            return web.json_response({"error": "temporarily_unavailable"}, status=503)
        if self.mode == "no_token":
            return web.json_response({"token_type": "Bearer", "note": CLIENT_SECRET})
        if self.mode == "reject" or not self.client_ok(request, form):
            echo = f"{request.headers.get('Authorization')} {form.get('client_secret')}"
            return web.json_response(
                {"error": "invalid_client", "error_description": f"bad credentials {CLIENT_SECRET}", "echo": echo},
                status=401,
            )
        if form.get("grant_type") != "client_credentials":
            return web.json_response({"error": "unsupported_grant_type"}, status=400)
        token = f"tok-{uuid.uuid4().hex}"
        self.expiry[token] = time.monotonic() + self.expires_in
        return web.json_response({"access_token": token, "token_type": "Bearer", "expires_in": self.expires_in})

    def client_ok(self, request: web.Request, form: dict[str, str]) -> bool:
        header = request.headers.get("Authorization")
        if self.client_auth == "basic":
            if header is None or not header.startswith("Basic ") or "client_secret" in form:
                return False
            user, _, password = base64.b64decode(header[6:]).decode().partition(":")
            return unquote_plus(user) == CLIENT_ID and unquote_plus(password) == CLIENT_SECRET
        return header is None and form.get("client_id") == CLIENT_ID and form.get("client_secret") == CLIENT_SECRET

    def valid(self, token: str) -> bool:
        expiry = self.expiry.get(token)
        return expiry is not None and time.monotonic() < expiry and token not in self.revoked


class BearerProvider:
    """An SMS provider that takes only unexpired, unrevoked tokens of `tokens`; 401 otherwise."""

    def __init__(self, tokens: TokenEndpoint) -> None:
        self.tokens = tokens
        self.accepted: list[str] = []
        self.rejected: list[str] = []
        self.refuse_all = False

    async def handle(self, request: web.Request) -> web.Response:
        header = request.headers.get("Authorization", "")
        token = header.removeprefix("Bearer ")
        if self.refuse_all or not header.startswith("Bearer ") or not self.tokens.valid(token):
            self.rejected.append(token)
            return web.json_response({"error": "invalid_token"}, status=401)
        self.accepted.append(token)
        return web.json_response({"id": f"pm-{len(self.accepted)}"})


def provider_config(url: str, **extra: Any) -> ProviderConfig:
    return ProviderConfig.model_validate(
        {
            "url": url,
            "format": "json",
            "payload": {"to": "$$To", "text": "$$Body"},
            "response": {"message_id": "/id"},
            "retry": {"max_attempts": 1},
            "timeout_s": 2,
            **extra,
        }
    )


def sender_for(
    config: ProviderConfig, session: Any, *, metrics: Metrics | None = None, transport: Any = None
) -> tuple[ProviderSender, HttpRequest]:
    provider = CompiledProvider("p", config)
    real = AiohttpTransport(session)
    signer = make_signer(config.auth, real, provider="p", metrics=metrics)
    sender = ProviderSender(provider, transport or real, signer, metrics=metrics)
    event = SendRequest(message_id="m", campaign_id="c", provider="p", to="+14155550100", body="hello")
    request = provider.prepare(message_values(event)).request
    assert request is not None
    return sender, request


async def oauth_world(
    serve: Serve, session: Any, *, client_auth: str = "basic", expires_in: float = 3600.0, **auth: Any
) -> tuple[TokenEndpoint, BearerProvider, ProviderSender, HttpRequest, Metrics]:
    tokens = TokenEndpoint(client_auth, expires_in)
    provider = BearerProvider(tokens)
    base = await serve({"/token": tokens.handle, "/send": provider.handle})
    config = provider_config(
        base + "/send",
        concurrency=100,
        auth={
            "type": "oauth2",
            "token_url": base + "/token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
            "client_auth": client_auth,
            **auth,
        },
    )
    metrics = Metrics()
    sender, request = sender_for(config, session, metrics=metrics)
    return tokens, provider, sender, request, metrics


def refreshes(metrics: Metrics, result: str) -> float:
    value = metrics.registry.get_sample_value("sms_oauth_token_refreshes_total", {"provider": "p", "result": result})
    return value or 0.0


def codes(result: SendResult) -> list[str | None]:
    return [None if o.accepted else o.code for o in result.outcomes]


# -- OAuth 2.0 ---------------------------------------------------------------------------------------------------


async def test_one_token_request_serves_a_hundred_concurrent_sends(serve, session):
    tokens, provider, sender, request, metrics = await oauth_world(serve, session)
    tokens.delay = 0.2  # every sender asks for the token while the first request for it is under way
    results = await asyncio.gather(*(sender.send(request, 1) for _ in range(100)))
    assert all(r.outcomes[0].accepted and r.attempts == 1 for r in results)
    assert len(tokens.calls) == 1 and len(provider.accepted) == 100 and set(provider.accepted) == set(tokens.tokens)
    assert refreshes(metrics, "ok") == 1 and refreshes(metrics, "failed") == 0


async def test_the_token_is_refreshed_before_it_expires(serve, session):
    tokens, provider, sender, request, _ = await oauth_world(
        serve, session, expires_in=1.0, refresh_before_s=30, refresh_before_ratio=0.5
    )
    results: list[SendResult] = []

    async def third_token_in_use() -> bool:
        results.append(await sender.send(request, 1))
        return len(tokens.calls) >= 3

    await wait_for(third_token_in_use, timeout=15, interval=0.02, what="two refreshes")
    # No request ever went out with an expired token: the provider never answered 401.
    assert provider.rejected == [] and all(r.outcomes[0].accepted and r.attempts == 1 for r in results)
    assert len(set(provider.accepted)) == 3 and len(provider.accepted) > 3
    # Each token was replaced before its lifetime ran out (from half of it on).
    gaps = [b - a for a, b in zip(tokens.calls, tokens.calls[1:], strict=False)]
    assert all(0.45 <= gap < 1.0 for gap in gaps), gaps


async def test_a_revoked_token_is_refreshed_once_and_the_request_retried(serve, session):
    tokens, provider, sender, request, _ = await oauth_world(serve, session)
    first = await sender.send(request, 1)
    assert first.outcomes[0].accepted and len(tokens.calls) == 1
    revoked = tokens.tokens[0]
    tokens.revoked.add(revoked)
    # The retry policy allows a single attempt: the retry with the new token is not one of its retries, but
    # `attempts` counts both HTTP requests.
    second = await sender.send(request, 1)
    assert second.outcomes[0].accepted and second.attempts == 2 and second.http_status == 200
    assert provider.rejected == [revoked] and len(tokens.calls) == 2

    # Many requests refused together with the same token share one refresh.
    tokens.revoked.add(tokens.tokens[1])
    results = await asyncio.gather(*(sender.send(request, 1) for _ in range(20)))
    assert all(r.outcomes[0].accepted for r in results) and len(tokens.calls) == 3


async def test_a_provider_that_keeps_refusing_the_token_gets_one_refresh_per_request(serve, session):
    tokens, provider, sender, request, _ = await oauth_world(serve, session)
    provider.refuse_all = True
    result = await sender.send(request, 2)
    assert codes(result) == ["provider_refused", "provider_refused"]
    assert result.attempts == 2 and result.http_status == 401 and len(tokens.calls) == 2


async def test_refused_credentials_give_auth_failed_until_the_retry_interval_then_sending_resumes(serve, session):
    tokens, provider, sender, request, metrics = await oauth_world(
        serve, session, retry_interval_s=0.3, transient_retry_interval_s=60
    )
    tokens.mode = "reject"
    started = time.monotonic()
    result = await sender.send(request, 3)
    assert codes(result) == ["auth_failed"] * 3 and result.attempts == 0 and result.http_status is None
    message = result.outcomes[0].message or ""
    assert message.startswith("authentication failed") and "HTTP 401" in message and "invalid_client" in message
    assert CLIENT_SECRET not in message and "echo" not in message and "Basic" not in message
    assert provider.accepted == [] and provider.rejected == []  # nothing was sent without a token

    # Within the retry interval the token endpoint is not asked again.
    again = await sender.send(request, 1)
    assert codes(again) == ["auth_failed"] and "next try in" in (again.outcomes[0].message or "")
    assert len(tokens.calls) == 1

    tokens.mode = "accept"

    async def sent() -> bool:
        return bool((await sender.send(request, 1)).outcomes[0].accepted)

    await wait_for(sent, timeout=5, interval=0.02, what="sending to resume")
    assert len(tokens.calls) == 2 and tokens.calls[1] - started >= 0.3
    assert refreshes(metrics, "failed") == 1 and refreshes(metrics, "ok") == 1


async def test_an_answer_without_access_token_counts_as_refused_credentials(serve, session):
    tokens, _, sender, request, _ = await oauth_world(serve, session, retry_interval_s=60)
    tokens.mode = "no_token"
    result = await sender.send(request, 1)
    assert codes(result) == ["auth_failed"] and "no access_token" in (result.outcomes[0].message or "")
    assert CLIENT_SECRET not in (result.outcomes[0].message or "")
    await sender.send(request, 1)
    assert len(tokens.calls) == 1  # the long interval applies


async def test_an_unavailable_token_endpoint_is_asked_again_sooner(serve, session):
    tokens, _, sender, request, _ = await oauth_world(
        serve, session, retry_interval_s=600, transient_retry_interval_s=0.2
    )
    tokens.mode = "unavailable"
    result = await sender.send(request, 1)
    assert codes(result) == ["auth_failed"] and "HTTP 503" in (result.outcomes[0].message or "")
    tokens.mode = "accept"

    async def sent() -> bool:
        return bool((await sender.send(request, 1)).outcomes[0].accepted)

    await wait_for(sent, timeout=5, interval=0.02, what="sending to resume after the short interval")
    assert len(tokens.calls) == 2


async def test_an_unreachable_or_slow_token_endpoint_gives_auth_failed(serve, session):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    config = provider_config(
        "http://127.0.0.1:1/send",
        auth={
            "type": "oauth2",
            "token_url": f"http://127.0.0.1:{port}/token",
            "client_id": CLIENT_ID,
            "client_secret": CLIENT_SECRET,
        },
    )
    sender, request = sender_for(config, session)
    result = await sender.send(request, 1)
    assert codes(result) == ["auth_failed"] and "cannot reach the token endpoint" in (result.outcomes[0].message or "")

    tokens, _, sender, request, _ = await oauth_world(serve, session, timeout_s=0.1)
    tokens.delay = 0.3
    result = await sender.send(request, 1)
    assert codes(result) == ["auth_failed"] and "did not answer within 0.1 s" in (result.outcomes[0].message or "")


@pytest.mark.parametrize("client_auth", ["basic", "body"])
async def test_the_client_authenticates_by_basic_header_or_in_the_form_body(serve, session, client_auth):
    tokens, _provider, sender, request, _ = await oauth_world(
        serve, session, client_auth=client_auth, scope="sms.send sms.read", extra_params={"audience": "sms-api"}
    )
    result = await sender.send(request, 1)
    assert result.outcomes[0].accepted and len(tokens.calls) == 1  # the endpoint checked the client its way
    form = tokens.forms[0]
    assert form["grant_type"] == "client_credentials" and form["scope"] == "sms.send sms.read"
    assert form["audience"] == "sms-api"
    if client_auth == "basic":
        assert "client_secret" not in form and tokens.headers[0]["Authorization"].startswith("Basic ")
    else:
        assert form["client_id"] == CLIENT_ID and "Authorization" not in tokens.headers[0]


# -- AWS SigV4 ---------------------------------------------------------------------------------------------------

_AUTHORIZATION = re.compile(
    r"AWS4-HMAC-SHA256 Credential=(?P<key>[^/]+)/(?P<date>\d{8})/(?P<region>[^/]+)/(?P<service>[^/]+)/aws4_request, "
    r"SignedHeaders=(?P<signed>[^,]+), Signature=(?P<signature>[0-9a-f]{64})"
)


class SigV4Checker:
    """An AWS-like endpoint: recomputes the SigV4 signature of each request from what it received (the raw path
    and query, the signed headers, the body) and answers 403 when it differs."""

    def __init__(self, region: str, service: str) -> None:
        self.region, self.service = region, service
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        body = await request.read()
        self.seen.append({"headers": dict(request.headers), "path": request.raw_path, "body": body})
        match = _AUTHORIZATION.fullmatch(request.headers.get("Authorization", ""))
        if match is None:
            return web.json_response({"message": "missing authentication"}, status=403)
        if (match["key"], match["region"], match["service"]) != (AWS_KEY_ID, self.region, self.service):
            return web.json_response({"message": "wrong credential scope"}, status=403)
        if request.headers.get("X-Amz-Security-Token") != AWS_SESSION:
            return web.json_response({"message": "bad security token"}, status=403)
        received = AWSRequest(method=request.method, url=f"http://{request.host}{request.raw_path}", data=body)
        for name in match["signed"].split(";"):
            for value in request.headers.getall(name, []):
                received.headers[name] = value
        received.context["timestamp"] = request.headers["X-Amz-Date"]
        signer = BotocoreSigV4Auth(Credentials(AWS_KEY_ID, AWS_SECRET, AWS_SESSION), self.service, self.region)
        string_to_sign = signer.string_to_sign(received, signer.canonical_request(received))
        if signer.signature(string_to_sign, received) != match["signature"]:
            return web.json_response({"message": "The request signature we calculated does not match"}, status=403)
        return web.json_response({"MessageId": f"aws-{len(self.seen)}"})


class TamperingTransport:
    """Changes the body after it was signed, as a meddling proxy would."""

    def __init__(self, inner: AiohttpTransport) -> None:
        self.inner = inner

    async def send(self, request: HttpRequest, timeout: float) -> HttpResponse:
        assert request.body is not None
        return await self.inner.send(replace(request, body=request.body.replace(b"hello", b"HELLO")), timeout)


async def sigv4_world(serve: Serve, session: Any, *, tamper: bool = False) -> tuple[SigV4Checker, Any, HttpRequest]:
    checker = SigV4Checker("eu-west-1", "sms-voice")
    base = await serve({"/{tail:.*}": checker.handle})
    config = ProviderConfig.model_validate(
        {
            "url": base + "/v2/messages/$$CampaignID",
            "query": {"Label": "spring sale", "Path": "a/b+c~d"},
            "headers": {"X-Amz-Target": "PinpointSMSVoiceV2.SendTextMessage"},
            "format": "json",
            "payload": {"DestinationPhoneNumber": "$$To", "MessageBody": "$$Body", "MessageType": "TRANSACTIONAL"},
            "response": {"message_id": "/MessageId"},
            "retry": {"max_attempts": 1},
            "auth": {
                "type": "sigv4",
                "access_key_id": AWS_KEY_ID,
                "secret_access_key": AWS_SECRET,
                "session_token": AWS_SESSION,
                "region": "eu-west-1",
                "service": "sms-voice",
            },
        }
    )
    transport = TamperingTransport(AiohttpTransport(session)) if tamper else None
    sender, request = sender_for(config, session, transport=transport)
    return checker, sender, request


async def test_sigv4_requests_are_signed_over_what_is_sent(serve, session):
    checker, sender, request = await sigv4_world(serve, session)
    result = await sender.send(request, 1)
    assert result.outcomes[0].accepted and result.outcomes[0].provider_message_id == "aws-1", checker.seen
    seen = checker.seen[0]
    assert seen["path"] == "/v2/messages/c?Label=spring%20sale&Path=a%2Fb%2Bc~d"
    assert seen["body"] == request.body and seen["headers"]["X-Amz-Target"] == "PinpointSMSVoiceV2.SendTextMessage"
    assert all(k.lower() != "authorization" for k, _ in request.headers)  # the rendered request stays unsigned


async def test_a_sigv4_request_whose_body_was_changed_after_signing_is_refused(serve, session):
    checker, sender, request = await sigv4_world(serve, session, tamper=True)
    result = await sender.send(request, 1)
    assert codes(result) == ["provider_refused"] and result.http_status == 403
    assert "signature" in (result.outcomes[0].message or "") and b"HELLO" in checker.seen[0]["body"]


# -- Basic, API keys and static bearer tokens -------------------------------------------------------------------


class Recorder:
    def __init__(self) -> None:
        self.seen: list[dict[str, Any]] = []

    async def handle(self, request: web.Request) -> web.Response:
        self.seen.append({"headers": dict(request.headers), "query": dict(request.query)})
        return web.json_response({"id": "ok"})


async def send_with_static_credentials(serve: Serve, session: Any) -> Recorder:
    """One message through each of a Basic, an API-key-header, an API-key-query and a static-bearer provider."""
    recorder = Recorder()
    base = await serve({"/send": recorder.handle})
    payload = {"to": "$$To", "text": "$$Body"}
    config = parse_config(
        {
            "providers": {
                "basic": {
                    "url": base + "/send",
                    "format": "json",
                    "payload": payload,
                    "auth": {"type": "basic", "username": "acme", "password": "${BASIC_PASSWORD}"},
                },
                "header-key": {
                    "url": base + "/send",
                    "format": "json",
                    "payload": payload,
                    "headers": {"X-Api-Key": "${API_KEY}"},
                },
                "query-key": {
                    "method": "GET",
                    "url": base + "/send",
                    "query": {"to": "$$To", "text": "$$Body", "api_key": "${QUERY_KEY}"},
                },
                "bearer": {
                    "url": base + "/send",
                    "format": "json",
                    "payload": payload,
                    "headers": {"Authorization": "Bearer ${STATIC_TOKEN}"},
                },
            }
        },
        env={
            "BASIC_PASSWORD": BASIC_PASSWORD,
            "API_KEY": API_KEY,
            "QUERY_KEY": QUERY_KEY,
            "STATIC_TOKEN": STATIC_TOKEN,
        },
    )
    for name in ("basic", "header-key", "query-key", "bearer"):
        sender, request = sender_for(config.providers[name], session)
        assert (await sender.send(request, 1)).outcomes[0].accepted
    return recorder


async def test_basic_api_key_and_static_bearer_providers_send_their_credentials(serve, session):
    recorder = await send_with_static_credentials(serve, session)
    basic, header_key, query_key, bearer = recorder.seen
    assert basic["headers"]["Authorization"] == "Basic " + base64.b64encode(f"acme:{BASIC_PASSWORD}".encode()).decode()
    assert header_key["headers"]["X-Api-Key"] == API_KEY
    assert query_key["query"]["api_key"] == QUERY_KEY
    assert bearer["headers"]["Authorization"] == f"Bearer {STATIC_TOKEN}"


# -- Logs ----------------------------------------------------------------------------------------------------------


async def test_no_secret_reaches_a_log_line(serve, session):
    """Every flow above, logged at debug level with no secret registered with the redactor: nothing to mask,
    because no secret is ever logged."""
    with capture_logs(level="debug") as out:
        tokens, _provider, sender, request, _ = await oauth_world(serve, session, retry_interval_s=0.05)
        tokens.mode = "reject"
        await sender.send(request, 1)
        tokens.mode = "accept"

        async def sent() -> bool:
            return bool((await sender.send(request, 1)).outcomes[0].accepted)

        await wait_for(sent, timeout=5, interval=0.02, what="sending to resume")
        tokens.revoked.add(tokens.tokens[0])
        assert (await sender.send(request, 1)).outcomes[0].accepted
        _, sigv4_sender, sigv4_request = await sigv4_world(serve, session)
        assert (await sigv4_sender.send(sigv4_request, 1)).outcomes[0].accepted
        issued = tokens.tokens
        await send_with_static_credentials(serve, session)
    text = out.getvalue()
    assert "oauth2 token request failed" in text and "oauth2 token obtained" in text
    basic = base64.b64encode(f"acme:{BASIC_PASSWORD}".encode()).decode()
    secrets = [CLIENT_SECRET, AWS_SECRET, AWS_SESSION, BASIC_PASSWORD, basic, API_KEY, QUERY_KEY, STATIC_TOKEN]
    for secret in [*secrets, *issued]:
        assert secret not in text, secret
