"""Provider answers -> one outcome per message. Pure: no I/O."""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import lru_cache
from typing import Any

import orjson

from consumer.retry import is_retryable_status
from schemas.config import ResponseConfig

EXCERPT = 200
MIN_NATIONAL_DIGITS = 6
"""Shortest provider number matched as the tail of a request's number (a number given without country code)."""
_NOT_DIGITS = re.compile(r"\D")
DISPATCH_CODES = frozenset({"dispatch_error", "auth_failed"})
"""Outcome codes that mean the message could not be dispatched at all (status `dispatch_error`, not `failed`)."""


@dataclass(slots=True)
class RecordOutcome:
    """What the provider said about one message of a request. Treated as immutable (not frozen: one is made
    per request, and the same one may stand for each message of it)."""

    accepted: bool
    provider_message_id: str | None = None
    code: str | None = None
    message: str | None = None


@lru_cache(maxsize=1024)
def _tokens(pointer: str) -> tuple[str, ...]:
    return tuple(raw.replace("~1", "/").replace("~0", "~") for raw in pointer[1:].split("/"))


def resolve_pointer(doc: Any, pointer: str) -> Any:
    """Resolve an RFC 6901 JSON pointer; raises LookupError when it does not resolve."""
    if pointer == "":
        return doc
    tokens = _tokens(pointer)
    if len(tokens) == 1 and type(doc) is dict:  # the common `/id`, `/status`: one member of an object
        token = tokens[0]
        if token in doc:
            return doc[token]
        raise LookupError(pointer)
    for token in tokens:
        if isinstance(doc, dict):
            if token not in doc:
                raise LookupError(pointer)
            doc = doc[token]
        elif isinstance(doc, list):
            if not token.isdigit():
                raise LookupError(pointer)
            index = int(token)
            if index >= len(doc):
                raise LookupError(pointer)
            doc = doc[index]
        else:
            raise LookupError(pointer)
    return doc


def _id(value: Any) -> str | None:
    if value is None or isinstance(value, (dict, list)):
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


def map_response(
    config: ResponseConfig, status: int, body: bytes, count: int, recipients: Sequence[str] = ()
) -> list[RecordOutcome]:
    """Outcomes of the `count` messages of a request whose answer was `status` with `body`.

    `recipients` are the messages' numbers in request order; records keyed by recipient are matched by them.
    """
    if not is_accepted(config, status):
        code = (
            "provider_throttled"
            if status == 429
            else ("provider_error" if is_retryable_status(status) else "provider_refused")
        )
        failure = RecordOutcome(False, None, code, f"provider answered HTTP {status}: {excerpt(body)}")
        return [failure] * count
    doc: Any = None
    if body and config.reads_body:
        try:
            doc = orjson.loads(body)
        except orjson.JSONDecodeError:
            doc = None
    if config.body_status is not None:
        verdict = _lookup(doc, config.body_status)
        if not _listed(verdict, config.body_accepted):
            error = _lookup(doc, config.body_error)
            detail = str(error)[:EXCERPT] if error is not None and not isinstance(error, dict | list) else None
            message = f"the provider refused the request ({_show(verdict)}): {detail or excerpt(body)}"
            return [RecordOutcome(False, None, "provider_refused", message)] * count
    shared_id = _id(_lookup(doc, config.message_id))
    if config.records is None and config.refused_recipients is None:
        return [RecordOutcome(True, shared_id)] * count  # nothing per message: all accepted alike
    refused = _refused(doc, config.refused_recipients)
    records = _lookup(doc, config.records) if config.records is not None else None
    if isinstance(records, dict) and config.record_recipient is not None:
        records = [records]  # one record on its own, not an object keyed by recipient
    by_number = bool(refused) or isinstance(records, dict) or config.record_recipient is not None
    numbers = [digits(r) for r in recipients] if by_number and len(recipients) == count else [""] * count
    if not isinstance(records, list | dict):
        return [_unlisted(numbers[i], refused, shared_id) for i in range(count)]
    if isinstance(records, dict):
        matched = _match(numbers, records.items())
    elif config.record_recipient is not None:
        pointer = config.record_recipient
        matched = _match(numbers, ((_lookup(r, pointer), r) for r in records))
    else:
        # By position, over the messages the provider did not refuse outright.
        matched = {}
        position = 0
        for i in range(count):
            if numbers[i] and numbers[i] in refused:
                continue
            if position < len(records):
                matched[i] = records[position]
            position += 1
    outcomes = []
    for i in range(count):
        if i not in matched and numbers[i] and numbers[i] in refused:
            outcomes.append(_unlisted(numbers[i], refused, shared_id))
        else:
            outcomes.append(_record_outcome(config, matched.get(i), shared_id))
    return outcomes


def digits(number: Any) -> str:
    """A phone number reduced to its digits (`+91 98123` and 9198123 alike); empty for anything else."""
    if isinstance(number, bool):
        return ""
    if isinstance(number, int):
        return str(number) if number >= 0 else ""
    if isinstance(number, str):
        return _NOT_DIGITS.sub("", number)
    return ""


def _match(numbers: list[str], records: Iterable[tuple[Any, Any]]) -> dict[int, Any]:
    """Assign records to messages by number: exactly, else a provider number without its country code that
    ends exactly one of the request's numbers."""
    positions: dict[str, list[int]] = {}
    for i, number in enumerate(numbers):
        if number:
            positions.setdefault(number, []).append(i)
    matched: dict[int, Any] = {}
    for raw, record in records:
        number = digits(raw)
        if not number:
            continue
        free = [i for i in positions.get(number, ()) if i not in matched]
        national = number.lstrip("0")  # a national form may keep its trunk prefix: 09812345678
        if not free and len(national) >= MIN_NATIONAL_DIGITS:
            candidates = [i for i, n in enumerate(numbers) if n != number and n.endswith(national)]
            free = candidates if len(candidates) == 1 and candidates[0] not in matched else []
        if free:
            matched[free[0]] = record
    return matched


def _refused(doc: Any, pointer: str | None) -> frozenset[str]:
    listed = _lookup(doc, pointer)
    if not isinstance(listed, list):
        return frozenset()
    return frozenset(filter(None, (digits(n) for n in listed)))


def _unlisted(number: str, refused: frozenset[str], shared_id: str | None) -> RecordOutcome:
    if number and number in refused:
        return RecordOutcome(False, None, "provider_record_refused", "the provider refused the recipient")
    return RecordOutcome(True, shared_id)


def _listed(value: Any, accepted: Sequence[Any]) -> bool:
    if value is None or isinstance(value, (dict, list)):
        return False
    # Exact JSON equality: 0 and "0" differ, and so do true and 1.
    kind = type(value)
    for candidate in accepted:
        if type(candidate) is kind and value == candidate:
            return True
    return False


def _show(value: Any) -> str:
    if value is None:
        return "no status"
    return repr(value)[:EXCERPT]


def _lookup(doc: Any, pointer: str | None) -> Any:
    if pointer is None or doc is None:
        return None
    try:
        return resolve_pointer(doc, pointer)
    except LookupError:
        return None


def _record_outcome(config: ResponseConfig, record: Any, shared_id: str | None) -> RecordOutcome:
    if record is None:
        return RecordOutcome(False, shared_id, "provider_record_missing", "the provider's answer has no record for it")
    if config.record_message_id is not None:
        pid = _id(_lookup(record, config.record_message_id))
    else:
        pid = _id(record)  # a record that is a plain value is the id itself
    pid = pid or shared_id
    if config.record_status is None:
        return RecordOutcome(True, pid)
    status = _lookup(record, config.record_status)
    if _listed(status, config.record_accepted):
        return RecordOutcome(True, pid)
    error = _lookup(record, config.record_error)
    detail = f": {str(error)[:EXCERPT]}" if error is not None else ""
    return RecordOutcome(False, pid, "provider_record_refused", f"the provider refused the record ({status}){detail}")
