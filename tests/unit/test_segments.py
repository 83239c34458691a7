import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from consumer.segments import GSM_BASIC, GSM_EXTENSION, encoding_of, message_facts


def reference(body: str) -> tuple[str, int]:
    """A plain walk over the body: the rules of GSM 03.38 / UCS-2 concatenation, written the slow way."""
    gsm = all(ch in GSM_BASIC or ch in GSM_EXTENSION for ch in body)
    widths = [2 if ch in GSM_EXTENSION else 1 for ch in body] if gsm else [2 if ord(ch) > 0xFFFF else 1 for ch in body]
    single, part = (160, 153) if gsm else (70, 67)
    if sum(widths) <= single:
        return ("GSM-7" if gsm else "UCS-2"), 1
    parts, used = 1, 0
    for w in widths:
        if used + w > part:
            parts, used = parts + 1, 0
        used += w
    return ("GSM-7" if gsm else "UCS-2"), parts


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        (None, (None, None)),
        ("", ("GSM-7", 1)),
        ("a" * 160, ("GSM-7", 1)),
        ("a" * 161, ("GSM-7", 2)),
        ("a" * 306, ("GSM-7", 2)),
        ("a" * 307, ("GSM-7", 3)),
        ("€" * 80, ("GSM-7", 1)),  # 160 septets: each extension character counts two
        ("€" * 81, ("GSM-7", 2)),
        ("a" * 152 + "€", ("GSM-7", 1)),
        ("a" * 159 + "€", ("GSM-7", 2)),  # 161 septets
        ("a" * 152 + "€" + "a" * 10, ("GSM-7", 2)),  # the escape pair moves whole to part two
        ("Grüße, Ñoño! @£$¥", ("GSM-7", 1)),
        ("Ñandú", ("UCS-2", 1)),  # ú is not in the GSM alphabet (ù is)
        ("ç", ("UCS-2", 1)),  # lower-case c cedilla is not in the GSM alphabet (only Ç is)
        ("é" * 70, ("GSM-7", 1)),
        ("ж" * 70, ("UCS-2", 1)),
        ("ж" * 71, ("UCS-2", 2)),
        ("ж" * 134, ("UCS-2", 2)),
        ("ж" * 135, ("UCS-2", 3)),
        ("😀" * 35, ("UCS-2", 1)),  # 70 UTF-16 code units
        ("😀" * 36, ("UCS-2", 2)),
        ("ж" * 66 + "😀", ("UCS-2", 1)),  # 68 units fit one SMS
        ("ж" * 66 + "😀" + "ж" * 4, ("UCS-2", 2)),  # the surrogate pair is not split at unit 67
    ],
)
def test_encoding_and_segments(body, expected):
    assert message_facts(body) == expected


def test_one_character_outside_gsm_makes_the_whole_body_ucs2():
    assert encoding_of("a" * 100) == "GSM-7"
    assert encoding_of("a" * 100 + "✓") == "UCS-2"
    assert message_facts("a" * 100 + "✓") == ("UCS-2", 2)


gsm_text = st.text(alphabet=st.sampled_from(GSM_BASIC + GSM_EXTENSION), max_size=800)


@settings(max_examples=300, deadline=None)
@given(body=st.one_of(gsm_text, st.text(max_size=800)))
def test_facts_agree_with_a_plain_walk(body):
    assert message_facts(body) == reference(body)


@settings(max_examples=200, deadline=None)
@given(body=st.text(max_size=600), extra=st.text(min_size=1, max_size=50))
def test_a_longer_body_of_the_same_encoding_never_takes_fewer_parts(body, extra):
    encoding, parts = message_facts(body)
    longer_encoding, longer_parts = message_facts(body + extra)
    assert parts is not None and longer_parts is not None
    if encoding == longer_encoding:
        assert longer_parts >= parts


@settings(max_examples=200, deadline=None)
@given(body=gsm_text)
def test_gsm_parts_bound_the_septets(body):
    septets = len(body) + sum(body.count(c) for c in GSM_EXTENSION)
    _, parts = message_facts(body)
    assert parts is not None
    if septets <= 160:
        assert parts == 1
    else:
        assert (parts - 1) * 152 < septets <= parts * 153
