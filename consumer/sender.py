"""Sending rendered requests to a provider: the HTTP transport, concurrency limit, timeouts and retries."""

from __future__ import annotations

import asyncio
import random
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

import aiohttp
import structlog
from yarl import URL

from consumer.auth import AuthError, NoSigner, RefreshableSigner, Signer
from consumer.limits import BreakerState, CircuitBreaker, TokenBucket
from consumer.metrics import Metrics
from consumer.responses import RecordOutcome, excerpt, is_accepted, map_response
from consumer.retry import RetryPolicy, is_retryable_status, parse_retry_after
from consumer.templates import CompiledProvider, HttpRequest

log = structlog.get_logger("consumer.sender")


@dataclass(slots=True)
class HttpResponse:
    """What the provider answered. Treated as immutable (not frozen: one is made per request)."""

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
        self._timeouts: dict[float, aiohttp.ClientTimeout] = {}
        self._urls: dict[str, URL] = {}  # parsed once: most providers post every message to one URL

    async def send(self, request: HttpRequest, timeout: float) -> HttpResponse:
        limit = self._timeouts.get(timeout)
        if limit is None:
            limit = self._timeouts[timeout] = aiohttp.ClientTimeout(total=timeout)
        url = self._urls.get(request.url)
        if url is None:
            url = URL(request.url, encoded=True)
            if len(self._urls) >= 1024:
                self._urls.clear()
            self._urls[request.url] = url
        async with self._session.request(
            request.method,
            url,
            headers=request.headers,
            data=request.body,
            timeout=limit,
            allow_redirects=False,
        ) as response:
            body = await response.read()
            return HttpResponse(response.status, response.headers, body)


def make_session(total_connections: int = 1024) -> aiohttp.ClientSession:
    """The one HTTP session the service shares across providers."""
    connector = aiohttp.TCPConnector(limit=total_connections, limit_per_host=0, ttl_dns_cache=300)
    return aiohttp.ClientSession(connector=connector, auto_decompress=True, raise_for_status=False)


class Slots:
    """A counting semaphore whose uncontended path is a comparison, not a coroutine: the send path takes
    and gives back a slot per HTTP attempt. A slot given back goes straight to the longest waiter."""

    __slots__ = ("_waiters", "free")

    def __init__(self, count: int) -> None:
        self.free = count
        self._waiters: deque[asyncio.Future[None]] = deque()

    def try_take(self) -> bool:
        if self.free > 0 and not self._waiters:
            self.free -= 1
            return True
        return False

    async def take(self) -> None:
        if self.try_take():
            return
        waiter: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.give_back()  # handed a slot, then cancelled before using it
            elif waiter in self._waiters:  # not when a `give_back` already passed over it, cancelled
                self._waiters.remove(waiter)
            raise

    def give_back(self) -> None:
        waiters = self._waiters
        while waiters:
            waiter = waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)
                return
        self.free += 1


@dataclass(slots=True)
class SendResult:
    """Per-message outcomes of one request, after retries. Treated as immutable (not frozen: one is made
    per request)."""

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
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.provider = provider
        config = provider.config
        self._clock = clock
        now = clock()
        limit = config.rate_limit
        self._request_bucket = (
            TokenBucket(limit.requests_per_s, max(1.0, limit.requests_per_s * limit.burst_s), now)
            if limit and limit.requests_per_s
            else None
        )
        self._message_bucket = (
            TokenBucket(limit.messages_per_s, max(1.0, limit.messages_per_s * limit.burst_s), now)
            if limit and limit.messages_per_s
            else None
        )
        self.breaker = CircuitBreaker(
            config.breaker.failure_threshold, config.breaker.open_s, config.breaker.max_open_s
        )
        self._breaker_changed = asyncio.Event()
        self._pause_until = 0.0
        # After a 429, one request probes the provider when the pause ends; the others wait for its answer.
        self._throttled = False
        self._throttle_probe = False
        metrics = metrics or Metrics()
        self._breaker_gauge = metrics.breaker_state.labels(provider.name)
        self._breaker_opened = metrics.breaker_opened.labels(provider.name)
        self._latency = metrics.http_latency.labels(provider.name)
        self._responses = metrics.http_responses
        # Children kept per answer: a `labels()` call per message costs about 0.4 us.
        self._response_counters: dict[str | int, Any] = {}
        self._retries = metrics.retries.labels(provider.name)
        self._config = provider.config
        self._transport = transport
        self._signer = signer
        self._refreshable = signer if isinstance(signer, RefreshableSigner) else None
        self._policy = RetryPolicy.from_config(provider.config.retry)
        self._slots = Slots(provider.config.concurrency)
        self._signs = type(signer) is not NoSigner
        self._unprotected = self._request_bucket is None and self._message_bucket is None
        self._sleep = sleep
        self._rng = rng or random.Random()

    def _open(self) -> bool:
        """Whether `_gate` would let an attempt go at once (no rate limits, no pause, no 429 probe, the breaker
        closed): the send path then skips its coroutine. Any new reason for `_gate` to wait belongs here too."""
        return (
            self._unprotected
            and self.breaker.state is BreakerState.CLOSED
            and not self._throttled
            and self._pause_until <= self._clock()
        )

    async def _gate(self, count: int) -> bool:
        """Wait until the provider may be sent to: a Retry-After pause, the breaker, then the rate limits.

        Returns True when this attempt is the one probe let through after a 429.
        """
        probe = False  # this attempt holds the probe after a 429
        trial = False  # this attempt holds the half-open breaker's probe
        try:
            while True:
                now = self._clock()
                if now < self._pause_until:
                    await self._sleep(self._pause_until - now)
                    continue
                if self._throttled:
                    if self._throttle_probe:
                        self._breaker_changed.clear()
                        await self._breaker_changed.wait()
                        continue
                    self._throttle_probe = probe = True
                wait = self.breaker.wait(now)
                if wait is None:  # a probe is under way: wait for its outcome
                    self._breaker_changed.clear()
                    await self._breaker_changed.wait()
                    continue
                if wait > 0:
                    if probe:  # not going yet: let the probe go to whoever gets here first after the wait
                        self._throttle_probe = probe = False
                    await self._sleep(wait)
                    continue
                trial = self.breaker.state is BreakerState.HALF_OPEN
                break
            await self._throttle(count)
        except BaseException:
            # Cancelled while waiting (a drain that ran out of time abandons its work): a probe held here would
            # keep every later attempt waiting for an answer that never comes.
            if probe:
                self._throttle_probe = False
            if trial:
                self.breaker.probing = False
            self._breaker_changed.set()
            raise
        return probe

    async def _throttle(self, count: int) -> None:
        """Wait for the rate limits to allow one more request carrying `count` messages."""
        now = self._clock()
        delay = 0.0
        if self._request_bucket is not None:
            delay = self._request_bucket.reserve(1, now)
        if self._message_bucket is not None:
            delay = max(delay, self._message_bucket.reserve(count, now))
        if delay > 0:
            await self._sleep(delay)

    def _record(self, ok: bool | None, status: int | None = None, probe: bool = False) -> None:
        """Tell the breaker how an attempt went (None: no verdict on the provider, e.g. it was never reached).

        `probe`: the attempt was the probe after a 429; only its end lets the next probe go, so requests that
        were already in flight when the 429 came do not open the gate for more.
        """
        if status == 429:
            self._throttled = True
        elif ok is not None:
            self._throttled = False
            self._throttle_probe = False
        if probe:
            self._throttle_probe = False
        breaker = self.breaker
        before = breaker.opened_count
        if ok is None:
            if breaker.probing:
                breaker.probing = False
        else:
            breaker.record(ok, self._clock())
        if breaker.opened_count != before:
            self._breaker_opened.inc()
            log.warning("circuit breaker opened", provider=self.provider.name, open_s=breaker.current_open_s)
        self._breaker_gauge.set(_BREAKER_GAUGE[breaker.state])
        self._breaker_changed.set()

    async def send(self, request: HttpRequest, count: int, deadline: float | None = None) -> SendResult:
        """Send `request`, which carries `count` messages, retrying what is worth retrying.

        `deadline` (on this sender's clock) is when the messages stop being worth sending: an attempt that
        would start after it is not made, and the result says `expired`.
        """
        attempt = 0
        sent = 0  # HTTP requests made; a retry with refreshed credentials is one more, not a retry of the policy
        status: int | None = None
        while True:
            attempt += 1
            probe = False if self._open() else await self._gate(count)
            if deadline is not None and self._clock() >= deadline:
                self._record(None, probe=probe)
                expired = RecordOutcome(False, None, "expired", "expired before the provider could take it")
                return SendResult([expired] * count, sent, status)
            try:
                result = await self._attempt(request, count, sent)
            except BaseException:
                self._record(None, probe=probe)
                raise
            outcome, status, retry_after, verdict, sent = result
            self._record(verdict, status, probe)
            if isinstance(outcome, SendResult):
                return outcome
            failure = outcome
            if status == 429:
                pause = retry_after if retry_after is not None else self._policy.initial
                self._pause_until = max(self._pause_until, self._clock() + pause)
            delay = self._policy.delay(attempt, retry_after, self._rng)
            if delay is None:
                message = f"gave up after {sent} attempt(s); last: {failure.message}"
                return SendResult([RecordOutcome(False, None, failure.code, message)] * count, sent, status)
            self._retries.inc()
            await self._sleep(delay)

    async def _attempt(
        self, request: HttpRequest, count: int, sent: int
    ) -> tuple[SendResult | RecordOutcome, int | None, float | None, bool | None, int]:
        """One attempt: a final result, or a retryable failure; with the HTTP status, Retry-After, the breaker
        verdict (True: the provider answered sanely; False: it failed; None: no verdict) and the number of HTTP
        requests made so far (`sent` before it)."""
        slots = self._slots
        if not slots.try_take():
            await slots.take()
        try:
            refreshable = self._refreshable
            while True:
                try:
                    signed = await self._signer.sign(request) if self._signs else request
                except AuthError as exc:
                    # Final for this request: the signer knows when credentials may be had again.
                    failure = RecordOutcome(False, None, exc.code, exc.message)
                    return SendResult([failure] * count, sent, None), None, None, None, sent
                sent += 1
                response = await self._exchange(signed)
                if not (
                    isinstance(response, HttpResponse)
                    and response.status == 401
                    and refreshable is not None
                    and refreshable.invalidate(signed)
                ):
                    break
                # The provider refused the credentials (e.g. a revoked token): sign again with fresh ones and
                # try once more, outside the retry policy.
                refreshable = None
                await self._throttle(count)
        finally:
            slots.give_back()
        if isinstance(response, RecordOutcome):
            return response, None, None, False, sent
        status = response.status
        if is_accepted(self._config.response, status) or not is_retryable_status(status):
            outcomes = map_response(self._config.response, status, response.body, count, request.recipients)
            return SendResult(outcomes, sent, status), status, None, True, sent
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        code = "provider_throttled" if status == 429 else "provider_error"
        failure = RecordOutcome(False, None, code, f"provider answered HTTP {status}: {excerpt(response.body)}")
        # 429 says the provider is healthy but busy: it pauses sending, it does not open the breaker.
        return failure, status, retry_after, status == 429, sent

    async def _exchange(self, signed: HttpRequest) -> HttpResponse | RecordOutcome:
        """One HTTP request: the provider's answer, or the failure (timeout, connection error)."""
        started = time.perf_counter()
        try:
            response = await self._transport.send(signed, self._config.timeout_s)
        except TimeoutError:
            self._count_response("timeout")
            return RecordOutcome(False, None, "timeout", f"no answer within {self._config.timeout_s:g} s")
        except (aiohttp.ClientError, OSError) as exc:
            self._count_response("connection_error")
            return RecordOutcome(False, None, "connection_error", _describe(exc))
        finally:
            self._latency.observe(time.perf_counter() - started)
        self._count_response(response.status)
        return response

    def _count_response(self, result: str | int) -> None:
        counter = self._response_counters.get(result)
        if counter is None:
            counter = self._response_counters[result] = self._responses.labels(self.provider.name, str(result))
        counter.inc()


_BREAKER_GAUGE = {BreakerState.CLOSED: 0, BreakerState.OPEN: 1, BreakerState.HALF_OPEN: 2}


def _describe(exc: BaseException) -> str:
    """A connection failure in words, without the request (it may carry credentials in its URL)."""
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"cannot connect to {exc.host}:{exc.port}: {exc.os_error.strerror or type(exc.os_error).__name__}"
    if isinstance(exc, aiohttp.ServerDisconnectedError):
        return "the provider closed the connection"
    return type(exc).__name__
