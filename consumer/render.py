"""Dry-run rendering for `sms-consumer render`: the exact HTTP requests events would produce, unsent.

Credentials are shown masked; everything else is as it would go on the wire.
"""

from __future__ import annotations

from typing import Any

import orjson
from pydantic import ValidationError

from consumer.errors import EventError, SmsConsumerError
from consumer.observability import MASK, SECRET_KEYS, Redactor, config_secrets
from consumer.templates import CompiledProvider, HttpRequest, message_values
from schemas.config import BasicAuth, ServiceConfig
from schemas.events import SendRequest


def _events(raw: bytes) -> list[SendRequest]:
    try:
        doc: Any = orjson.loads(raw)
    except orjson.JSONDecodeError as exc:
        raise EventError(f"the event file is not JSON: {exc}") from None
    items = doc if isinstance(doc, list) else [doc]
    events = []
    for i, item in enumerate(items):
        try:
            events.append(SendRequest.model_validate(item))
        except ValidationError as exc:
            first = exc.errors(include_input=False, include_url=False)[0]
            where = ".".join(str(p) for p in first["loc"])
            raise EventError(f"event {i}: {where}: {first['msg']}") from None
    return events


def render_requests(provider: CompiledProvider, events: list[SendRequest]) -> list[tuple[HttpRequest, int]]:
    """The requests (and how many messages each carries) that `events` would produce, batched as the
    service would batch them when they all arrive within one linger window."""
    if provider.batch_key is None:
        out = []
        for event in events:
            prepared = provider.prepare(message_values(event))
            assert prepared.request is not None
            out.append((prepared.request, 1))
        return out
    groups: dict[tuple[str, bytes], list[Any]] = {}
    for event in events:
        prepared = provider.prepare(message_values(event))
        groups.setdefault((event.campaign_id, prepared.group), []).append(prepared)
    requests = []
    for members in groups.values():
        for start in range(0, len(members), provider.batch_size):
            chunk = members[start : start + provider.batch_size]
            assert chunk[0].head is not None
            requests.append((provider.render_batch(chunk[0].head, [p.item for p in chunk]), len(chunk)))
    return requests


def format_request(request: HttpRequest, redactor: Redactor, auth_header: str | None) -> str:
    lines = [f"{request.method} {redactor.scrub(request.url)}"]
    for key, value in request.headers:
        shown = MASK if SECRET_KEYS.search(key) else redactor.scrub(value)
        lines.append(f"{key}: {shown}")
    if auth_header:
        lines.append(f"Authorization: {auth_header} {MASK}")
    if request.body is not None:
        lines.append("")
        body = request.body
        content_type = next((v for k, v in request.headers if k.lower() == "content-type"), "")
        if "json" in content_type:
            text = orjson.dumps(orjson.loads(body), option=orjson.OPT_INDENT_2).decode()
        else:
            text = body.decode("utf-8")
        lines.append(redactor.scrub(text))
    return "\n".join(lines) + "\n"


def render_event(config: ServiceConfig, provider_name: str, raw: bytes) -> str:
    """Text of every request the events in `raw` would produce through `provider_name`."""
    from consumer.templates import compile_providers

    if provider_name not in config.providers:
        known = ", ".join(sorted(config.providers))
        raise SmsConsumerError(f"no provider named {provider_name!r} (configured: {known})")
    provider = compile_providers({provider_name: config.providers[provider_name]})[provider_name]
    events = _events(raw)
    redactor = Redactor(config_secrets(config))
    auth_header = "Basic" if isinstance(provider.config.auth, BasicAuth) else None
    requests = render_requests(provider, events)
    parts = []
    for i, (request, count) in enumerate(requests, 1):
        parts.append(
            f"# request {i} of {len(requests)}: {count} message(s)\n" + format_request(request, redactor, auth_header)
        )
    return "\n".join(parts)
