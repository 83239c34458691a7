"""Request signers: add a provider's credentials to a rendered request just before it is sent.

Credentials are applied here, never in templates, so rendered requests shown by `render` or logged carry no
secret. A signer that cannot get credentials raises `AuthError`; the messages of that request end as
`dispatch_error` with reason code `auth_failed`.

- `NoSigner`, `BasicSigner`: static.
- `OAuth2Signer`: client credentials grant; one cached token per provider shared by every sender, one token
  request at a time, refreshed before it expires and after the provider rejected it (`invalidate`).
- `SigV4Signer`: AWS Signature Version 4 through botocore (the optional `aws` extra), over the exact bytes sent.
"""

from __future__ import annotations

import asyncio
import base64
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import TYPE_CHECKING, Any, Protocol, runtime_checkable
from urllib.parse import parse_qsl, quote, quote_plus, urlencode, urlsplit, urlunsplit

import aiohttp
import orjson
import structlog

from consumer.errors import ConfigError, DispatchError
from consumer.metrics import Metrics
from consumer.templates import HttpRequest
from schemas.config import BasicAuth, NoAuth, OAuth2Auth, SigV4Auth

if TYPE_CHECKING:
    from consumer.sender import Transport

log = structlog.get_logger("consumer.auth")

SECRET_HEADER_NAMES = ("authorization", "proxy-authorization")
SIGV4_MISSING = "AWS SigV4 signing needs botocore: install the `aws` extra (pip install 'sms-consumer[aws]')"
ERROR_TEXT_LIMIT = 200

AuthConfig = NoAuth | BasicAuth | OAuth2Auth | SigV4Auth


class AuthError(DispatchError):
    """No credentials could be had for a request, e.g. the token endpoint refused the client."""

    code = "auth_failed"


class Signer(Protocol):
    """Adds credentials to a request."""

    async def sign(self, request: HttpRequest) -> HttpRequest: ...


@runtime_checkable
class RefreshableSigner(Protocol):
    """A signer whose credentials can go stale before they expire (a revoked token)."""

    async def sign(self, request: HttpRequest) -> HttpRequest: ...

    def invalidate(self, rejected: HttpRequest) -> bool:
        """Forget the credentials `rejected` was signed with, after the provider refused them (HTTP 401).

        True when signing again may give different credentials, so that the request is worth one more try.
        """
        ...


def _without_authorization(request: HttpRequest) -> tuple[tuple[str, str], ...]:
    return tuple(h for h in request.headers if h[0].lower() != "authorization")


class NoSigner:
    """No authentication."""

    async def sign(self, request: HttpRequest) -> HttpRequest:
        return request


class BasicSigner:
    """HTTP Basic authentication (RFC 7617, UTF-8 credentials)."""

    def __init__(self, config: BasicAuth) -> None:
        token = f"{config.username}:{config.password.get_secret_value()}".encode()
        self._header = ("Authorization", "Basic " + base64.b64encode(token).decode("ascii"))

    async def sign(self, request: HttpRequest) -> HttpRequest:
        return replace(request, headers=(*_without_authorization(request), self._header))


@dataclass(frozen=True, slots=True)
class _Token:
    value: str
    lifetime: float
    refresh_at: float
    expires_at: float


class _TokenFailure(Exception):
    """The token endpoint gave no token. `transient`: it may well give one soon (timeout, 5xx)."""

    def __init__(self, reason: str, *, transient: bool) -> None:
        super().__init__(reason)
        self.reason = reason
        self.transient = transient


class OAuth2Signer:
    """OAuth 2.0 client credentials grant (RFC 6749 section 4.4) with a token cached per provider.

    Every sender of the provider shares the token. At most one token request is under way at a time: senders
    that need a new token wait for it, while senders that still hold a valid one keep using it. After the
    token endpoint refused the credentials, it is asked again only after `retry_interval_s`
    (`transient_retry_interval_s` after a timeout, connection error or 5xx); requests signed meanwhile raise
    `AuthError`, unless the previous token is still valid.
    """

    def __init__(
        self,
        config: OAuth2Auth,
        transport: Transport,
        *,
        provider: str = "",
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._config = config
        self._transport = transport
        self._provider = provider
        self._clock = clock
        metrics = metrics or Metrics()
        self._refreshed = metrics.oauth_token_refreshes.labels(provider, "ok")
        self._refresh_failed = metrics.oauth_token_refreshes.labels(provider, "failed")
        self._secret = config.client_secret.get_secret_value()
        self._token_request = self._build_token_request()
        self._token: _Token | None = None
        self._lock = asyncio.Lock()
        self._failure: str | None = None
        self._retry_at = 0.0

    def _build_token_request(self) -> HttpRequest:
        config = self._config
        form = dict(config.extra_params)
        form["grant_type"] = "client_credentials"
        if config.scope:
            form["scope"] = config.scope
        headers = [("Content-Type", "application/x-www-form-urlencoded"), ("Accept", "application/json")]
        if config.client_auth == "body":
            form["client_id"] = config.client_id
            form["client_secret"] = self._secret
        else:
            # RFC 6749 section 2.3.1: id and secret are form-encoded before they are joined and base64-encoded.
            pair = f"{quote_plus(config.client_id, safe='')}:{quote_plus(self._secret, safe='')}"
            headers.append(("Authorization", "Basic " + base64.b64encode(pair.encode()).decode("ascii")))
        return HttpRequest("POST", config.token_url, tuple(headers), urlencode(form).encode())

    async def sign(self, request: HttpRequest) -> HttpRequest:
        token = await self.token()
        return replace(request, headers=(*_without_authorization(request), ("Authorization", f"Bearer {token}")))

    def invalidate(self, rejected: HttpRequest) -> bool:
        token = self._token
        if token is not None and ("Authorization", f"Bearer {token.value}") in rejected.headers:
            # Only the token the provider refused is dropped: when several requests come back 401 together,
            # the first one's refresh serves them all.
            self._token = None
        return True

    async def token(self) -> str:
        """A valid access token, requested from the token endpoint when needed; raises `AuthError`."""
        token, now = self._token, self._clock()
        if token is not None and (now < token.refresh_at or (self._lock.locked() and now < token.expires_at)):
            return token.value
        async with self._lock:
            token, now = self._token, self._clock()
            if token is not None and now < token.refresh_at:
                return token.value  # another sender refreshed it while this one waited
            if now < self._retry_at:
                if token is not None and now < token.expires_at:
                    return token.value
                raise AuthError(f"authentication failed: {self._failure}; next try in {self._retry_at - now:.1f} s")
            try:
                token = await self._request_token()
            except _TokenFailure as failure:
                return self._failed(failure)
            self._token, self._failure, self._retry_at = token, None, 0.0
            self._refreshed.inc()
            log.info("oauth2 token obtained", provider=self._provider, lifetime_s=token.lifetime)
            return token.value

    def _failed(self, failure: _TokenFailure) -> str:
        config = self._config
        interval = config.transient_retry_interval_s if failure.transient else config.retry_interval_s
        now = self._clock()
        self._failure, self._retry_at = failure.reason, now + interval
        self._refresh_failed.inc()
        log.warning("oauth2 token request failed", provider=self._provider, reason=failure.reason, retry_in_s=interval)
        token = self._token
        if token is not None and now < token.expires_at:
            return token.value  # the previous token has not expired yet: keep sending with it
        raise AuthError(f"authentication failed: {failure.reason}")

    async def _request_token(self) -> _Token:
        config = self._config
        sent_at = self._clock()
        try:
            response = await self._transport.send(self._token_request, config.timeout_s)
        except TimeoutError:
            raise _TokenFailure(
                f"the token endpoint did not answer within {config.timeout_s:g} s", transient=True
            ) from None
        except (aiohttp.ClientError, OSError) as exc:
            raise _TokenFailure(f"cannot reach the token endpoint: {_describe(exc)}", transient=True) from None
        doc = _json_object(response.body)
        status = response.status
        if 200 <= status <= 299:
            access_token = doc.get("access_token")
            if not isinstance(access_token, str) or not access_token:
                raise _TokenFailure(f"the token endpoint's answer (HTTP {status}) has no access_token", transient=False)
            lifetime = _lifetime(doc.get("expires_in"), config.default_expires_in_s)
            early = min(config.refresh_before_s, config.refresh_before_ratio * lifetime)
            return _Token(access_token, lifetime, sent_at + lifetime - early, sent_at + lifetime)
        # Only the standard error fields are kept: a raw body could echo the credentials.
        details = [self._scrub(doc.get(key)) for key in ("error", "error_description")]
        detail = ": ".join(d for d in details if d)
        reason = f"the token endpoint answered HTTP {status}" + (f" ({detail})" if detail else "")
        raise _TokenFailure(reason, transient=status >= 500 or status in (408, 429))

    def _scrub(self, value: Any) -> str:
        if not isinstance(value, str):
            return ""
        text = value.replace(self._secret, "***") if self._secret else value
        text = " ".join(text.split())
        return text[:ERROR_TEXT_LIMIT] + ("..." if len(text) > ERROR_TEXT_LIMIT else "")


def _json_object(body: bytes) -> dict[str, Any]:
    try:
        doc = orjson.loads(body) if body else None
    except orjson.JSONDecodeError:
        return {}
    return doc if isinstance(doc, dict) else {}


def _lifetime(expires_in: Any, default: float) -> float:
    """`expires_in` in seconds (a number or a numeric string); `default` when absent or nonsensical."""
    if isinstance(expires_in, bool):
        return default
    try:
        seconds = float(expires_in)
    except (TypeError, ValueError):
        return default
    return seconds if 0 < seconds < float("inf") else default


def _describe(exc: BaseException) -> str:
    if isinstance(exc, aiohttp.ClientConnectorError):
        return f"{exc.host}:{exc.port}: {exc.os_error.strerror or type(exc.os_error).__name__}"
    return type(exc).__name__


def sigv4_available() -> bool:
    """True when botocore (the `aws` extra) can be imported."""
    try:
        import botocore.auth
        import botocore.awsrequest
        import botocore.credentials  # noqa: F401
    except ImportError:
        return False
    return True


_SIGV4_HEADERS = frozenset({"authorization", "x-amz-date", "x-amz-security-token"})


class SigV4Signer:
    """AWS Signature Version 4 by botocore's signer, over exactly what is sent: method, URL with query,
    headers and body.

    The query is re-encoded the way SigV4 canonicalises it (RFC 3986: `%20`, not `+`), so that the bytes on the
    wire are the bytes signed.
    """

    def __init__(self, config: SigV4Auth, *, provider: str = "") -> None:
        try:
            from botocore.auth import SigV4Auth as BotocoreSigV4Auth
            from botocore.awsrequest import AWSRequest
            from botocore.credentials import Credentials
        except ImportError:
            raise ConfigError(f"provider {provider!r}", [f"auth: {SIGV4_MISSING}"]) from None
        token = config.session_token.get_secret_value() if config.session_token is not None else ""
        credentials = Credentials(config.access_key_id, config.secret_access_key.get_secret_value(), token or None)
        self._signer = BotocoreSigV4Auth(credentials, config.service, config.region)
        self._request_type = AWSRequest

    async def sign(self, request: HttpRequest) -> HttpRequest:
        url = canonical_query_url(request.url)
        aws = self._request_type(method=request.method, url=url, data=request.body or b"")
        for name, value in request.headers:
            if name.lower() not in _SIGV4_HEADERS:
                aws.headers[name] = value  # appends: repeated headers stay repeated
        self._signer.add_auth(aws)
        return replace(request, url=url, headers=tuple((str(k), str(v)) for k, v in aws.headers.items()))


def canonical_query_url(url: str) -> str:
    """`url` with its query re-encoded per RFC 3986 (every reserved character escaped, spaces as `%20`)."""
    parts = urlsplit(url)
    if not parts.query:
        return url
    pairs = parse_qsl(parts.query, keep_blank_values=True)
    return urlunsplit(parts._replace(query=urlencode(pairs, quote_via=quote, safe="")))


def auth_scheme(config: AuthConfig) -> str | None:
    """The scheme of the `Authorization` header a provider's requests get (for `render`, which masks it)."""
    if isinstance(config, BasicAuth):
        return "Basic"
    if isinstance(config, OAuth2Auth):
        return "Bearer"
    if isinstance(config, SigV4Auth):
        return "AWS4-HMAC-SHA256"
    return None


def make_signer(
    config: AuthConfig,
    transport: Transport,
    *,
    provider: str = "",
    metrics: Metrics | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> Signer:
    """The signer for a provider's `auth` section. `transport` carries token requests (OAuth 2.0)."""
    if isinstance(config, BasicAuth):
        return BasicSigner(config)
    if isinstance(config, OAuth2Auth):
        return OAuth2Signer(config, transport, provider=provider, metrics=metrics, clock=clock)
    if isinstance(config, SigV4Auth):
        return SigV4Signer(config, provider=provider)
    return NoSigner()
