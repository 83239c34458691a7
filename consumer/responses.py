"""Provider answers -> one outcome per message. Pure: no I/O."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import orjson

from consumer.retry import is_retryable_status
from schemas.config import ResponseConfig

EXCERPT = 200
DISPATCH_CODES = frozenset({"dispatch_error", "auth_failed"})
"""Outcome codes that mean the message could not be dispatched at all (status `dispatch_error`, not `failed`)."""


@dataclass(frozen=True, slots=True)
class RecordOutcome:
    """What the provider said about one message of a request."""

    accepted: bool
    provider_message_id: str | None = None
    code: str | None = None
    message: str | None = None


def resolve_pointer(doc: Any, pointer: str) -> Any:
    """Resolve an RFC 6901 JSON pointer; raises LookupError when it does not resolve."""
    if pointer == "":
        return doc
    for raw in pointer[1:].split("/"):
        token = raw.replace("~1", "/").replace("~0", "~")
        if isinstance(doc, list):
            if not token.isdigit():
                raise LookupError(pointer)
            index = int(token)
            if index >= len(doc):
                raise LookupError(pointer)
            doc = doc[index]
        elif isinstance(doc, dict):
            if token not in doc:
                raise LookupError(pointer)
            doc = doc[token]
        else:
            raise LookupError(pointer)
    return doc


def _id(value: Any) -> str | None:
    if value is None or isinstance(value, dict | list):
        return None
    return str(value)


def excerpt(body: bytes) -> str:
    """The start of an answer body, for a human reading a reason."""
    text = body[:EXCERPT].decode("utf-8", errors="replace")
    return text + ("..." if len(body) > EXCERPT else "")


def is_accepted(config: ResponseConfig, status: int) -> bool:
    if config.accepted_status is not None:
        return status in config.accepted_status
    return 200 <= status <= 299


def map_response(config: ResponseConfig, status: int, body: bytes, count: int) -> list[RecordOutcome]:
    """Outcomes of the `count` messages of a request whose answer was `status` with `body`."""
    if not is_accepted(config, status):
        code = (
            "provider_throttled"
            if status == 429
            else ("provider_error" if is_retryable_status(status) else "provider_refused")
        )
        refused = RecordOutcome(False, None, code, f"provider answered HTTP {status}: {excerpt(body)}")
        return [refused] * count
    doc: Any = None
    if config.message_id is not None or config.records is not None:
        try:
            doc = orjson.loads(body) if body else None
        except orjson.JSONDecodeError:
            doc = None
    shared_id: str | None = None
    if config.message_id is not None and doc is not None:
        try:
            shared_id = _id(resolve_pointer(doc, config.message_id))
        except LookupError:
            shared_id = None
    if config.records is None or doc is None:
        return [RecordOutcome(True, shared_id)] * count
    try:
        records = resolve_pointer(doc, config.records)
    except LookupError:
        records = None
    if not isinstance(records, list):
        return [RecordOutcome(True, shared_id)] * count
    outcomes = []
    for i in range(count):
        record = records[i] if i < len(records) else None
        outcomes.append(_record_outcome(config, record, shared_id))
    return outcomes


def _lookup(doc: Any, pointer: str | None) -> Any:
    if pointer is None or doc is None:
        return None
    try:
        return resolve_pointer(doc, pointer)
    except LookupError:
        return None


def _record_outcome(config: ResponseConfig, record: Any, shared_id: str | None) -> RecordOutcome:
    pid = _id(_lookup(record, config.record_message_id)) or shared_id
    if config.record_status is None:
        return RecordOutcome(True, pid)
    if record is None:
        return RecordOutcome(False, pid, "provider_record_missing", "the provider's answer has no record for it")
    status = _lookup(record, config.record_status)
    if status in config.record_accepted:
        return RecordOutcome(True, pid)
    error = _lookup(record, config.record_error)
    detail = f": {str(error)[:EXCERPT]}" if error is not None else ""
    return RecordOutcome(False, pid, "provider_record_refused", f"the provider refused the record ({status}){detail}")
