"""Delivery reports, the pure part: reading callbacks, authenticating, correlating and de-duplicating."""

from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qsl, urlencode

import orjson
import pytest
from hypothesis import given
from hypothesis import strategies as st

from consumer.callbacks import (
    MalformedCallback,
    SeenReports,
    SentMessage,
    SentStore,
    SignedRequest,
    authenticated,
    correlate,
    dedupe_key,
    parse_form,
    read_reports,
    report_status,
    same_number,
    twilio_signature,
)
from consumer.config import load_preset
from schemas.config import CallbackConfig, ProviderConfig
from schemas.events import DeliveryStatus, Status

FORM = "application/x-www-form-urlencoded"


def preset_callback(name: str) -> CallbackConfig:
    config = ProviderConfig.model_validate(
        {**load_preset(name), "url": "https://x.example/", "auth": {"type": "none"}}
    ).callback
    assert config is not None
    return config


def test_a_json_array_holds_several_reports_and_the_client_reference_is_read():
    config = preset_callback("bulksms")
    body = orjson.dumps(
        [
            {"id": "b1", "to": "+911", "status": {"type": "DELIVERED"}, "userSuppliedId": "m1"},
            {"id": "b2", "to": "+912", "status": {"type": "FAILED", "subtype": "ABSENT"}, "userSuppliedId": "m2"},
            {"id": "b3", "to": "+913", "status": {"type": "SENT"}},
        ]
    )
    reports = read_reports(config, "application/json", body, {})
    assert [(r.provider_message_id, r.client_reference, r.status) for r in reports] == [
        ("b1", "m1", Status.DELIVERED),
        ("b2", "m2", Status.UNDELIVERED),
        ("b3", None, None),  # an intermediate value: not mapped, not published
    ]
    assert reports[1].error_code == "ABSENT"


def test_form_fields_and_query_string_callbacks_read_by_field_name():
    config = preset_callback("twilio")
    body = b"MessageSid=SM1&To=%2B14155550100&MessageStatus=undelivered&ErrorCode=30003"
    [report] = read_reports(config, FORM, body, {})
    assert (report.provider_message_id, report.recipient, report.raw_status, report.error_code) == (
        "SM1",
        "+14155550100",
        "undelivered",
        "30003",
    )
    [by_query] = read_reports(config, "", b"", {"MessageSid": "SM2", "MessageStatus": "delivered"})
    assert by_query.status is Status.DELIVERED


def test_a_form_field_may_hold_json_reports():
    config = preset_callback("msg91")
    data = orjson.dumps([{"requestId": "r1", "number": "919800000001", "desc": "DELIVERED", "status": 1}])
    [report] = read_reports(config, FORM, b"data=" + data.replace(b'"', b"%22"), {})
    assert (report.provider_message_id, report.recipient, report.status) == ("r1", "919800000001", Status.DELIVERED)


def test_the_secret_query_parameter_never_becomes_a_field():
    config = CallbackConfig(message_id="token", status="s", statuses={"ok": "delivered"})
    [report] = read_reports(config, "", b"", {"token": "x", "s": "ok"}, secret_parameter=None)
    assert report.provider_message_id == "x"
    with pytest.raises(MalformedCallback):
        read_reports(config, "", b"", {"token": "x", "s": "ok"}, secret_parameter="token")


@pytest.mark.parametrize(
    ("content_type", "body"),
    [
        ("application/json", b"{not json"),
        ("application/json", b"[]"),
        ("application/json", b"[1, 2]"),
        ("application/json", b'{"id": "b1"}'),  # no status
        ("application/json", b'{"status": {"type": "DELIVERED"}}'),  # no id
        ("text/xml", b"<x/>"),
    ],
)
def test_unreadable_callbacks_are_malformed(content_type, body):
    with pytest.raises(MalformedCallback):
        read_reports(preset_callback("bulksms"), content_type, body, {})


def test_secret_and_basic_authentication_and_no_auth_refuses_everything():
    secret = CallbackConfig.model_validate(
        {
            "auth": {"type": "secret", "header": "X-Token", "secret": "s3cret"},
            "message_id": "id",
            "status": "s",
            "statuses": {"a": "delivered"},
        }
    )
    assert authenticated(secret.auth, {"X-Token": "s3cret"}, {})
    assert not authenticated(secret.auth, {"X-Token": "s3cre"}, {})
    assert not authenticated(secret.auth, {}, {"X-Token": "s3cret"})
    by_query = secret.model_copy(update={"auth": secret.auth.model_copy(update={"header": None, "query": "t"})})
    assert authenticated(by_query.auth, {}, {"t": "s3cret"})
    basic = CallbackConfig.model_validate(
        {
            "auth": {"type": "basic", "username": "u", "password": "p:w"},
            "message_id": "id",
            "status": "s",
            "statuses": {"a": "delivered"},
        }
    )
    good = "Basic " + base64.b64encode(b"u:p:w").decode()
    assert authenticated(basic.auth, {"Authorization": good}, {})
    assert not authenticated(basic.auth, {"Authorization": "Basic " + base64.b64encode(b"u:p").decode()}, {})
    assert not authenticated(basic.auth, {"Authorization": "Basic !!"}, {})
    assert not authenticated(None, {}, {})


def test_a_secret_auth_needs_exactly_one_place():
    with pytest.raises(ValueError):
        CallbackConfig.model_validate(
            {"auth": {"type": "secret", "secret": "s"}, "message_id": "i", "status": "s", "statuses": {"a": "failed"}}
        )


def test_the_store_finds_messages_by_provider_id_and_by_recipient_when_an_id_is_shared():
    store = SentStore(10)
    store.remember("twilio", "SM1", SentMessage("m1", "c", "+14155550100"))
    store.remember("sinch", "batch", SentMessage("m2", "c", "+919800000001"))
    store.remember("sinch", "batch", SentMessage("m3", "c", "+919800000002"))
    assert store.find("twilio", "SM1", None).message_id == "m1"
    assert store.find("twilio", "SM2", None) is None
    assert store.find("sinch", "batch", "919800000002").message_id == "m3"
    assert store.find("sinch", "batch", "09800000001").message_id == "m2"  # national form
    assert store.find("sinch", "batch", None) is None  # ambiguous
    assert store.find("sinch", "batch", "+15550000000") is None


def test_the_store_is_bounded_and_forgets_the_oldest_first():
    store = SentStore(3)
    for i in range(5):
        store.remember("p", "shared" if i < 2 else f"id{i}", SentMessage(f"m{i}", "c", f"+1415555010{i}"))
    assert len(store) == 3
    assert store.get("m0") is None and store.get("m1") is None
    assert store.find("p", "shared", "+14155550101") is None
    assert store.find("p", "id4", None).message_id == "m4"


def test_correlation_prefers_the_client_reference_and_a_miss_keeps_the_provider_id():
    store = SentStore(10)
    store.remember("bulksms", "b1", SentMessage("m1", "spring", "+911", {"k": 1}))
    config = preset_callback("bulksms")
    [echoed, missed] = read_reports(
        config,
        "application/json",
        orjson.dumps(
            [
                {"id": "b1", "to": "+911", "status": {"type": "DELIVERED"}, "userSuppliedId": "m1"},
                {"id": "zz", "to": "+14155550100", "status": {"type": "FAILED"}},
            ]
        ),
        {},
    )
    hit = correlate("bulksms", echoed, store)
    assert hit.message_id == "m1" and hit.message is not None
    key, value = report_status("bulksms", echoed, hit)
    status = DeliveryStatus.model_validate_json(value)
    assert key == b"m1"
    assert (status.status, status.campaign_id, status.metadata, status.source) == (
        Status.DELIVERED,
        "spring",
        {"k": 1},
        None,
    )
    assert status.reason is not None and status.reason.code == "DELIVERED"
    miss = correlate("bulksms", missed, store)
    assert miss.message_id is None
    key, value = report_status("bulksms", missed, miss)
    status = DeliveryStatus.model_validate_json(value)
    assert key == b"zz"
    assert (status.message_id, status.provider_message_id, status.status, status.to) == (
        None,
        "zz",
        Status.UNDELIVERED,
        "+14155550100",
    )


def test_dedupe_keys_name_provider_message_and_status_and_the_memory_is_bounded():
    config = preset_callback("twilio")
    [a] = read_reports(config, "", b"", {"MessageSid": "SM1", "MessageStatus": "delivered"})
    [b] = read_reports(config, "", b"", {"MessageSid": "SM1", "MessageStatus": "undelivered"})
    store = SentStore(10)
    assert dedupe_key("twilio", a, correlate("twilio", a, store)) != dedupe_key(
        "twilio", b, correlate("twilio", b, store)
    )
    store.remember("twilio", "SM1", SentMessage("m1", "c", "+1"))
    assert dedupe_key("twilio", a, correlate("twilio", a, store))[2] == "m1"
    seen = SeenReports(2)
    for key in ("k1", "k2", "k3"):
        seen.add(key)
    assert "k1" not in seen and "k2" in seen and "k3" in seen


def test_numbers_compare_by_digits():
    assert same_number("+919812345678", "919812345678")
    assert same_number("+919812345678", "09812345678")
    assert not same_number("+919812345678", "11112345678")
    assert not same_number("", "1")


@pytest.mark.parametrize("name", ["bulksms", "exotel", "msg91", "plivo", "textlocal", "twilio", "sinch"])
def test_presets_with_delivery_reports_read_their_fakes_callbacks(name):
    from tests.fakes.providers import FAKES

    fake = FAKES[name]("/", sid="AC")
    fake.issued["+919812345678"] = f"{name}-id"
    fake.references["+919812345678"] = "m1"
    for delivered, expected in ((True, Status.DELIVERED), (False, None)):
        content_type, body = fake.callback("+919812345678", delivered)
        [report] = read_reports(preset_callback(name), content_type, body, {})
        if expected is not None:
            assert report.status is expected
        else:
            assert report.status in (Status.UNDELIVERED, Status.FAILED)
        if name != "textlocal":
            assert report.provider_message_id == f"{name}-id"
        assert report.recipient is None or same_number(report.recipient, "+919812345678")


@given(st.lists(st.tuples(st.text(max_size=12), st.text(max_size=12)), max_size=6))
def test_form_parsing_reads_what_urlencode_wrote_as_parse_qsl_does(pairs):
    text = urlencode(pairs)
    assert parse_form(text) == dict(parse_qsl(text, keep_blank_values=True)) == dict(pairs)


@given(st.text(alphabet="ab=&%+2Fc0é ", max_size=30))
def test_form_parsing_matches_parse_qsl_on_any_text(text):
    assert parse_form(text) == dict(parse_qsl(text, keep_blank_values=True))


TWILIO_PARAMS = {
    "CallSid": "CA1234567890ABCDE",
    "Caller": "+12349013030",
    "Digits": "1234",
    "From": "+12349013030",
    "To": "+18005551212",
}


def test_twilio_signature_matches_twilio_s_published_example():
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    assert twilio_signature("12345", url, TWILIO_PARAMS) == "0/KCTR6DLpKmkAf8muzZqo1nDgQ="


def _twilio(**auth):
    config = CallbackConfig.model_validate(
        {
            "auth": {"type": "twilio_signature", "auth_token": "12345", "public_url": "https://mycompany.com", **auth},
            "message_id": "MessageSid",
            "status": "MessageStatus",
            "statuses": {"delivered": "delivered"},
        }
    )
    return config.auth


def test_twilio_signed_form_callbacks_are_taken_and_anything_altered_is_refused():
    auth = _twilio()
    body = urlencode(TWILIO_PARAMS).encode()
    url = "https://mycompany.com/myapp.php?foo=1&bar=2"
    signed = SignedRequest(url, FORM, body)
    good = {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ="}
    assert authenticated(auth, good, {}, signed)
    assert not authenticated(auth, {}, {}, signed)
    assert not authenticated(auth, {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ"}, {}, signed)
    assert not authenticated(auth, good, {}, SignedRequest(url, FORM, body.replace(b"1234", b"1235")))
    assert not authenticated(auth, good, {}, SignedRequest(url.replace("foo=1", "foo=2"), FORM, body))
    assert not authenticated(auth, good, {}, None)
    assert not authenticated(_twilio(auth_token="another"), good, {}, signed)
    # Signed with the default port written out, or without it: both are Twilio's.
    assert authenticated(auth, good, {}, SignedRequest(url.replace(".com/", ".com:443/"), FORM, body))


def test_twilio_signature_needs_the_public_url_and_odd_input_is_refused_not_an_error():
    with pytest.raises(ValueError, match="public_url"):
        CallbackConfig.model_validate(
            {
                "auth": {"type": "twilio_signature", "auth_token": "12345"},
                "message_id": "MessageSid",
                "status": "MessageStatus",
                "statuses": {"delivered": "delivered"},
            }
        )
    with pytest.raises(ValueError, match="public_url"):
        _twilio(public_url="https://x.example/path")  # scheme and host only: the path is the request's
    auth = _twilio()
    body = urlencode(TWILIO_PARAMS).encode()
    assert not authenticated(auth, {"X-Twilio-Signature": "\udcff"}, {}, SignedRequest("https://a/", FORM, body))
    signed = SignedRequest("https://mycompany.com:notaport/myapp.php", FORM, body)
    assert not authenticated(auth, {"X-Twilio-Signature": "0/KCTR6DLpKmkAf8muzZqo1nDgQ="}, {}, signed)


def test_twilio_signed_json_callbacks_are_covered_by_the_body_hash_in_the_url():
    auth = _twilio()
    body = orjson.dumps({"MessageSid": "SM1", "MessageStatus": "delivered"})
    url = f"https://hooks.example.com/callbacks/twilio?bodySHA256={hashlib.sha256(body).hexdigest()}"
    header = {"X-Twilio-Signature": twilio_signature("12345", url, None)}
    assert authenticated(auth, header, {}, SignedRequest(url, "application/json", body))
    assert not authenticated(auth, header, {}, SignedRequest(url, "application/json", body + b" "))
