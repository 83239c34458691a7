"""Provider request templates: compiled once from a `ProviderConfig`, rendered for every message.

Pure: no I/O. A template is a tree of JSON values, key-value pairs, header values, a URL and query
parameters in which `$$Name` placeholders stand. Compilation checks the placeholders and turns the tree into
small render functions; rendering escapes every value for where it lands (JSON encoding, form/URL encoding,
header values without line breaks).

Batching: the template says where each message's part stands (see `schemas.config.BatchConfig`): a record in
an array (under a key, or the whole body), the recipient joined into one field, the recipient in an array, or
an entry keyed by recipient. Everything else is the *global part*: messages share a request only if their
global values are equal, which the accumulator enforces through `Prepared.group`.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import orjson

from consumer.errors import ConfigError, RenderError
from schemas.config import ProviderConfig
from schemas.events import SendRequest

PLACEHOLDER = re.compile(r"\$\$([A-Za-z_][A-Za-z0-9_]*)")
SYSTEM_NAMES = frozenset({"To", "Body", "TemplateID", "TemplateVariables", "CampaignID", "MessageID"})
PER_MESSAGE_NAMES = frozenset({"To", "MessageID"})
"""System placeholders that differ for every message: in a batching provider they belong in the item."""

Values = Mapping[str, Any]
Render = Callable[[Values], Any]


@dataclass(slots=True)
class HttpRequest:
    """A fully rendered HTTP request, ready to send. Treated as immutable (not frozen: one is made per
    message, and a frozen dataclass costs four times as much to make).

    `recipients` are the E.164 numbers of the messages it carries, in order (the answer may be matched by them).
    """

    method: str
    url: str
    headers: tuple[tuple[str, str], ...]
    body: bytes | None
    recipients: tuple[str, ...] = ()


@dataclass(frozen=True, slots=True)
class Head:
    """The rendered global part of a batch request: everything but the messages.

    For batch mode `joined` the whole request is rendered again with the recipients joined, from `values`.
    """

    url: str
    headers: tuple[tuple[str, str], ...]
    payload: Any
    values: Values | None = None


@dataclass(slots=True)
class Prepared:
    """A message checked and rendered as far as it can be on its own. Treated as immutable (not frozen: one
    is made per message).

    `group` is equal for messages that may share one request; `item` is the message's part of a batch request
    (a record, a recipient, or a recipient and its entry; records and entries as encoded JSON) and `request`
    the whole request when every message is its own request. `recipient` is the message's E.164 number.
    """

    group: bytes
    head: Head | None
    item: Any
    request: HttpRequest | None
    recipient: str = ""


def message_values(request: SendRequest | Mapping[str, Any]) -> dict[str, Any]:
    """The placeholder values one send-request provides, by placeholder name; from the model or from its
    fields as a dict (`schemas.events.SendRequestFields`, where a field not given is absent)."""
    fields = request.__dict__ if isinstance(request, SendRequest) else request
    get = fields.get
    values: dict[str, Any] = dict(get("replacements") or ())
    values["To"] = fields["to"]
    values["Body"] = get("body")
    values["TemplateID"] = get("template_id")
    values["TemplateVariables"] = get("template_variables")
    values["CampaignID"] = fields["campaign_id"]
    values["MessageID"] = fields["message_id"]
    return values


def dumps(value: Any) -> bytes:
    """JSON-encode a rendered value; values JSON cannot carry (e.g. integers beyond 64 bits) are render errors."""
    try:
        return orjson.dumps(value)
    except TypeError as exc:
        raise RenderError(f"a value cannot be encoded as JSON: {exc}", code="unencodable_value") from None


def kept(data: bytes) -> bytes:
    """A compact copy of orjson's result for bytes that live as long as a pending message: the original keeps
    a 4 KiB buffer alive each, which pending messages multiply."""
    return bytes(memoryview(data))


def to_text(value: Any) -> str:
    """A value as it appears inside a string, a form field, a query parameter or a header."""
    if isinstance(value, str):
        return value
    if value is None:
        return ""
    return dumps(value).decode()


def _const(value: Any) -> Render:
    def render(values: Values) -> Any:
        return value

    return render


def _get(name: str) -> Render:
    def render(values: Values) -> Any:
        return values[name]

    return render


def _names_in(text: str) -> list[str]:
    return PLACEHOLDER.findall(text)


def _compile_text(text: str, escape: Callable[[str], str] | None = None) -> Render:
    """Compile a string that may hold placeholders into a function returning a string."""
    pieces: list[str | tuple[str]] = []
    pos = 0
    for match in PLACEHOLDER.finditer(text):
        if match.start() > pos:
            pieces.append(text[pos : match.start()])
        pieces.append((match.group(1),))
        pos = match.end()
    if pos < len(text):
        pieces.append(text[pos:])
    if not any(isinstance(p, tuple) for p in pieces):
        return _const(text)
    esc: Callable[[str], str] = escape or str

    def render(values: Values) -> str:
        return "".join(p if isinstance(p, str) else esc(to_text(values[p[0]])) for p in pieces)

    return render


def _whole(text: str) -> str | None:
    match = PLACEHOLDER.fullmatch(text)
    return match.group(1) if match else None


def _compile_json(node: Any, where: str, problems: list[str]) -> Render:
    """Compile a JSON template node. A string that is exactly one placeholder takes the value's JSON type."""
    if isinstance(node, str):
        name = _whole(node)
        if name is not None:
            return _get(name)
        return _compile_text(node)
    if isinstance(node, dict):
        items = []
        for key, child in node.items():
            if not isinstance(key, str) or PLACEHOLDER.search(key):
                problems.append(f"{where}: placeholders may stand in values only, not in the key {key!r}")
            items.append((key, _compile_json(child, f"{where}.{key}", problems)))
        if all(_is_constant(child) for child in node.values()):
            return _const(node)
        pairs = tuple(items)

        def render_dict(values: Values) -> Any:
            return {k: f(values) for k, f in pairs}

        return render_dict
    if isinstance(node, list):
        fns = tuple(_compile_json(child, f"{where}[{i}]", problems) for i, child in enumerate(node))
        if all(_is_constant(child) for child in node):
            return _const(node)

        def render_list(values: Values) -> Any:
            return [f(values) for f in fns]

        return render_list
    if node is None or isinstance(node, bool | int | float):
        return _const(node)
    problems.append(f"{where}: unsupported value of type {type(node).__name__}")
    return _const(None)


def _is_constant(node: Any) -> bool:
    if isinstance(node, str):
        return PLACEHOLDER.search(node) is None
    if isinstance(node, dict):
        return all(_is_constant(v) for v in node.values())
    if isinstance(node, list):
        return all(_is_constant(v) for v in node)
    return True


def _placeholders(node: Any) -> set[str]:
    if isinstance(node, str):
        return set(_names_in(node))
    if isinstance(node, dict):
        return set().union(*(_placeholders(v) for v in node.values())) if node else set()
    if isinstance(node, list):
        return set().union(*(_placeholders(v) for v in node)) if node else set()
    return set()


def _header_value(text: str) -> str:
    if "\r" in text or "\n" in text:
        raise RenderError("a value would break a header line (CR/LF)", code="header_injection")
    return text


class _Pairs:
    """Compiled key-value pairs (form fields, query parameters or headers)."""

    def __init__(self, pairs: Mapping[str, Any]) -> None:
        self._items: list[tuple[str, Render, str | None]] = []
        for key, raw in pairs.items():
            text = raw if isinstance(raw, str) else to_text(raw)
            self._items.append((key, _compile_text(text), _whole(text)))

    def render(self, values: Values) -> list[tuple[str, str]]:
        out = []
        for key, fn, whole in self._items:
            # A field that is only an absent optional value is left out rather than sent empty.
            if whole is not None and values[whole] is None:
                continue
            out.append((key, fn(values)))
        return out


def _occurrences(node: Any, name: str) -> int:
    """How many times `$$name` stands in a template node."""
    if isinstance(node, str):
        return _names_in(node).count(name)
    if isinstance(node, dict):
        return sum(_occurrences(v, name) for v in node.values())
    if isinstance(node, list):
        return sum(_occurrences(v, name) for v in node)
    return 0


def _json_content(headers: tuple[tuple[str, str], ...]) -> tuple[tuple[str, str], ...]:
    return _content_headers(headers, "application/json; charset=utf-8")


def _content_headers(headers: tuple[tuple[str, str], ...], content_type: str) -> tuple[tuple[str, str], ...]:
    if any(k.lower() == "content-type" for k, _ in headers):
        return headers
    return (*headers, ("Content-Type", content_type))


class CompiledProvider:
    """A provider's request template, checked and compiled; renders messages into HTTP requests.

    `batching` says whether messages share requests; `mode` is the batch shape (`records`, `joined`,
    `recipients`, `keyed`) and `distinct_recipients` whether a request may hold each number only once.
    """

    def __init__(self, name: str, config: ProviderConfig) -> None:
        self.name = name
        self.config = config
        problems: list[str] = []
        where = f"providers.{name}"
        batch = config.batch

        self.mode: str | None = batch.mode if batch else None
        self.batching = batch is not None
        self.batch_key = batch.key if batch else None
        self.batch_size = batch.size if batch else 1
        self.separator = batch.join_with if batch else ","
        self.distinct_recipients = self.mode in {"joined", "recipients", "keyed"} or (
            config.response.record_recipient is not None
        )
        self._digits = config.recipient_format == "digits"

        self._url = _compile_text(config.url, escape=lambda s: quote(s, safe=""))
        self._query = _Pairs(config.query)
        self._headers = _Pairs(config.headers)
        self._form = _Pairs(config.payload) if config.format == "form" else None
        self._order: tuple[str, ...] = tuple(config.payload) if isinstance(config.payload, dict) else ()

        global_names: set[str] = set(_names_in(config.url))
        global_names |= set().union(*(_placeholders(v) for v in config.query.values()), set())
        global_names |= set().union(*(_placeholders(v) for v in config.headers.values()), set())
        item_names: set[str] = set()

        self._payload: Render | None = None
        self._item: Render | None = None
        if config.format == "json" and self.mode in {"records", "recipients", "keyed"}:
            global_template, item_names = self._compile_batch_json(config.payload, where, problems)
            if global_template is not None:
                self._payload = _compile_json(global_template, f"{where}.payload", problems)
                global_names |= _placeholders(global_template)
        elif config.format == "json":
            self._payload = _compile_json(config.payload, f"{where}.payload", problems)
            global_names |= _placeholders(config.payload)
        elif config.format == "form":
            global_names |= set().union(*(_placeholders(v) for v in config.payload.values()), set())

        if self.mode == "joined":
            self._check_joined(where, problems)
            global_names.discard("To")
            item_names = {"To"}

        used = global_names | item_names
        self.used_names = frozenset(used)
        self.custom_names = frozenset(used - SYSTEM_NAMES)
        self._custom_sorted = tuple(sorted(self.custom_names))
        self._uses_body = "Body" in self.used_names
        self._uses_template = "TemplateID" in self.used_names
        if "To" not in used:
            problems.append(f"{where}: the template must use $$To")
        if not used & {"Body", "TemplateID"}:
            problems.append(f"{where}: the template must use $$Body or $$TemplateID")
        if self.mode == "joined" and "MessageID" in used:
            problems.append(f"{where}: with batch mode joined, $$MessageID cannot be used: a request carries many")
        elif self.batching:
            misplaced = sorted(global_names & PER_MESSAGE_NAMES)
            if misplaced:
                inside = (
                    f"inside the record template under {self.batch_key!r}"
                    if self.mode == "records" and self.batch_key is not None
                    else "inside the record template"
                    if self.mode == "records"
                    else f"only under {self.batch_key!r}"
                )
                problems.append(
                    f"{where}: with batching, " + ", ".join(f"$${n}" for n in misplaced) + f" must stand {inside}"
                )
        self._group_names = tuple(sorted(global_names)) if self.batching else ()
        self._heads: dict[bytes, tuple[bytes, Head]] = {}
        if problems:
            raise ConfigError(f"provider {name!r}", problems)

    def _compile_batch_json(self, payload: Any, where: str, problems: list[str]) -> tuple[Any, set[str]]:
        """Split a JSON batch payload into its global part and its per-message part (modes records, recipients,
        keyed); returns the global template (None: the records are the whole body) and the per-message names."""
        key = self.batch_key
        if key is None:  # records as the whole body
            if not (isinstance(payload, list) and len(payload) == 1 and isinstance(payload[0], dict)):
                problems.append(
                    f"{where}.payload: with batch mode records and no key, the payload must be an array with exactly "
                    "one object, the template of a record"
                )
                return None, set()
            self._item = _compile_json(payload[0], f"{where}.payload[0]", problems)
            return None, _placeholders(payload[0])
        if not isinstance(payload, dict):
            problems.append(f"{where}.payload: with batch mode {self.mode} the payload must be an object")
            return None, set()
        container = payload.get(key)
        global_template = {k: v for k, v in payload.items() if k != key}
        if self.mode == "records":
            if not (isinstance(container, list) and len(container) == 1 and isinstance(container[0], dict)):
                problems.append(
                    f"{where}.payload.{key}: the batch key must hold an array with exactly one object, the template "
                    "of a record"
                )
                return global_template, set()
            self._item = _compile_json(container[0], f"{where}.payload.{key}[0]", problems)
            return global_template, _placeholders(container[0])
        if self.mode == "recipients":
            if container != ["$$To"]:
                problems.append(f"{where}.payload.{key}: with batch mode recipients the key must hold [$$To]")
            return global_template, {"To"}
        # keyed: an object with a single entry whose key is $$To; its value is the per-recipient template.
        if not (isinstance(container, dict) and list(container) == ["$$To"]):
            problems.append(
                f"{where}.payload.{key}: with batch mode keyed the key must hold an object with the single key $$To"
            )
            return global_template, {"To"}
        entry = container["$$To"]
        self._item = _compile_json(entry, f"{where}.payload.{key}.$$To", problems)
        return global_template, {"To"} | _placeholders(entry)

    def _check_joined(self, where: str, problems: list[str]) -> None:
        """Mode joined: `key` names a form field, query parameter or top-level JSON key that is exactly $$To,
        and $$To stands nowhere else."""
        config, key = self.config, self.batch_key
        assert key is not None
        payload = config.payload
        if config.format is not None and isinstance(payload, dict) and key in payload:
            place, value = "payload", payload[key]
        elif key in config.query:
            place, value = "query", config.query[key]
        else:
            problems.append(f"{where}.batch.key: {key!r} is not a form field, query parameter or top-level JSON key")
            return
        if value != "$$To":
            problems.append(f"{where}.{place}.{key}: with batch mode joined the value must be exactly $$To")
        count = _occurrences(config.url, "To") + _occurrences(config.query, "To")
        count += _occurrences(config.headers, "To") + _occurrences(payload, "To")
        if count > 1:
            problems.append(f"{where}: with batch mode joined, $$To may stand only in {key!r}")

    # -- per message -----------------------------------------------------------------------------------------

    def check(self, values: Values) -> None:
        """Raise `RenderError` if the message lacks a value the template needs."""
        missing = [n for n in self._custom_sorted if values.get(n) is None] if self._custom_sorted else None
        if missing:
            raise RenderError(
                "missing custom replacement " + ", ".join(f"$${n}" for n in missing) + " in `replacements`",
                code="missing_replacement",
            )
        uses_body, uses_template = self._uses_body, self._uses_template
        if uses_body and uses_template:
            if values["Body"] is None and values["TemplateID"] is None:
                raise RenderError("the message needs `body` or `template_id`", code="missing_field")
        elif uses_body and values["Body"] is None:
            raise RenderError(f"provider {self.name!r} needs `body`", code="missing_field")
        elif uses_template and values["TemplateID"] is None:
            raise RenderError(f"provider {self.name!r} needs `template_id`", code="missing_field")

    def prepare(self, values: Values) -> Prepared:
        """Check a message and render what belongs to it alone."""
        self.check(values)
        recipient: str = values["To"]
        if self._digits:
            values = {**values, "To": recipient.removeprefix("+")}
        if not self.batching:
            return Prepared(b"", None, None, self.render_single(values, (recipient,)), recipient)
        group = dumps([values[n] for n in self._group_names]) if self._group_names else b""
        known = self._heads.get(group)
        if known is None:
            # The group's key is kept with its head: the messages of a group share one copy.
            known = (kept(group), self._render_head(values))
            if len(self._heads) >= 4096:
                self._heads.clear()
            self._heads[known[0]] = known
        group, head = known
        item: Any
        if self.mode == "records" or self.mode == "keyed":
            assert self._item is not None
            # Encoded now, once: a record that cannot be encoded is refused here, not when its whole batch is
            # sent, and the batch's body takes the bytes as they are. Compact bytes, not a dict, wait with it.
            entry = orjson.Fragment(kept(dumps(self._item(values))))
            item = entry if self.mode == "records" else (values["To"], entry)
        else:
            item = values["To"]
        return Prepared(group, head, item, None, recipient)

    def _render_head(self, values: Values) -> Head:
        if self.mode == "joined":
            # Rendered whole once, with this message's own number, so a bad global value is refused now.
            self.render_single(values)
            return Head(url="", headers=(), payload=None, values=values)
        url = self._render_url(values)
        headers = tuple((k, _header_value(v)) for k, v in self._headers.render(values))
        payload = self._payload(values) if self._payload is not None else None
        if payload is not None:
            dumps(payload)
        return Head(url=url, headers=headers, payload=payload)

    def _render_url(self, values: Values) -> str:
        url = self._url(values)
        query = self._query.render(values)
        if query:
            url += ("&" if "?" in url else "?") + urlencode(query)
        return url

    def render_single(self, values: Values, recipients: tuple[str, ...] = ()) -> HttpRequest:
        """Render the whole request from one set of values (one message, or a joined batch)."""
        url = self._render_url(values)
        headers = tuple((k, _header_value(v)) for k, v in self._headers.render(values))
        body: bytes | None = None
        if self._form is not None:
            body = urlencode(self._form.render(values)).encode()
            headers = _content_headers(headers, "application/x-www-form-urlencoded; charset=utf-8")
        elif self._payload is not None:
            body = kept(dumps(self._payload(values)))
            headers = _json_content(headers)
        return HttpRequest(self.config.method, url, headers, body, recipients)

    def render_batch(self, prepared: Sequence[Prepared]) -> HttpRequest:
        """Render one request carrying the prepared messages, which share their group (batching providers)."""
        head = prepared[0].head
        assert head is not None and self.batching
        recipients = tuple(p.recipient for p in prepared)
        if self.mode == "joined":
            assert head.values is not None
            values = {**head.values, "To": self.separator.join(p.item for p in prepared)}
            return self.render_single(values, recipients)
        container: Any
        if self.mode == "keyed":
            container = {p.item[0]: p.item[1] for p in prepared}
        else:
            container = [p.item for p in prepared]
        if self.batch_key is None:
            body = dumps(container)
        else:
            payload = dict(head.payload) if isinstance(head.payload, dict) else {}
            payload[self.batch_key] = container
            # Keep the batch key where the template placed it.
            body = dumps({k: payload[k] for k in self._order if k in payload})
        return HttpRequest(self.config.method, head.url, _json_content(head.headers), body, recipients)


def compile_providers(providers: Mapping[str, ProviderConfig]) -> dict[str, CompiledProvider]:
    """Compile every provider; all template problems are reported together."""
    compiled: dict[str, CompiledProvider] = {}
    problems: list[str] = []
    for name, config in providers.items():
        try:
            compiled[name] = CompiledProvider(name, config)
        except ConfigError as exc:
            problems += exc.problems
    if problems:
        raise ConfigError("providers", problems)
    return compiled
