from datetime import UTC, datetime, timedelta

import orjson
import pytest

from consumer.intake import Envelope, Intake, Refusal
from consumer.status import Origin, status_record
from consumer.templates import compile_providers
from schemas.config import ProviderConfig
from schemas.events import DLQ_HEADERS, DeliveryStatus, Status

ORIGIN = Origin("in", 2, 41, 1_700_000_000_000)


@pytest.fixture
def intake() -> Intake:
    config = ProviderConfig.model_validate(
        {"url": "https://x.example", "format": "json", "payload": {"to": "$$To", "text": "$$Body", "h": "$$hid"}}
    )
    return Intake(compile_providers({"p": config}))


def valid(**fields):
    base = {
        "message_id": "m1",
        "campaign_id": "c",
        "provider": "p",
        "to": "+14155550100",
        "body": "hi",
        "replacements": {"hid": "x"},
        "metadata": {"k": [1]},
    }
    base.update(fields)
    return orjson.dumps(base)


def status_of(refusal: Refusal) -> DeliveryStatus:
    assert refusal.status is not None
    key, value = refusal.status
    status = DeliveryStatus.model_validate_json(value)
    assert key == status.message_id.encode()
    return status


def test_valid_event_becomes_an_envelope_with_the_record_time_as_created_at(intake):
    out = intake.accept(b"k", valid(), ORIGIN)
    assert isinstance(out, Envelope)
    assert out.created_at == datetime.fromtimestamp(1_700_000_000, UTC)
    assert out.prepared.request is not None


@pytest.mark.parametrize(
    ("raw", "code", "has_status"),
    [
        (b"{not json", "invalid_json", False),
        (b"\xff\xfe\x00", "invalid_json", False),
        (b'"a string"', "invalid_event", False),
        (orjson.dumps({"message_id": "m2", "campaign_id": "c", "provider": "p", "body": "x"}), "invalid_event", True),
        (valid(to="0044123"), "invalid_event", True),
        (valid(provider="nope"), "unknown_provider", True),
        (valid(replacements={}), "missing_replacement", True),
        (valid(body=None), "missing_field", True),
    ],
)
def test_invalid_events_are_rejected_and_dead_lettered(intake, raw, code, has_status):
    out = intake.accept(b"key", raw, ORIGIN)
    assert isinstance(out, Refusal) and out.code == code
    assert out.dead_letter is not None and out.dead_letter.value == raw and out.dead_letter.key == b"key"
    headers = dict(out.dead_letter.headers)
    assert headers[DLQ_HEADERS["error_code"]] == code.encode()
    assert headers[DLQ_HEADERS["source_offset"]] == b"41"
    if has_status:
        status = status_of(out)
        assert status.status is Status.REJECTED and status.reason is not None and status.reason.code == code
        assert status.source.offset == 41 and status.source.partition == 2
    else:
        assert out.status is None


def test_rejected_status_keeps_the_metadata_it_could_read(intake):
    status = status_of(intake.accept(None, valid(provider="nope"), ORIGIN))  # type: ignore[arg-type]
    assert status.metadata == {"k": [1]} and status.to == "+14155550100" and status.campaign_id == "c"


def test_expired_event_is_not_sent_and_not_dead_lettered(intake):
    past = (datetime.now(UTC) - timedelta(seconds=1)).isoformat()
    out = intake.accept(None, valid(expires_at=past), ORIGIN)
    assert isinstance(out, Refusal) and out.dead_letter is None
    assert status_of(out).status is Status.EXPIRED


def test_naive_timestamps_are_refused(intake):
    out = intake.accept(None, valid(created_at="2026-01-01T00:00:00"), ORIGIN)
    assert isinstance(out, Refusal) and out.code == "invalid_event"


def test_status_records_match_the_contract():
    key, value = status_record(
        message_id="m",
        status=Status.FAILED,
        origin=ORIGIN,
        campaign_id="c",
        provider="p",
        to="+14155550100",
        reason=("provider_refused", "HTTP 400"),
        http_status=400,
        provider_message_id=None,
        attempts=1,
        batch_id="b",
        batch_size=10,
        created_at=datetime.now(UTC),
        metadata={"a": 1},
    )
    parsed = DeliveryStatus.model_validate_json(value)
    assert set(orjson.loads(value)) == set(DeliveryStatus.model_fields)
    assert parsed.reason is not None and parsed.reason.code == "provider_refused" and key == b"m"


def test_every_status_carries_the_body_encoding_and_segments(intake):
    accepted = intake.accept(None, valid(body="Привет " * 12), ORIGIN)
    assert isinstance(accepted, Envelope) and (accepted.encoding, accepted.segments) == ("UCS-2", 2)
    rejected = status_of(intake.accept(None, valid(body="hi €", replacements={}), ORIGIN))
    assert rejected.status is Status.REJECTED
    assert (rejected.encoding, rejected.segments) == ("GSM-7", 1)
    template_only = status_of(intake.accept(None, valid(body=None, template_id="T"), ORIGIN))
    assert template_only.encoding is None and template_only.segments is None


def test_metadata_too_large_to_repeat_in_every_status_is_refused_and_kept_out_of_its_status(intake):
    from schemas.events import METADATA_MAX_BYTES

    just_fits = {"blob": "x" * (METADATA_MAX_BYTES - len('{"blob":""}'))}
    assert isinstance(intake.accept(b"k", valid(metadata=just_fits), ORIGIN), Envelope)
    raw = valid(metadata={"blob": "x" * METADATA_MAX_BYTES})
    out = intake.accept(b"k", raw, ORIGIN)
    assert isinstance(out, Refusal) and out.code == "invalid_event"
    assert "metadata takes 65,547 bytes as JSON; at most 65,536" in out.message
    status = status_of(out)
    assert (status.status, status.message_id, status.metadata) == (Status.REJECTED, "m1", None)
    assert out.dead_letter is not None and out.dead_letter.value == raw
