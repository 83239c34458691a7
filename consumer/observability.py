"""Logging: structlog configured once at start-up, JSON lines in production, console output in a terminal.

Two processors protect every line: phone numbers are masked, and secrets (keys that name a secret, and every
secret value registered from the configuration) are replaced wherever they appear.
"""

from __future__ import annotations

import logging
import re
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any
from urllib.parse import parse_qsl, quote, quote_plus, urlsplit

import orjson
import structlog

SECRET_KEYS = re.compile(
    r"(password|passwd|pwd|secret|token|auth|api[_-]?key|access[_-]?key|private[_-]?key|signature|assertion"
    r"|credential|^key$)",
    re.I,
)
SECRET_FIELDS = ("password", "client_secret", "secret_access_key", "session_token")
"""The `SecretStr` fields of the `auth` section types."""
KAFKA_SECRET_FIELDS = ("sasl_password", "ssl_key_password")
"""The `SecretStr` fields of the `kafka` section."""
_SCHEME_VALUE = re.compile(r"([A-Za-z][A-Za-z0-9._~+/-]{0,40})\s+(\S.*)")
PHONE_KEYS = frozenset({"to", "phone", "msisdn", "recipient", "number"})
MASK = "***"


def mask_phone(number: str) -> str:
    """Keep the country code's first digits and the last two digits: +4415*******89."""
    if len(number) <= 6:
        return MASK
    return number[:4] + "*" * (len(number) - 6) + number[-2:]


class Redactor:
    """A structlog processor that masks phone numbers and secrets in every event."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        self._secrets: list[str] = []
        self.add(secrets)

    def add(self, secrets: Iterable[str]) -> None:
        for value in secrets:
            if not value or len(value) < 4:
                continue
            # A secret also travels encoded: in a form body or query (both URL encodings) and in JSON.
            for form in (value, quote_plus(value), quote(value, safe=""), orjson.dumps(value).decode()[1:-1]):
                if form not in self._secrets:
                    self._secrets.append(form)
        self._secrets.sort(key=len, reverse=True)

    def scrub(self, text: str) -> str:
        for secret in self._secrets:
            if secret in text:
                text = text.replace(secret, MASK)
        return text

    def _value(self, key: str, value: Any) -> Any:
        if SECRET_KEYS.search(key):
            return MASK
        if isinstance(value, str):
            if key in PHONE_KEYS:
                return mask_phone(value)
            return self.scrub(value)
        if isinstance(value, dict):
            return {k: self._value(str(k), v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return [self._value(key, v) for v in value]
        return value

    def __call__(self, logger: Any, method: str, event: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        for key in list(event):
            event[key] = self._value(key, event[key])
        return event


def _json_dumps(obj: Any, default: Any = None) -> str:
    return orjson.dumps(obj, default=default or str).decode()


def configure_logging(
    level: str = "info",
    fmt: str = "auto",
    redactor: Redactor | None = None,
    stream: Any = None,
    *,
    final: bool = False,
) -> Redactor:
    """Configure structlog and the standard library root logger; returns the redactor in use.

    `final`: this configuration stays for the life of the process, so each logger keeps what it resolved at
    its first use instead of resolving it at every call (a process that reconfigures, like a test that
    captures logs, must not pass it)."""
    redactor = redactor or Redactor()
    stream = stream or sys.stderr
    console = fmt == "console" or (fmt == "auto" and hasattr(stream, "isatty") and stream.isatty())
    renderer: Any = (
        structlog.dev.ConsoleRenderer(colors=False) if console else structlog.processors.JSONRenderer(_json_dumps)
    )
    shared: list[Any] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    structlog.configure(
        processors=[
            *shared,
            structlog.processors.format_exc_info,
            redactor,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.getLevelName(level.upper())),
        logger_factory=structlog.PrintLoggerFactory(stream),
        cache_logger_on_first_use=final,
    )
    # Libraries (aiokafka, aiohttp) log through the standard library: route them through the same redactor.
    handler = logging.StreamHandler(stream)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, redactor, renderer],
            foreign_pre_chain=[*shared, structlog.stdlib.add_logger_name, structlog.processors.format_exc_info],
        )
    )
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.WARNING if level == "info" else logging.getLevelName(level.upper()))
    # botocore's signer logs whole canonical requests (headers, query) at debug level: never wanted.
    logging.getLogger("botocore.auth").setLevel(logging.INFO)
    return redactor


def config_secrets(config: Any) -> list[str]:
    """Every secret value of a `ServiceConfig`, for the redactor.

    The `auth` secrets (passwords, client secrets, AWS keys), and every fixed value under a secret-looking name
    in the headers, the query (also the URL's own), the payload and the OAuth 2.0 extra parameters: API keys,
    `Authorization: Bearer ...` tokens (the credential alone too) and the like. A password in the URL counts.
    The Kafka SASL password and TLS key password too.
    """
    out: list[str] = []
    for name in KAFKA_SECRET_FIELDS:
        secret = getattr(config.kafka, name, None)
        if secret is not None:
            out.append(secret.get_secret_value())
    for provider in config.providers.values():
        auth = provider.auth
        for name in SECRET_FIELDS:
            secret = getattr(auth, name, None)
            if secret is not None:
                out.append(secret.get_secret_value())
        callback_auth = provider.callback.auth if provider.callback is not None else None
        for name in ("password", "secret", "auth_token"):
            secret = getattr(callback_auth, name, None)
            if secret is not None:
                out.append(secret.get_secret_value())
        url = urlsplit(provider.url)
        if url.password and "$$" not in url.password:
            out.append(url.password)
        pairs: list[tuple[str, Any]] = [
            *provider.headers.items(),
            *provider.query.items(),
            *parse_qsl(url.query, keep_blank_values=True),
            *getattr(auth, "extra_params", {}).items(),
            *_keyed_values(provider.payload),
        ]
        for key, value in pairs:
            out += _credentials(key, value)
    return out


def _keyed_values(node: Any) -> list[tuple[str, Any]]:
    """(key, value) of every object member of a payload template, at any depth."""
    found: list[tuple[str, Any]] = []
    if isinstance(node, dict):
        for key, value in node.items():
            found.append((str(key), value))
            found += _keyed_values(value)
    elif isinstance(node, list):
        for item in node:
            found += _keyed_values(item)
    return found


def _credentials(key: str, value: Any) -> list[str]:
    """The secrets a fixed configuration value holds: itself under a secret-looking name, and the credential
    part of `<scheme> <credential>` values (`Bearer abc`, `Basic ...`, `Token abc`)."""
    if not isinstance(value, str) or "$$" in value or not value.strip():
        return []
    scheme = _SCHEME_VALUE.fullmatch(value.strip())
    if SECRET_KEYS.search(key):
        return [value, scheme.group(2)] if scheme else [value]
    if scheme and scheme.group(1).lower() in ("bearer", "basic"):
        return [value, scheme.group(2)]
    return []
