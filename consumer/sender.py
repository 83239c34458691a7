"""Sending rendered requests to a provider: the HTTP transport, concurrency limit, timeouts and retries."""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Protocol

import aiohttp
from yarl import URL

from consumer.auth import Signer
from consumer.metrics import Metrics
from consumer.responses import RecordOutcome, excerpt, is_accepted, map_response
from consumer.retry import RetryPolicy, is_retryable_status, parse_retry_after
from consumer.templates import CompiledProvider, HttpRequest


@dataclass(frozen=True, slots=True)
class HttpResponse:
    """What the provider answered."""

    status: int
    headers: Mapping[str, str]
    body: bytes


class Transport(Protocol):
    """Sends one HTTP request; raises `asyncio.TimeoutError` or `OSError`/`aiohttp.ClientError` on failure."""

    async def send(self, request: HttpRequest, timeout: float) -> HttpResponse: ...


class AiohttpTransport:
    """Transport over one shared `aiohttp.ClientSession` (connection pooling and keep-alive)."""

    def __init__(self, session: aiohttp.ClientSession) -> None:
        self._session = session

    async def send(self, request: HttpRequest, timeout: float) -> HttpResponse:
        async with self._session.request(
            request.method,
            URL(request.url, encoded=True),
            headers=request.headers,
            data=request.body,
            timeout=aiohttp.ClientTimeout(total=timeout),
            allow_redirects=False,
        ) as response:
            body = await response.read()
            return HttpResponse(response.status, response.headers, body)


def make_session(total_connections: int = 1024) -> aiohttp.ClientSession:
    """The one HTTP session the service shares across providers."""
    connector = aiohttp.TCPConnector(limit=total_connections, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True, raise_for_status=False)


@dataclass(frozen=True, slots=True)
class SendResult:
    """Per-message outcomes of one request, after retries."""

    outcomes: list[RecordOutcome]
    attempts: int
    http_status: int | None


class ProviderSender:
    """Sends a provider's requests with a concurrency limit, a per-attempt timeout and retries."""

    def __init__(
        self,
        provider: CompiledProvider,
        transport: Transport,
        signer: Signer,
        *,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        rng: random.Random | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.provider = provider
        metrics = metrics or Metrics()
        self._latency = metrics.http_latency.labels(provider.name)
        self._responses = metrics.http_responses
        self._retries = metrics.retries.labels(provider.name)
        self._config = provider.config
        self._transport = transport
        self._signer = signer
        self._policy = RetryPolicy.from_config(provider.config.retry)
        self._slots = asyncio.Semaphore(provider.config.concurrency)
        self._sleep = sleep
        self._rng = rng or random.Random()

    async def send(self, request: HttpRequest, count: int) -> SendResult:
        """Send `request`, which carries `count` messages, retrying what is worth retrying."""
        attempt = 0
        while True:
            attempt += 1
            retry_after: float | None = None
            async with self._slots:
                signed = await self._signer.sign(request)
                started = time.perf_counter()
                try:
                    response = await self._transport.send(signed, self._config.timeout_s)
                except TimeoutError:
                    failure = RecordOutcome(False, None, "timeout", f"no answer within {self._config.timeout_s:g} s")
                    status = None
                except (aiohttp.ClientError, OSError) as exc:
                    failure = RecordOutcome(False, None, "connection_error", _describe(exc))
                    status = None
                else:
                    status = response.status
                finally:
                    self._latency.observe(time.perf_counter() - started)
                self._responses.labels(self.provider.name, str(status) if status else failure.code).inc()
                if status is not None:
                    if is_accepted(self._config.response, status) or not is_retryable_status(status):
                        outcomes = map_response(self._config.response, status, response.body, count)
                        return SendResult(outcomes, attempt, status)
                    retry_after = parse_retry_after(response.headers.get("Retry-After"))
                    failure = RecordOutcome(
                        False,
                        None,
                        "provider_throttled" if status == 429 else "provider_error",
                        f"provider answered HTTP {status}: {excerpt(response.body)}",
                    )
            delay = self._policy.delay(attempt, retry_after, self._rng)
            if delay is None:
                message = f"gave up after {attempt} attempt(s); last: {failure.message}"
                return SendResult([RecordOutcome(False, None, failure.code, message)] * count, attempt, status)
            self._retries.inc()
            await self._sleep(delay)


def _describe(exc: BaseException) -> str:
    """A connection failure in words, without the request (it may carry credentials in its URL)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the provider closed the connection"
    return type(exc).__name__
