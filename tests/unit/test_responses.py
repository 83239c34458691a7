import orjson

from consumer.responses import map_response, resolve_pointer
from schemas.config import ResponseConfig


def test_pointer_resolution():
    doc = {"a": [{"b/c": 1, "d~e": 2}]}
    assert resolve_pointer(doc, "/a/0/b~1c") == 1
    assert resolve_pointer(doc, "/a/0/d~0e") == 2
    assert resolve_pointer(doc, "") is doc


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
