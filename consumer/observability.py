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

import orjson
import structlog

SECRET_KEYS = re.compile(r"(password|secret|token|authorization|api[_-]?key|authkey|credential)", re.I)
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
            if value and len(value) >= 4 and value not in self._secrets:
                self._secrets.append(value)
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
    level: str = "info", fmt: str = "auto", redactor: Redactor | None = None, stream: Any = None
) -> Redactor:
    """Configure structlog and the standard library root logger once; returns the redactor in use."""
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
        cache_logger_on_first_use=False,
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
    return redactor


def config_secrets(config: Any) -> list[str]:
    """Every secret value of a `ServiceConfig`: auth passwords and header/query values under secret-looking names."""
    out: list[str] = []
    for provider in config.providers.values():
        password = getattr(provider.auth, "password", None)
        if password is not None:
            out.append(password.get_secret_value())
        for pairs in (provider.headers, provider.query):
            for key, value in pairs.items():
                if SECRET_KEYS.search(key) and "$$" not in value:
                    out.append(value)
                    if value.lower().startswith(("bearer ", "basic ")):
                        out.append(value.split(" ", 1)[1])
    return out
