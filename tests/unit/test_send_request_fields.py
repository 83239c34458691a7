"""The intake validates send-requests into plain dicts (`SendRequestFields`), not `SendRequest` models: the two
must accept and refuse exactly the same events, with the same values and the same errors."""

import orjson
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from pydantic import ValidationError

from schemas.events import METADATA_MAX_BYTES, SendRequest, validate_send_request

_JSON_LEAF = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**63), 2**63 - 1), st.floats(allow_nan=False), st.text(max_size=8)
)
_JSON = st.recursive(
    _JSON_LEAF,
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=5), inner, max_size=3),
    max_leaves=8,
)
_INT = st.integers(-(2**63), 2**63 - 1)
_TEXT = st.one_of(st.text(max_size=12), st.just(""), st.just("x" * 257), _INT, st.none())
_TIMES = st.sampled_from(
    ["2026-11-25T10:00:00Z", "2026-11-25T10:00:00+05:30", "2026-11-25T10:00:00", "yesterday", 1_764_064_800, None]
)
_BIG = {"blob": "x" * METADATA_MAX_BYTES}

_FIELDS = {
    "message_id": _TEXT,
    "campaign_id": _TEXT,
    "provider": _TEXT,
    "to": st.one_of(st.from_regex(r"\+[1-9][0-9]{6,14}", fullmatch=True), st.just("14155550100"), _TEXT),
    "body": st.one_of(st.text(max_size=20), st.none(), _INT),
    "template_id": _TEXT,
    "template_variables": _JSON,
    "replacements": st.one_of(st.dictionaries(st.text(max_size=5), _JSON, max_size=3), _JSON),
    "created_at": _TIMES,
    "expires_at": _TIMES,
    "metadata": st.one_of(st.dictionaries(st.text(max_size=5), _JSON, max_size=3), _JSON, st.just(_BIG)),
    "something_newer": _JSON,
}


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    if draw(st.integers(0, 20)) == 0:
        return draw(st.sampled_from([b"", b"[]", b"null", b"{", b'"text"', b"\xff\xfe"]))
    doc = {name: draw(values) for name, values in _FIELDS.items() if draw(st.integers(0, 3))}
    return orjson.dumps(doc)


def _errors(error: ValidationError) -> list[tuple[object, ...]]:
    # The whole event not being an object is a `model_type` error for the model, `dict_type` for the dict.
    kinds = {"model_type": "dict_type"}
    return [(e["loc"], e["msg"], kinds.get(e["type"], e["type"])) for e in error.errors(include_url=False)]


@settings(max_examples=600, deadline=None)
@given(documents())
def test_the_fields_dict_validates_exactly_as_the_model(raw: bytes) -> None:
    try:
        model = SendRequest.model_validate_json(raw)
    except ValidationError as exc:
        with pytest.raises(ValidationError) as caught:
            validate_send_request(raw)
        assert _errors(caught.value) == _errors(exc)
        return
    fields = validate_send_request(raw)
    assert set(fields) == model.model_fields_set
    assert fields == {name: getattr(model, name) for name in model.model_fields_set}


def test_a_valid_event_gives_its_fields_and_nothing_else():
    raw = orjson.dumps(
        {
            "message_id": "m-1",
            "campaign_id": "spring",
            "provider": "acme",
            "to": "+14155550100",
            "body": "Grüße",
            "created_at": "2026-11-25T10:00:00+01:00",
            "unknown": 1,
        }
    )
    fields = validate_send_request(raw)
    assert set(fields) == {"message_id", "campaign_id", "provider", "to", "body", "created_at"}
    assert fields["created_at"].utcoffset().total_seconds() == 3600


def test_the_checks_of_the_model_apply_to_the_dict():
    base = {"message_id": "m", "campaign_id": "c", "provider": "p", "to": "+14155550100"}
    for extra, words in (
        ({"created_at": "2026-11-25T10:00:00"}, "time zone offset"),
        ({"metadata": _BIG}, "metadata takes"),
        ({"to": "0800 123"}, "should match pattern"),
    ):
        with pytest.raises(ValidationError, match=words):
            validate_send_request(orjson.dumps({**base, **extra}))


def test_a_model_whose_checks_the_dict_form_would_miss_is_refused():
    from pydantic import BaseModel, Field, field_validator

    from schemas.events import _fields_of

    class Checked(BaseModel):
        to: str

        @field_validator("to")
        @classmethod
        def _plus(cls, value: str) -> str:
            return value

    class Aliased(BaseModel):
        to: str = Field(alias="recipient")

    with pytest.raises(TypeError, match="field types"):
        _fields_of(Checked)
    with pytest.raises(TypeError, match="alias"):
        _fields_of(Aliased)
