from typing import Any
from urllib.parse import parse_qs, urlsplit

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.errors import ConfigError, RenderError
from consumer.templates import CompiledProvider, message_values
from schemas.config import ProviderConfig
from schemas.events import SendRequest


def provider(**config: Any) -> CompiledProvider:
    return CompiledProvider("p", ProviderConfig.model_validate(config))


def event(**fields: Any) -> SendRequest:
    base = {"message_id": "m1", "campaign_id": "c1", "provider": "p", "to": "+14155550100", "body": "hi"}
    base.update(fields)
    return SendRequest.model_validate(base)


SPEC_BATCH = {
    "method": "POST",
    "url": "https://sms.example/send",
    "format": "json",
    "payload": {
        "hid": "$$hid",
        "tid": "$$TemplateID",
        "cid": "$$CampaignID",
        "type": "template",
        "msgs": [{"seq": 1, "to": "$$To", "uid": "$$uid", "variables": "$$TemplateVariables", "enc": "utf8"}],
    },
    "batch": {"key": "msgs", "size": 2},
}


def test_the_spec_batch_example_renders_global_and_per_message_keys():
    p = provider(**SPEC_BATCH)
    a = p.prepare(
        message_values(
            event(
                message_id="a",
                to="+14155550101",
                template_id="T1",
                template_variables={"name": "Ada"},
                replacements={"hid": "H", "uid": "u1"},
            )
        )
    )
    b = p.prepare(
        message_values(
            event(
                message_id="b",
                to="+14155550102",
                template_id="T1",
                template_variables=["x", 2],
                replacements={"hid": "H", "uid": "u2"},
            )
        )
    )
    assert a.group == b.group
    assert a.head is not None
    request = p.render_batch(a.head, [a.item, b.item])
    body = orjson.loads(request.body or b"")
    assert list(body) == ["hid", "tid", "cid", "type", "msgs"]
    assert body["hid"] == "H" and body["tid"] == "T1" and body["cid"] == "c1" and body["type"] == "template"
    assert body["msgs"] == [
        {"seq": 1, "to": "+14155550101", "uid": "u1", "variables": {"name": "Ada"}, "enc": "utf8"},
        {"seq": 1, "to": "+14155550102", "uid": "u2", "variables": ["x", 2], "enc": "utf8"},
    ]
    assert ("Content-Type", "application/json; charset=utf-8") in request.headers


def test_different_global_values_never_share_a_batch():
    p = provider(**SPEC_BATCH)
    one = p.prepare(message_values(event(template_id="T1", replacements={"hid": "H1", "uid": "u"})))
    two = p.prepare(message_values(event(template_id="T1", replacements={"hid": "H2", "uid": "u"})))
    assert one.group != two.group


def test_the_spec_unbatched_example_sends_one_request_per_message():
    payload = {k: v for k, v in SPEC_BATCH["payload"].items() if k != "msgs"}
    payload.update(seq=1, to="$$To", uid="$$uid", variables="$$TemplateVariables")
    p = provider(method="POST", url="https://sms.example/send", format="json", payload=payload)
    prepared = p.prepare(message_values(event(template_id="T", replacements={"hid": "h", "uid": "u"})))
    assert prepared.request is not None
    body = orjson.loads(prepared.request.body or b"")
    assert body == {
        "hid": "h",
        "tid": "T",
        "cid": "c1",
        "type": "template",
        "seq": 1,
        "to": "+14155550100",
        "uid": "u",
        "variables": None,
    }


def test_get_puts_replacements_in_the_query_and_url_path():
    p = provider(
        method="GET",
        url="https://sms.example/accounts/$$acct/send",
        query={"user": "demo", "msisdn": "$$To", "msg": "$$Body", "tid": "$$TemplateID"},
    )
    r = p.prepare(message_values(event(body="a&b=c ü/?", replacements={"acct": "x/y"}))).request
    assert r is not None and r.method == "GET" and r.body is None
    parts = urlsplit(r.url)
    assert parts.path == "/accounts/x%2Fy/send"
    query = parse_qs(parts.query)
    assert query == {"user": ["demo"], "msisdn": ["+14155550100"], "msg": ["a&b=c ü/?"]}  # absent tid left out


def test_form_payload_is_urlencoded_utf8():
    p = provider(method="POST", url="https://x.example/s", format="form", payload={"To": "$$To", "Body": "$$Body"})
    r = p.prepare(message_values(event(body="Grüße 🎉 & more"))).request
    assert r is not None
    assert parse_qs((r.body or b"").decode()) == {"To": ["+14155550100"], "Body": ["Grüße 🎉 & more"]}
    assert ("Content-Type", "application/x-www-form-urlencoded; charset=utf-8") in r.headers


def test_interpolation_inside_a_longer_string():
    p = provider(
        method="POST",
        url="https://x.example/s",
        format="json",
        payload={"to": "tel:$$To", "text": "[$$CampaignID] $$Body", "vars": "v=$$TemplateVariables"},
    )
    r = p.prepare(message_values(event(template_variables={"a": 1}))).request
    assert r is not None
    assert orjson.loads(r.body or b"") == {"to": "tel:+14155550100", "text": "[c1] hi", "vars": 'v={"a":1}'}


def test_header_values_take_replacements_and_refuse_line_breaks():
    p = provider(
        method="POST",
        url="https://x.example/s",
        headers={"X-Campaign": "$$CampaignID"},
        format="json",
        payload={"to": "$$To", "text": "$$Body"},
    )
    r = p.prepare(message_values(event(campaign_id="spring"))).request
    assert r is not None and ("X-Campaign", "spring") in r.headers
    with pytest.raises(RenderError) as err:
        p.prepare(message_values(event(campaign_id="a\r\nX-Evil: 1")))
    assert err.value.code == "header_injection"


def test_missing_custom_replacement_is_named():
    p = provider(**SPEC_BATCH)
    with pytest.raises(RenderError) as err:
        p.prepare(message_values(event(template_id="T", replacements={"uid": "u"})))
    assert err.value.code == "missing_replacement" and "$$hid" in err.value.message


def test_body_or_template_id_is_required_by_what_the_template_uses():
    body_only = provider(method="POST", url="https://x.example", format="json", payload={"t": "$$To", "b": "$$Body"})
    with pytest.raises(RenderError):
        body_only.prepare(message_values(event(body=None, template_id="T")))
    both = provider(
        method="POST",
        url="https://x.example",
        format="json",
        payload={"t": "$$To", "b": "$$Body", "id": "$$TemplateID"},
    )
    both.prepare(message_values(event(body=None, template_id="T")))
    with pytest.raises(RenderError):
        both.prepare(message_values(event(body=None)))


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        ({"payload": {"b": "$$Body"}}, "must use $$To"),
        ({"payload": {"t": "$$To"}}, "must use $$Body or $$TemplateID"),
        (
            {"payload": {"to": "$$To", "msgs": [{"b": "$$Body"}]}, "batch": {"key": "msgs", "size": 5}},
            "$$To must stand inside the record template",
        ),
        ({"payload": {"to": "$$To", "b": "$$Body"}, "batch": {"key": "msgs", "size": 5}}, "exactly one object"),
        ({"payload": {"$$To": "x", "b": "$$Body"}}, "not in the key"),
    ],
)
def test_template_problems_are_config_errors_with_a_path(config, expected):
    with pytest.raises(ConfigError) as err:
        provider(method="POST", url="https://x.example", format="json", **config)
    assert any(expected in problem and problem.startswith("providers.p") for problem in err.value.problems)


# -- properties ----------------------------------------------------------------------------------------------

json_values = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(min_value=-(2**63), max_value=2**64 - 1)
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(),
    lambda children: st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4),
    max_leaves=12,
)


@settings(max_examples=200, deadline=None)
@given(body=st.text(min_size=1), variables=json_values, custom=st.text())
def test_rendered_json_is_valid_and_values_stay_in_their_fields(body, variables, custom):
    p = provider(
        method="POST",
        url="https://x.example/s",
        format="json",
        payload={"to": "$$To", "text": "$$Body", "vars": "$$TemplateVariables", "note": "x $$c y", "k": "const"},
    )
    r = p.prepare(message_values(event(body=body, template_variables=variables, replacements={"c": custom}))).request
    assert r is not None
    doc = orjson.loads(r.body or b"")
    assert set(doc) == {"to", "text", "vars", "note", "k"}
    assert doc["text"] == body and doc["vars"] == variables and doc["note"] == f"x {custom} y" and doc["k"] == "const"


@settings(max_examples=200, deadline=None)
@given(body=st.text(min_size=1), custom=st.text())
def test_form_values_never_escape_their_field(body, custom):
    p = provider(
        method="POST", url="https://x.example/s", format="form", payload={"to": "$$To", "m": "$$Body", "c": "$$c"}
    )
    r = p.prepare(message_values(event(body=body, replacements={"c": custom}))).request
    assert r is not None
    fields = parse_qs((r.body or b"").decode(), keep_blank_values=True)
    assert fields["m"] == [body] and fields["c"] == [custom] and set(fields) == {"to", "m", "c"}


@settings(max_examples=100, deadline=None)
@given(
    sizes=st.integers(min_value=1, max_value=20),
    hids=st.lists(st.sampled_from(["a", "b", "c"]), min_size=1, max_size=60),
)
def test_batch_splitting_preserves_every_message(sizes, hids):
    from consumer.render import render_requests

    config = dict(SPEC_BATCH, batch={"key": "msgs", "size": sizes})
    p = provider(**config)
    events = [
        event(message_id=f"m{i}", to=f"+1415555{i:04d}", template_id="T", replacements={"hid": h, "uid": str(i)})
        for i, h in enumerate(hids)
    ]
    requests = render_requests(p, events)
    seen = []
    for request, count in requests:
        doc = orjson.loads(request.body or b"")
        assert len(doc["msgs"]) == count <= sizes
        assert {hids[int(m["uid"])] for m in doc["msgs"]} == {doc["hid"]}
        seen += [int(m["uid"]) for m in doc["msgs"]]
    assert sorted(seen) == list(range(len(hids)))


def test_a_value_json_cannot_carry_is_a_render_error_not_a_crash():
    p = provider(**SPEC_BATCH)
    with pytest.raises(RenderError) as err:
        p.prepare(
            message_values(event(template_id="T", template_variables=2**70, replacements={"hid": "h", "uid": "u"}))
        )
    assert err.value.code == "unencodable_value"
