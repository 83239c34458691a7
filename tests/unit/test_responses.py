import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.responses import _lookup, digits, map_response, resolve_pointer
from schemas.config import ResponseConfig


def test_pointer_resolution():
    doc = {"a": [{"b/c": 1, "d~e": 2}]}
    assert resolve_pointer(doc, "/a/0/b~1c") == 1
    assert resolve_pointer(doc, "/a/0/d~0e") == 2
    assert resolve_pointer(doc, "") is doc


_json = st.recursive(
    st.none() | st.booleans() | st.integers() | st.text(max_size=3),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(["", "a", "b/c", "0"]), inner),
    max_leaves=8,
)


@given(_json, st.sampled_from(["", "/", "/a", "/b~1c", "/0", "/a/0", "/a/a", "/zz"]))
def test_a_lookup_is_the_pointers_value_or_none(doc, pointer):
    try:
        expected = resolve_pointer(doc, pointer)
    except LookupError:
        expected = None
    assert _lookup(doc, pointer) == expected


def test_single_message_id_from_pointer():
    config = ResponseConfig(message_id="/SMSMessage/Sid")
    out = map_response(config, 200, orjson.dumps({"SMSMessage": {"Sid": "S1"}}), 1)
    assert out[0].accepted and out[0].provider_message_id == "S1"


def test_non_accepted_status_fails_every_record_with_a_code():
    out = map_response(ResponseConfig(), 400, b'{"error":"bad number"}', 3)
    assert len(out) == 3 and not any(o.accepted for o in out)
    assert out[0].code == "provider_refused" and "HTTP 400" in (out[0].message or "")


def test_accepted_status_list_overrides_2xx():
    config = ResponseConfig(accepted_status=[201])
    assert not map_response(config, 200, b"", 1)[0].accepted
    assert map_response(config, 201, b"", 1)[0].accepted


def test_batch_records_by_position_with_per_record_errors():
    config = ResponseConfig(
        records="/results",
        record_message_id="/id",
        record_status="/status",
        record_accepted=["ok"],
        record_error="/err",
    )
    body = orjson.dumps({"results": [{"id": "a", "status": "ok"}, {"status": "bad", "err": "invalid number"}]})
    out = map_response(config, 200, body, 3)
    assert out[0].accepted and out[0].provider_message_id == "a"
    assert (
        not out[1].accepted and out[1].code == "provider_record_refused" and "invalid number" in (out[1].message or "")
    )
    assert not out[2].accepted and out[2].code == "provider_record_missing"


def test_whole_body_array_and_shared_request_id():
    config = ResponseConfig(records="", record_message_id="/id")
    out = map_response(config, 201, orjson.dumps([{"id": 1}, {"id": 2}]), 2)
    assert [o.provider_message_id for o in out] == ["1", "2"]
    shared = map_response(ResponseConfig(message_id="/message"), 200, b'{"message": "req-9"}', 2)
    assert [o.provider_message_id for o in shared] == ["req-9", "req-9"]


def test_unreadable_body_still_counts_as_accepted_without_an_id():
    out = map_response(ResponseConfig(message_id="/id"), 200, b"OK", 1)
    assert out[0].accepted and out[0].provider_message_id is None


# -- batch answers of every shape ------------------------------------------------------------------------------


TO = ("+919812345601", "+919812345602", "+919812345603")


def test_records_keyed_by_recipient_object_with_per_record_failures():
    config = ResponseConfig(
        records="/MessageResponse/Result",
        record_message_id="/MessageId",
        record_status="/DeliveryStatus",
        record_accepted=["SUCCESSFUL"],
        record_error="/StatusMessage",
    )
    body = {
        "MessageResponse": {
            "Result": {
                "+919812345603": {"DeliveryStatus": "SUCCESSFUL", "StatusCode": 200, "MessageId": "c"},
                "+919812345601": {"DeliveryStatus": "SUCCESSFUL", "StatusCode": 200, "MessageId": "a"},
                "+919812345602": {"DeliveryStatus": "PERMANENT_FAILURE", "StatusCode": 400, "StatusMessage": "bad"},
            }
        }
    }
    out = map_response(config, 200, orjson.dumps(body), 3, TO)
    assert [o.provider_message_id for o in out] == ["a", None, "c"]
    assert [o.accepted for o in out] == [True, False, True]
    assert out[1].code == "provider_record_refused" and "bad" in (out[1].message or "")


@pytest.mark.parametrize("form", [lambda n: n, lambda n: n[1:], lambda n: int(n[1:]), lambda n: n[3:]])
def test_records_matched_by_recipient_whatever_form_the_number_comes_back_in(form):
    config = ResponseConfig(records="/messages", record_recipient="/recipient", record_message_id="/id")
    messages = [{"id": f"id-{n[-1]}", "recipient": form(n)} for n in reversed(TO[:2])]
    out = map_response(config, 200, orjson.dumps({"status": "success", "messages": messages}), 3, TO)
    assert [o.provider_message_id for o in out[:2]] == ["id-1", "id-2"] and out[0].accepted and out[1].accepted
    assert not out[2].accepted and out[2].code == "provider_record_missing"


def test_a_national_number_with_a_trunk_zero_still_matches():
    config = ResponseConfig(records="", record_recipient="/SMSMessage/To", record_message_id="/SMSMessage/Sid")
    body = [{"SMSMessage": {"To": "09812345602", "Sid": "s2"}}]
    out = map_response(config, 200, orjson.dumps(body), 3, TO)
    assert [o.provider_message_id for o in out] == [None, "s2", None]
    # A single object with `record_recipient` is one record, not an object keyed by recipient.
    one = map_response(config, 200, orjson.dumps(body[0]), 1, TO[1:2])
    assert one[0].accepted and one[0].provider_message_id == "s2"


def test_an_ambiguous_short_number_matches_nothing():
    config = ResponseConfig(records="/m", record_recipient="/n", record_message_id="/id")
    to = ("+449812345601", "+919812345601")
    out = map_response(config, 200, orjson.dumps({"m": [{"n": "9812345601", "id": "x"}]}), 2, to)
    assert [o.code for o in out] == ["provider_record_missing", "provider_record_missing"]


def test_an_ordered_id_list_skips_the_recipients_the_provider_refused():
    config = ResponseConfig(records="/message_uuid", refused_recipients="/invalid_number")
    body = {"message": "message(s) queued", "message_uuid": ["u1", "u3"], "invalid_number": ["919812345602"]}
    out = map_response(config, 202, orjson.dumps(body), 3, TO)
    assert [o.provider_message_id for o in out] == ["u1", None, "u3"]
    assert [o.accepted for o in out] == [True, False, True]
    assert out[1].code == "provider_record_refused"


def test_a_provider_level_error_in_an_accepted_answer_fails_every_message():
    config = ResponseConfig(
        body_status="/ErrorCode", body_accepted=["000"], body_error="/ErrorMessage", records="/MessageData"
    )
    out = map_response(config, 200, b'{"ErrorCode": "013", "ErrorMessage": "Invalid sender id"}', 3, TO)
    assert {(o.accepted, o.code) for o in out} == {(False, "provider_refused")}
    assert "Invalid sender id" in (out[0].message or "") and "'013'" in (out[0].message or "")
    # Status values compare as JSON values: the number 0 is not the string "000".
    assert not map_response(config, 200, b'{"ErrorCode": 0}', 1, TO[:1])[0].accepted
    # An answer that does not say it was accepted (not JSON, no status) is refused too.
    assert not map_response(config, 200, b"<html>OK</html>", 1, TO[:1])[0].accepted
    ok = map_response(config, 200, b'{"ErrorCode": "000", "MessageData": []}', 1, TO[:1])
    assert not ok[0].accepted and ok[0].code == "provider_record_missing"


def test_one_id_for_the_whole_request():
    config = ResponseConfig(body_status="/type", body_accepted=["success"], message_id="/message")
    out = map_response(config, 200, b'{"type": "success", "message": "req-42"}', 3, TO)
    assert [(o.accepted, o.provider_message_id) for o in out] == [(True, "req-42")] * 3
    refused = map_response(config, 200, b'{"type": "error", "message": "Invalid authkey"}', 3, TO)
    assert not refused[0].accepted and "Invalid authkey" in (refused[0].message or "")


def test_digits_normalisation():
    assert digits("+91 98123-45601") == "919812345601" and digits(919812345601) == "919812345601"
    assert digits(True) == "" and digits(None) == "" and digits({"n": 1}) == ""


@settings(max_examples=200, deadline=None)
@given(
    to=st.lists(st.from_regex(r"\+[1-9][0-9]{9,13}", fullmatch=True), min_size=1, max_size=12, unique=True),
    data=st.data(),
)
def test_keyed_answers_in_any_order_and_form_reach_the_right_message(to, data):
    order = data.draw(st.permutations(range(len(to))))
    form = data.draw(st.sampled_from(["e164", "digits", "int"]))
    rendered = {"e164": lambda n: n, "digits": lambda n: n[1:], "int": lambda n: int(n[1:])}[form]
    records = [{"n": rendered(to[i]), "id": f"id{i}"} for i in order]
    config = ResponseConfig(records="", record_recipient="/n", record_message_id="/id")
    out = map_response(config, 200, orjson.dumps(records), len(to), to)
    assert [o.provider_message_id for o in out] == [f"id{i}" for i in range(len(to))]
