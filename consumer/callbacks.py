"""Delivery reports, the pure part: a provider's callback -> reports -> statuses, correlated and de-duplicated.

No I/O here: `consumer/callback_endpoint.py` is the aiohttp handler that authenticates, parses with these
functions and publishes. The two memories are bounded and per instance:

- `SentStore` remembers sent messages by the provider's message id (fed by the dispatcher as `sent` statuses
  are built), oldest out first, so a callback that carries only that id finds our message;
- `SeenReports` remembers recent (provider, message, status) triples, so a repeated callback is not
  published twice.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections import OrderedDict
from collections.abc import Hashable, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import parse_qsl, unquote_plus, urlsplit, urlunsplit

import orjson

from consumer.responses import digits, resolve_pointer
from consumer.status import status_record
from schemas.config import (
    CallbackBasicAuth,
    CallbackConfig,
    CallbackNoAuth,
    CallbackSecretAuth,
    CallbackTwilioAuth,
)
from schemas.events import Status

MIN_SUFFIX_DIGITS = 7
"""A national number matches an international one it ends, when it has at least this many digits."""


class MalformedCallback(ValueError):
    """A callback that cannot be read as the provider's reports; answered 400."""


@dataclass(frozen=True, slots=True)
class Report:
    """One delivery report read from a callback."""

    provider_message_id: str | None
    client_reference: str | None
    recipient: str | None
    raw_status: str
    error_code: str | None
    status: Status | None
    """The mapped status; None for a value the mapping does not list (an intermediate one: not published)."""


@dataclass(frozen=True, slots=True)
class SentMessage:
    """What a delivery report needs to know of a message sent earlier."""

    message_id: str
    campaign_id: str
    to: str
    metadata: dict[str, Any] | None = None


@dataclass(frozen=True, slots=True)
class Correlation:
    """The message a report belongs to; `message` is None when it could not be found."""

    message_id: str | None
    message: SentMessage | None


# -- authentication ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class SignedRequest:
    """What a request signature covers: the URL as the provider called it, and the body."""

    url: str
    """Scheme and host as configured, then the path and query string of the request line (escapes kept)."""
    content_type: str
    body: bytes


def _with_and_without_default_port(url: str) -> list[str]:
    """The URL as given, and with its scheme's default port added or dropped: providers sign either form."""
    parts = urlsplit(url)
    default = {"https": 443, "http": 80}.get(parts.scheme)
    try:
        port = parts.port
    except ValueError:  # not a port number
        return [url]
    if default is None or parts.hostname is None:
        return [url]
    host = parts.netloc.rsplit("@", 1)[-1]
    if port is None:
        other = parts._replace(netloc=f"{host}:{default}")
    elif port == default:
        other = parts._replace(netloc=host.rsplit(":", 1)[0])
    else:
        return [url]
    return [url, urlunsplit(other)]


def twilio_signature(auth_token: str, url: str, fields: Mapping[str, str] | None) -> str:
    """Twilio's `X-Twilio-Signature` of a request: base64 HMAC-SHA1 of the URL followed by each form field's
    name and value, sorted by name."""
    text = url + "".join(name + fields[name] for name in sorted(fields)) if fields else url
    return base64.b64encode(hmac.digest(auth_token.encode(), text.encode(), "sha1")).decode()


def twilio_signature_valid(auth: CallbackTwilioAuth, signature: str | None, request: SignedRequest) -> bool:
    """Whether `signature` is Twilio's for this request. A form body is signed field by field; any other body
    through the URL's `bodySHA256` parameter (the hex SHA-256 of the body), which is checked too."""
    if not signature:
        return False
    token = auth.auth_token.get_secret_value()
    url = request.url
    kind = request.content_type.split(";")[0].strip().lower()
    fields: dict[str, str] | None = None
    if request.body and kind in ("application/x-www-form-urlencoded", ""):
        try:
            fields = parse_form(request.body.decode())
        except UnicodeDecodeError:
            return False
    elif request.body:
        digest = dict(parse_qsl(urlsplit(url).query)).get("bodySHA256", "")
        if not hmac.compare_digest(digest.encode(), hashlib.sha256(request.body).hexdigest().encode()):
            return False
    given = signature.encode("utf-8", "surrogateescape")
    found = False
    for candidate in _with_and_without_default_port(url):
        found |= hmac.compare_digest(given, twilio_signature(token, candidate, fields).encode())
    return found


def authenticated(
    auth: CallbackNoAuth | CallbackSecretAuth | CallbackBasicAuth | CallbackTwilioAuth | None,
    headers: Mapping[str, str],
    query: Mapping[str, str],
    signed: SignedRequest | None = None,
) -> bool:
    """Whether a callback carries the provider's credentials. No `auth` configured refuses everything.
    A signature check needs the request as it was signed (`signed`).

    Secrets are compared in constant time (as bytes, so any text compares)."""
    if auth is None:
        return False
    if isinstance(auth, CallbackNoAuth):
        return True
    if isinstance(auth, CallbackTwilioAuth):
        return signed is not None and twilio_signature_valid(auth, headers.get("X-Twilio-Signature"), signed)
    if isinstance(auth, CallbackSecretAuth):
        given = headers.get(auth.header) if auth.header is not None else query.get(auth.query or "")
        expected = auth.secret.get_secret_value().encode()
        return given is not None and hmac.compare_digest(given.encode("utf-8", "surrogateescape"), expected)
    header = headers.get("Authorization", "")
    scheme, _, token = header.partition(" ")
    if scheme.lower() != "basic":
        return False
    try:
        user, sep, password = base64.b64decode(token.strip(), validate=True).decode().partition(":")
    except (ValueError, UnicodeDecodeError):  # binascii.Error, or text that is not ASCII
        return False
    ok_user = hmac.compare_digest(user.encode(), auth.username.encode())
    ok_password = hmac.compare_digest(password.encode(), auth.password.get_secret_value().encode())
    return bool(sep) and ok_user and ok_password


# -- reading reports -------------------------------------------------------------------------------------


def _is_json(content_type: str) -> bool:
    kind = content_type.split(";")[0].strip().lower()
    return kind == "application/json" or kind.endswith("+json") or kind == "text/json"


def parse_form(text: str) -> dict[str, str]:
    """URL-encoded fields (`a=1&b=x+y`), blank values kept, the last of a repeated name wins: what
    `urllib.parse.parse_qsl` gives, without its cost for the plain fields most callbacks carry."""
    fields = {}
    for part in text.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        if "%" in part or "+" in part:
            name, value = unquote_plus(name), unquote_plus(value)
        fields[name] = value
    return fields


def _fields(content_type: str, body: bytes, query: Mapping[str, str], drop: str | None) -> dict[str, str]:
    """Query parameters and form fields (the body's win), without the one that carries the secret."""
    fields = dict(query)
    kind = content_type.split(";")[0].strip().lower()
    if body and kind in ("application/x-www-form-urlencoded", ""):
        try:
            fields.update(parse_form(body.decode()))
        except UnicodeDecodeError:
            raise MalformedCallback("the form body is not UTF-8 URL-encoded text") from None
    elif body:
        raise MalformedCallback(f"unsupported content type {kind!r}")
    if drop is not None:
        fields.pop(drop, None)
    return fields


def _loads(text: bytes | str, what: str) -> Any:
    try:
        return orjson.loads(text)
    except orjson.JSONDecodeError:
        raise MalformedCallback(f"{what} is not JSON") from None


def _text(value: Any) -> str | None:
    """A scalar as text (`1` -> "1"); None for a missing value, an object or an array."""
    if value is None or isinstance(value, dict | list):
        return None
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    return text or None


def locate(report: Mapping[str, Any], location: str | None) -> str | None:
    """The value at a location of a report: a JSON pointer (`/status/type`) or a field name (`Status`)."""
    if location is None:
        return None
    if location.startswith("/"):
        try:
            return _text(resolve_pointer(report, location))
        except LookupError:
            return None
    return _text(report.get(location))


def read_reports(
    config: CallbackConfig,
    content_type: str,
    body: bytes,
    query: Mapping[str, str],
    secret_parameter: str | None = None,
) -> list[Report]:
    """The reports of one callback: a JSON body (one report or an array), a form or a query string, or a form
    or query field holding JSON (`json_field`). Raises `MalformedCallback`."""
    doc: Any
    if body and _is_json(content_type):
        doc = _loads(body, "the body")
    else:
        fields = _fields(content_type, body, query, secret_parameter)
        if config.json_field is not None:
            if config.json_field not in fields:
                raise MalformedCallback(f"no field {config.json_field!r}")
            doc = _loads(fields[config.json_field], f"field {config.json_field!r}")
        else:
            doc = fields
    if config.reports is not None:
        try:
            doc = resolve_pointer(doc, config.reports)
        except LookupError:
            raise MalformedCallback(f"no reports at {config.reports!r}") from None
    items = doc if isinstance(doc, list) else [doc]
    if not items:
        raise MalformedCallback("no report")
    out = []
    for index, item in enumerate(items):
        if not isinstance(item, dict):
            raise MalformedCallback(f"report {index} is not an object")
        out.append(read_report(config, item, index))
    return out


def read_report(config: CallbackConfig, item: Mapping[str, Any], index: int = 0) -> Report:
    """One report from its fields or JSON object. Raises `MalformedCallback` without a status or an id."""
    raw_status = locate(item, config.status)
    if raw_status is None:
        raise MalformedCallback(f"report {index} has no status at {config.status!r}")
    provider_message_id = locate(item, config.message_id)
    client_reference = locate(item, config.client_reference)
    if provider_message_id is None and client_reference is None:
        raise MalformedCallback(f"report {index} has no message id")
    mapped = config.statuses.get(raw_status)
    return Report(
        provider_message_id=provider_message_id,
        client_reference=client_reference,
        recipient=locate(item, config.recipient),
        raw_status=raw_status,
        error_code=locate(item, config.error_code),
        status=Status(mapped) if mapped is not None else None,
    )


# -- correlation -----------------------------------------------------------------------------------------


def same_number(a: str, b: str) -> bool:
    """Two numbers by their digits: equal, or a national form (`09812345678`) that ends the international one."""
    da, db = digits(a), digits(b)
    if not da or not db:
        return False
    if da == db:
        return True
    short, long = (da, db) if len(da) < len(db) else (db, da)
    short = short.lstrip("0")
    return len(short) >= MIN_SUFFIX_DIGITS and long.endswith(short)


class SentStore:
    """Sent messages by the provider's message id, at most `capacity` of them, the oldest sent out first.

    Several messages may share one provider id (MSG91's request id, Sinch's batch id): the report's recipient
    then tells them apart. Not thread-safe; lives on the event loop.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._messages: OrderedDict[str, tuple[str, str, SentMessage]] = OrderedDict()
        self._ids: dict[tuple[str, str], str | list[str]] = {}

    def __len__(self) -> int:
        return len(self._messages)

    def remember(self, provider: str, provider_message_id: str, message: SentMessage) -> None:
        """Note a message the provider accepted under `provider_message_id`."""
        if self.capacity <= 0:
            return
        message_id = message.message_id
        old = self._messages.pop(message_id, None)
        if old is not None:
            self._unindex(old[0], old[1], message_id)
        self._messages[message_id] = (provider, provider_message_id, message)
        key = (provider, provider_message_id)
        current = self._ids.get(key)
        if current is None:
            self._ids[key] = message_id
        elif isinstance(current, list):
            current.append(message_id)
        else:
            self._ids[key] = [current, message_id]
        while len(self._messages) > self.capacity:
            evicted, (p, pid, _) = self._messages.popitem(last=False)
            self._unindex(p, pid, evicted)

    def get(self, message_id: str) -> SentMessage | None:
        """A remembered message by our id."""
        entry = self._messages.get(message_id)
        return entry[2] if entry is not None else None

    def find(self, provider: str, provider_message_id: str, recipient: str | None) -> SentMessage | None:
        """The message the provider knows as `provider_message_id` (and, when several share it, `recipient`)."""
        current = self._ids.get((provider, provider_message_id))
        if current is None:
            return None
        if isinstance(current, str):
            return self._messages[current][2]
        if recipient is None:
            return None
        found = [m for m in (self._messages[i][2] for i in current) if same_number(m.to, recipient)]
        return found[0] if len(found) == 1 else None

    def _unindex(self, provider: str, provider_message_id: str, message_id: str) -> None:
        key = (provider, provider_message_id)
        current = self._ids.get(key)
        if current == message_id:
            del self._ids[key]
        elif isinstance(current, list):
            current.remove(message_id)
            if len(current) == 1:
                self._ids[key] = current[0]


def correlate(provider: str, report: Report, store: SentStore) -> Correlation:
    """Our message id for a report: the client reference the provider echoed, else the provider id looked up
    in the store. A miss gives no message id (the status is still published, with the provider's id)."""
    if report.client_reference is not None:
        return Correlation(report.client_reference, store.get(report.client_reference))
    if report.provider_message_id is not None:
        message = store.find(provider, report.provider_message_id, report.recipient)
        if message is not None:
            return Correlation(message.message_id, message)
    return Correlation(None, None)


# -- idempotency -----------------------------------------------------------------------------------------


class SeenReports:
    """The most recent `capacity` reports published, to drop a repeated callback."""

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._keys: OrderedDict[Hashable, None] = OrderedDict()

    def __contains__(self, key: Hashable) -> bool:
        return key in self._keys

    def add(self, key: Hashable) -> None:
        if self.capacity <= 0:
            return
        self._keys[key] = None
        self._keys.move_to_end(key)
        while len(self._keys) > self.capacity:
            self._keys.popitem(last=False)


def dedupe_key(provider: str, report: Report, correlation: Correlation) -> tuple[str, str, str, str]:
    """What makes a report the same as another: provider, message (ours, else the provider's id and the
    recipient's digits) and mapped status."""
    status = report.status.value if report.status is not None else report.raw_status
    if correlation.message_id is not None:
        return (provider, "m", correlation.message_id, status)
    who = f"{report.provider_message_id}|{digits(report.recipient or '')}"
    return (provider, "p", who, status)


def report_status(provider: str, report: Report, correlation: Correlation) -> tuple[bytes, bytes]:
    """The status record of a mapped report (keyed by our message id, else by the provider's id)."""
    assert report.status is not None
    message = correlation.message
    detail = f"{provider} reported status {report.raw_status!r}"
    if report.error_code is not None:
        detail += f", error code {report.error_code!r}"
    return status_record(
        message_id=correlation.message_id,
        status=report.status,
        origin=None,
        campaign_id=message.campaign_id if message is not None else None,
        provider=provider,
        to=message.to if message is not None else report.recipient,
        reason=(report.raw_status, detail),
        provider_message_id=report.provider_message_id,
        metadata=message.metadata if message is not None else None,
        key=report.provider_message_id or report.client_reference,
    )
