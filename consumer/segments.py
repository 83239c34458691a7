"""Message facts: the encoding a message body needs and how many SMS parts it takes. Pure: no I/O.

A body that only uses the GSM 03.38 default alphabet and its extension table travels as GSM-7: 160 septets in
one SMS, 153 per part of a concatenated one, where an extension character (``{ } [ ] ~ \\ | ^ €`` and form
feed) takes two septets and is never split across parts. Any other character makes the whole body UCS-2:
70 UTF-16 code units in one SMS, 67 per part, and a surrogate pair (an emoji, say) is never split either.

The common cases (no extension characters, no surrogate pairs, or a body that fits one SMS) are answered
from C-level string operations; only multi-part bodies that hold escapes or surrogate pairs are walked.
"""

from __future__ import annotations

import functools
import re
from collections.abc import Callable
from typing import Final

GSM_7: Final = "GSM-7"
UCS_2: Final = "UCS-2"

GSM_BASIC: Final = (
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
"""The GSM 03.38 default alphabet (the escape code itself left out: it is not a character of a text)."""
GSM_EXTENSION: Final = "\f^{}\\[~]|€"
"""Characters of the GSM 03.38 extension table: each is sent as an escape plus a septet."""

GSM_SINGLE, GSM_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67

_NOT_GSM = re.compile("[^" + re.escape(GSM_BASIC + GSM_EXTENSION) + "]")
_NOT_GSM_BASIC = re.compile("[^" + re.escape(GSM_BASIC) + "]")
_EXTENSION = frozenset(GSM_EXTENSION)


def encoding_of(body: str) -> str:
    """`GSM-7` when every character is in the GSM alphabet or its extension table, else `UCS-2`."""
    return UCS_2 if _NOT_GSM.search(body) else GSM_7


@functools.lru_cache(maxsize=4096)
def message_facts(body: str | None) -> tuple[str | None, int | None]:
    """The encoding and the number of SMS parts of a body; `(None, None)` without a body (template-only).

    An empty body still makes one SMS.
    """
    if body is None:
        return None, None
    if _NOT_GSM_BASIC.search(body) is None:  # the common case: no escapes, one pass
        return GSM_7, _parts(body, len(body), GSM_SINGLE, GSM_PART, False, _gsm_width)
    if _NOT_GSM.search(body) is None:
        escapes = sum(map(body.count, GSM_EXTENSION))
        return GSM_7, _parts(body, len(body) + escapes, GSM_SINGLE, GSM_PART, escapes > 0, _gsm_width)
    units = len(body.encode("utf-16-le")) // 2
    return UCS_2, _parts(body, units, UCS2_SINGLE, UCS2_PART, units > len(body), _utf16_width)


def _gsm_width(ch: str) -> int:
    return 2 if ch in _EXTENSION else 1


def _utf16_width(ch: str) -> int:
    return 2 if ord(ch) > 0xFFFF else 1


def _parts(body: str, units: int, single: int, part: int, wide_chars: bool, width: Callable[[str], int]) -> int:
    if units <= single:
        return 1
    if not wide_chars:
        return -(-units // part)
    # Two-unit characters are never split across parts, so a part may end one unit short: count by walking.
    parts, used = 1, 0
    for ch in body:
        w = width(ch)
        if used + w > part:
            parts += 1
            used = 0
        used += w
    return parts
