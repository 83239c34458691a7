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
    request = p.render_batch([a, b])
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


# -- batch shapes ----------------------------------------------------------------------------------------------


def numbers(n: int) -> list[str]:
    return [f"+9198123{i:05d}" for i in range(n)]


def batch_of(p: CompiledProvider, n: int, **fields: Any):
    prepared = [
        p.prepare(message_values(event(message_id=f"m{i}", to=to, **fields))) for i, to in enumerate(numbers(n))
    ]
    assert len({x.group for x in prepared}) == 1
    return p.render_batch(prepared)


def test_records_as_the_whole_body():
    p = provider(
        url="https://x.example/messages",
        format="json",
        payload=[{"to": "$$To", "body": "$$Body", "from": "$$sender", "ref": "$$MessageID"}],
        batch={"mode": "records", "size": 10},
    )
    r = batch_of(p, 2, replacements={"sender": "ACME"})
    assert orjson.loads(r.body or b"") == [
        {"to": "+919812300000", "body": "hi", "from": "ACME", "ref": "m0"},
        {"to": "+919812300001", "body": "hi", "from": "ACME", "ref": "m1"},
    ]
    assert r.recipients == ("+919812300000", "+919812300001")


@pytest.mark.parametrize(
    ("method", "fmt", "where"),
    [("POST", "form", "payload"), ("GET", None, "query"), ("POST", "json", "payload")],
)
def test_joined_recipients_share_one_body_in_form_query_and_json(method, fmt, where):
    template = {"numbers": "$$To", "message": "$$Body", "sender": "$$sender"}
    config: dict[str, Any] = {"method": method, "url": "https://x.example/send"}
    if where == "query":
        config["query"] = template
    else:
        config.update(format=fmt, payload=template)
    p = provider(**config, batch={"mode": "joined", "key": "numbers", "separator": "<", "size": 5})
    r = batch_of(p, 3, replacements={"sender": "ACME"})
    if fmt == "json":
        fields = orjson.loads(r.body or b"")
    elif fmt == "form":
        fields = {k: v[0] for k, v in parse_qs((r.body or b"").decode()).items()}
    else:
        fields = {k: v[0] for k, v in parse_qs(urlsplit(r.url).query).items()}
    assert fields == {"numbers": "<".join(numbers(3)), "message": "hi", "sender": "ACME"}


def test_joined_messages_share_a_request_only_when_the_body_is_the_same():
    p = provider(
        url="https://x.example/send",
        format="form",
        payload={"numbers": "$$To", "message": "$$Body"},
        batch={"mode": "joined", "key": "numbers", "size": 5},
    )
    one = p.prepare(message_values(event(body="a")))
    two = p.prepare(message_values(event(body="b", to="+14155550101")))
    same = p.prepare(message_values(event(body="a", to="+14155550102")))
    assert one.group != two.group and one.group == same.group


def test_recipient_digits_format_drops_the_plus_everywhere_to_is_rendered():
    p = provider(
        url="https://x.example/send",
        format="form",
        recipient_format="digits",
        payload={"numbers": "$$To", "message": "$$Body"},
        batch={"mode": "joined", "key": "numbers", "size": 5},
    )
    r = batch_of(p, 2)
    assert parse_qs((r.body or b"").decode())["numbers"] == ["919812300000,919812300001"]
    assert r.recipients == ("+919812300000", "+919812300001")  # the E.164 numbers, for the answer


def test_recipients_array_under_a_key():
    p = provider(
        url="https://x.example/batches",
        format="json",
        payload={"from": "ACME", "to": ["$$To"], "body": "$$Body"},
        batch={"mode": "recipients", "key": "to", "size": 5},
    )
    r = batch_of(p, 3)
    assert orjson.loads(r.body or b"") == {"from": "ACME", "to": numbers(3), "body": "hi"}


def test_object_keyed_by_recipient():
    p = provider(
        url="https://x.example/messages",
        format="json",
        payload={
            "Addresses": {"$$To": {"ChannelType": "SMS", "Context": {"ref": "$$MessageID"}}},
            "MessageConfiguration": {"SMSMessage": {"Body": "$$Body"}},
        },
        batch={"mode": "keyed", "key": "Addresses", "size": 5},
    )
    r = batch_of(p, 2)
    assert orjson.loads(r.body or b"") == {
        "Addresses": {
            "+919812300000": {"ChannelType": "SMS", "Context": {"ref": "m0"}},
            "+919812300001": {"ChannelType": "SMS", "Context": {"ref": "m1"}},
        },
        "MessageConfiguration": {"SMSMessage": {"Body": "hi"}},
    }


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (
            {"payload": {"to": "$$To", "b": "$$Body"}, "batch": {"mode": "records", "size": 5}},
            "payload: with batch mode records and no key",
        ),
        (
            {"payload": {"n": "+1$$To", "b": "$$Body"}, "batch": {"mode": "joined", "key": "n", "size": 5}},
            "payload.n: with batch mode joined the value must be exactly $$To",
        ),
        (
            {"payload": {"n": "$$To", "b": "$$Body"}, "batch": {"mode": "joined", "key": "x", "size": 5}},
            "batch.key: 'x' is not a form field",
        ),
        (
            {"payload": {"n": "$$To", "b": "$$Body $$To"}, "batch": {"mode": "joined", "key": "n", "size": 5}},
            "$$To may stand only in 'n'",
        ),
        (
            {
                "payload": {"n": "$$To", "b": "$$Body", "r": "$$MessageID"},
                "batch": {"mode": "joined", "key": "n", "size": 5},
            },
            "$$MessageID cannot be used",
        ),
        (
            {"payload": {"to": "$$To", "b": "$$Body"}, "batch": {"mode": "recipients", "key": "to", "size": 5}},
            "payload.to: with batch mode recipients the key must hold [$$To]",
        ),
        (
            {
                "payload": {"to": ["$$To"], "b": "$$Body", "r": "$$MessageID"},
                "batch": {"mode": "recipients", "key": "to", "size": 5},
            },
            "$$MessageID must stand only under 'to'",
        ),
        (
            {"payload": {"A": {"x": {}}, "b": "$$Body $$To"}, "batch": {"mode": "keyed", "key": "A", "size": 5}},
            "payload.A: with batch mode keyed the key must hold an object with the single key $$To",
        ),
    ],
)
def test_batch_shape_problems_are_config_errors_with_a_path(config, expected):
    with pytest.raises(ConfigError) as err:
        provider(method="POST", url="https://x.example", format="json", **config)
    assert any(expected in problem and problem.startswith("providers.p") for problem in err.value.problems), (
        err.value.problems
    )


@pytest.mark.parametrize(
    ("batch", "field", "expected"),
    [
        ({"mode": "joined", "size": 5}, "batch", "mode joined needs `key`"),
        ({"mode": "joined", "key": "n", "separator": "1", "size": 5}, "batch.separator", "digit"),
        ({"mode": "joined", "key": "n", "separator": "+", "size": 5}, "batch.separator", "digit"),
        ({"mode": "records", "key": "n", "separator": ",", "size": 5}, "batch", "joined only"),
        ({"mode": "keyed", "key": "n", "size": 1001}, "batch.size", "1000"),
        ({"mode": "keyed", "key": "n", "size": 0}, "batch.size", "1"),
        ({"mode": "sideways", "key": "n", "size": 5}, "batch.mode", "records"),
    ],
)
def test_batch_options_are_validated_at_load(batch, field, expected):
    from consumer.config import parse_config

    body = {"url": "https://x.example", "format": "json", "payload": {"n": "$$To", "b": "$$Body"}, "batch": batch}
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"p": body}}, env={})
    assert any(p.startswith(f"providers.p.{field}:") and expected in p for p in err.value.problems), err.value.problems


def test_form_and_get_batch_only_by_joining():
    from consumer.config import parse_config

    body = {"url": "https://x.example", "format": "form", "payload": {"n": "$$To", "b": "$$Body"}}
    with pytest.raises(ConfigError) as err:
        parse_config({"providers": {"p": {**body, "batch": {"key": "n", "size": 5}}}}, env={})
    assert err.value.problems == [
        "providers.p: a form provider batches only with mode joined (recipients in a form field)"
    ]


# -- properties of every shape ---------------------------------------------------------------------------------

SHAPES: dict[str, dict[str, Any]] = {
    "records-key": {
        "format": "json",
        "payload": {"c": "$$c", "msgs": [{"to": "$$To", "text": "$$Body", "ref": "$$MessageID"}]},
        "batch": {"mode": "records", "key": "msgs"},
    },
    "records-body": {
        "format": "json",
        "payload": [{"to": "$$To", "text": "$$Body", "c": "$$c", "ref": "$$MessageID"}],
        "batch": {"mode": "records"},
    },
    "joined-form": {
        "format": "form",
        "payload": {"numbers": "$$To", "text": "$$Body", "c": "$$c"},
        "batch": {"mode": "joined", "key": "numbers", "separator": ","},
    },
    "joined-query": {
        "method": "GET",
        "query": {"numbers": "$$To", "text": "$$Body", "c": "$$c"},
        "batch": {"mode": "joined", "key": "numbers", "separator": ";"},
    },
    "joined-json": {
        "format": "json",
        "payload": {"dst": "$$To", "text": "$$Body", "c": "$$c"},
        "batch": {"mode": "joined", "key": "dst", "separator": "<"},
    },
    "recipients": {
        "format": "json",
        "payload": {"to": ["$$To"], "text": "$$Body", "c": "$$c"},
        "batch": {"mode": "recipients", "key": "to"},
    },
    "keyed": {
        "format": "json",
        "payload": {"A": {"$$To": {"ref": "$$MessageID"}}, "text": "$$Body", "c": "$$c"},
        "batch": {"mode": "keyed", "key": "A"},
    },
}


def shape_provider(shape: str, size: int) -> CompiledProvider:
    config = dict(SHAPES[shape])
    config["batch"] = {**config["batch"], "size": size}
    return provider(url="https://x.example/send", **config)


def decode(shape: str, p: CompiledProvider, request: Any) -> list[tuple[str, str, str]]:
    """(recipient, text, c) of each message, as the provider would read them from the request."""
    if shape.startswith("joined"):
        if shape == "joined-query":
            fields = parse_qs(urlsplit(request.url).query, keep_blank_values=True)
            flat = {k: v[0] for k, v in fields.items()}
        elif shape == "joined-form":
            fields = parse_qs((request.body or b"").decode(), keep_blank_values=True)
            flat = {k: v[0] for k, v in fields.items()}
        else:
            flat = orjson.loads(request.body or b"")
        key = p.batch_key
        assert key is not None
        return [(to, flat["text"], flat["c"]) for to in flat[key].split(p.separator)]
    doc = orjson.loads(request.body or b"")
    if shape == "records-key":
        return [(m["to"], m["text"], doc["c"]) for m in doc["msgs"]]
    if shape == "records-body":
        return [(m["to"], m["text"], m["c"]) for m in doc]
    if shape == "recipients":
        return [(to, doc["text"], doc["c"]) for to in doc["to"]]
    return [(to, doc["text"], doc["c"]) for to in doc["A"]]


e164 = st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True)


@settings(max_examples=60, deadline=None)
@given(
    shape=st.sampled_from(sorted(SHAPES)),
    size=st.integers(min_value=1, max_value=7),
    messages=st.lists(
        st.tuples(e164, st.sampled_from(["a", "b ✓", "c & d=e, f<g>"]), st.sampled_from(["x", "y;z"])),
        min_size=1,
        max_size=30,
    ),
)
def test_batch_splitting_preserves_every_message_for_every_shape(shape, size, messages):
    from consumer.render import render_requests

    p = shape_provider(shape, size)
    events = [
        event(message_id=f"m{i}", to=to, body=body, campaign_id="c", replacements={"c": c})
        for i, (to, body, c) in enumerate(messages)
    ]
    seen: list[tuple[str, str, str]] = []
    for request, count in render_requests(p, events):
        decoded = decode(shape, p, request)
        recipients = [to for to, _, _ in decoded]
        assert len(decoded) == count <= size
        assert list(request.recipients) == recipients
        if p.distinct_recipients:
            assert len(set(recipients)) == len(recipients)  # never the same number twice in one request
        seen += decoded
    assert sorted(seen) == sorted(messages)


@settings(max_examples=150, deadline=None)
@given(
    shape=st.sampled_from(sorted(SHAPES)),
    body=st.text(min_size=1),
    custom=st.text(),
    to=st.lists(e164, min_size=1, max_size=5, unique=True),
)
def test_rendering_never_produces_invalid_json_nor_lets_a_value_escape_its_field(shape, body, custom, to):
    p = shape_provider(shape, 10)
    prepared = [
        p.prepare(message_values(event(message_id=f"m{i}", to=n, body=body, replacements={"c": custom})))
        for i, n in enumerate(to)
    ]
    request = p.render_batch(prepared)
    if SHAPES[shape].get("format") == "json":
        orjson.loads(request.body or b"")  # valid JSON whatever the values hold
    assert decode(shape, p, request) == [(n, body, custom) for n in to]


@settings(max_examples=200, deadline=None)
@given(to=st.lists(e164, min_size=1, max_size=20), separator=st.text(min_size=1, max_size=8))
def test_a_joining_separator_can_never_occur_inside_a_recipient(to, separator):
    from pydantic import ValidationError

    from schemas.config import BatchConfig

    try:
        batch = BatchConfig(mode="joined", key="n", separator=separator, size=5)
    except ValidationError:
        assert any(ch.isdigit() or ch in "+\r\n" for ch in separator) or len(separator) > 8
        return
    joined = batch.join_with.join(to)
    assert joined.split(batch.join_with) == to
    assert not any(batch.join_with in number for number in to)
