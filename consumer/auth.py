"""Request signers: add a provider's credentials to a rendered request just before it is sent.

Credentials are applied here, never in templates, so rendered requests shown by `render` or logged carry no
secret.
"""

from __future__ import annotations

import base64
from dataclasses import replace
from typing import Protocol

from consumer.templates import HttpRequest
from schemas.config import BasicAuth, NoAuth

SECRET_HEADER_NAMES = ("authorization", "proxy-authorization")


class Signer(Protocol):
    """Adds credentials to a request."""

    async def sign(self, request: HttpRequest) -> HttpRequest: ...


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
        headers = tuple(h for h in request.headers if h[0].lower() != "authorization")
        return replace(request, headers=(*headers, self._header))


def make_signer(config: NoAuth | BasicAuth) -> Signer:
    """The signer for a provider's `auth` section."""
    if isinstance(config, BasicAuth):
        return BasicSigner(config)
    return NoSigner()
