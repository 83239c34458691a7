"""Dry-run rendering for `sms-consumer render`: the exact HTTP requests events would produce, unsent.

Credentials are shown masked; everything else is as it would go on the wire.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import orjson
from pydantic import ValidationError

from consumer.accumulator import Accumulator
from consumer.auth import auth_scheme, canonical_query_url
from consumer.errors import EventError, SmsConsumerError
from consumer.observability import MASK, SECRET_KEYS, Redactor, config_secrets
from consumer.templates import CompiledProvider, HttpRequest, Prepared, message_values
from schemas.config import ServiceConfig, SigV4Auth
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
    service batches them when they all arrive within one linger window."""
    out: list[tuple[HttpRequest, int]] = []
    batches: Accumulator[tuple[str, bytes], Prepared] = Accumulator(0.0)
    full: list[list[Prepared]] = []
    for event in events:
        prepared = provider.prepare(message_values(event))
        if not provider.batching:
            assert prepared.request is not None
            out.append((prepared.request, 1))
            continue
        distinct = event.to if provider.distinct_recipients else None
        batch = batches.add((event.campaign_id, prepared.group), prepared, provider.batch_size, 0.0, distinct)
        if batch is not None:
            full.append(batch.items)
    full += [batch.items for batch in batches.drain()]
    return out + [(provider.render_batch(items), len(items)) for items in full]


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
    auth = provider.config.auth
    # The credentials are shown by their scheme only: no secret is printed and no token endpoint is called.
    auth_header = auth_scheme(auth)
    requests = render_requests(provider, events)
    if isinstance(auth, SigV4Auth):
        # What the SigV4 signer changes besides the Authorization header: the query encoding and its headers.
        added = [("X-Amz-Date", "<time of signing>")]
        if auth.session_token is not None and auth.session_token.get_secret_value():
            added.append(("X-Amz-Security-Token", MASK))
        requests = [(replace(r, url=canonical_query_url(r.url), headers=(*r.headers, *added)), n) for r, n in requests]
    parts = []
    for i, (request, count) in enumerate(requests, 1):
        parts.append(
            f"# request {i} of {len(requests)}: {count} message(s)\n" + format_request(request, redactor, auth_header)
        )
    return "\n".join(parts)
