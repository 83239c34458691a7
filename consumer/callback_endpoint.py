"""The delivery-report endpoint: `POST|GET /callbacks/{provider}` on the operations server.

A callback is authenticated, read into reports (`consumer.callbacks`), correlated, de-duplicated and
published to the status topic; the provider gets 2xx only once Kafka acknowledged every status it caused,
503 when publishing failed (so it calls again), 401 when unauthenticated and 400 when unreadable.
"""

from __future__ import annotations

import asyncio
from collections.abc import Hashable, Mapping
from typing import Any

import orjson
import structlog
from aiohttp import web

from consumer.callbacks import (
    MalformedCallback,
    SeenReports,
    SentMessage,
    SentStore,
    SignedRequest,
    authenticated,
    correlate,
    dedupe_key,
    read_reports,
    report_status,
)
from consumer.dispatcher import SentHook
from consumer.metrics import Metrics
from consumer.status import StatusPublisher
from schemas.config import CallbackConfig, CallbackSecretAuth, CallbackSettings, CallbackTwilioAuth

log = structlog.get_logger("consumer.callbacks")


def _answer(status: int, **body: Any) -> web.Response:
    return web.Response(body=orjson.dumps(body), status=status, content_type="application/json")


class CallbackEndpoint:
    """Receives the callbacks of the providers that have a `callback` section."""

    def __init__(self, providers: Mapping[str, CallbackConfig], settings: CallbackSettings, metrics: Metrics) -> None:
        self._configs = dict(providers)
        self._settings = settings
        self._metrics = metrics
        self.store = SentStore(settings.correlation_size)
        self._seen = SeenReports(settings.dedupe_size)
        self._in_flight: dict[Hashable, asyncio.Future[bool]] = {}
        self._publisher: StatusPublisher | None = None
        self._counters: dict[tuple[str, str], Any] = {}
        for name, config in self._configs.items():
            if config.auth is None:
                log.warning("callbacks of this provider have no `auth`: every one is refused", provider=name)

    def attach(self, publisher: StatusPublisher | None) -> None:
        """Start (or, with None, stop) publishing; until then callbacks are answered 503."""
        self._publisher = publisher

    def routes(self) -> list[web.RouteDef]:
        return [
            web.post("/callbacks/{provider}", self.handle),
            web.get("/callbacks/{provider}", self.handle, allow_head=False),
        ]

    def sent_hooks(self) -> dict[str, SentHook]:
        """Per provider with callbacks, what the dispatcher calls for each message accepted with an id."""
        store = self.store

        def hook_for(provider: str) -> SentHook:
            def remember(
                provider_message_id: str, message_id: str, campaign_id: str, to: str, metadata: dict[str, Any] | None
            ) -> None:
                store.remember(provider, provider_message_id, SentMessage(message_id, campaign_id, to, metadata))

            return remember

        return {name: hook_for(name) for name, config in self._configs.items() if config.message_id is not None}

    def _count(self, provider: str, result: str, n: int = 1) -> None:
        if n:
            counter = self._counters.get((provider, result))
            if counter is None:
                counter = self._counters[provider, result] = self._metrics.callbacks.labels(provider, result)
            counter.inc(n)

    async def handle(self, request: web.Request) -> web.Response:
        provider = request.match_info["provider"]
        config = self._configs.get(provider)
        if config is None:
            return _answer(404, error="no provider with callbacks has this name")
        auth = config.auth
        signed = None
        if isinstance(auth, CallbackTwilioAuth):
            # The URL Twilio called: the configured public scheme and host (a request's Host header is the
            # caller's to choose), and the path and query exactly as on the request line.
            body = await request.read()
            signed = SignedRequest(auth.public_url + request.raw_path, request.content_type if body else "", body)
        if not authenticated(auth, request.headers, request.query, signed):
            self._count(provider, "unauthorized")
            log.warning("callback refused: not authenticated", provider=provider)
            basic = auth is not None and auth.type == "basic"
            headers = {"WWW-Authenticate": 'Basic realm="callbacks"'} if basic else {}
            return web.json_response({"error": "unauthorized"}, status=401, headers=headers)
        secret_parameter = auth.query if isinstance(auth, CallbackSecretAuth) else None
        body = signed.body if signed is not None else await request.read()
        try:
            reports = read_reports(config, request.content_type if body else "", body, request.query, secret_parameter)
        except MalformedCallback as exc:
            self._count(provider, "malformed")
            log.warning("callback refused: malformed", provider=provider, error=str(exc))
            return _answer(400, error=str(exc))
        publisher = self._publisher
        if publisher is None:
            return _answer(503, error="not publishing yet")

        records: list[tuple[bytes, bytes]] = []
        mine: list[Hashable] = []
        waits: list[asyncio.Future[bool]] = []
        counts = {"published": 0, "uncorrelated": 0, "duplicate": 0, "ignored": 0}
        for report in reports:
            if report.status is None:
                counts["ignored"] += 1
                continue
            correlation = correlate(provider, report, self.store)
            key = dedupe_key(provider, report, correlation)
            if key in self._seen or key in mine:
                counts["duplicate"] += 1
                continue
            pending = self._in_flight.get(key)
            if pending is not None:
                # The same report is being published for an earlier call: answer as that one ends.
                counts["duplicate"] += 1
                waits.append(pending)
                continue
            self._in_flight[key] = asyncio.get_running_loop().create_future()
            mine.append(key)
            records.append(report_status(provider, report, correlation))
            counts["published" if correlation.message_id is not None else "uncorrelated"] += 1

        ok = True
        if records:
            ok = False
            try:
                ok = await self._publish(publisher, provider, records)
            finally:
                for done_key in mine:
                    self._in_flight.pop(done_key).set_result(ok)
                    if ok:
                        self._seen.add(done_key)
        if waits:
            ok = all(await asyncio.gather(*(asyncio.shield(w) for w in waits))) and ok
        if not ok:
            self._count(provider, "publish_failed", counts["published"] + counts["uncorrelated"])
            return _answer(503, error="the statuses could not be published; call again")
        for result, n in counts.items():
            self._count(provider, result, n)
        return _answer(200, **counts)

    async def _publish(self, publisher: StatusPublisher, provider: str, records: list[tuple[bytes, bytes]]) -> bool:
        """Publish within the timeout (counted from now). The publisher joins the statuses of concurrent
        callbacks into one hand-over; a callback that times out takes its statuses back if they were not
        handed over yet, so a provider calling again during an outage does not pile up copies."""
        try:
            async with asyncio.timeout(self._settings.publish_timeout_s):
                await publisher.publish(records)
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            log.warning("publishing delivery reports failed", provider=provider, error=type(exc).__name__)
            return False
        return True
