"""The status-tail summary: counts by status and provider, rates, the last failures with masked numbers."""

from __future__ import annotations

import orjson

from consumer.status import Origin, status_record
from consumer.tail import StatusSummary, mask_phones
from schemas.events import Status

ORIGIN = Origin("in", 0, 0)


def status(i: int, state: Status, provider: str = "p1", reason: tuple[str, str] | None = None) -> bytes:
    _, value = status_record(
        message_id=f"m-{i}", status=state, origin=ORIGIN, provider=provider, to="+14155550123", reason=reason
    )
    return value


def test_counts_statuses_by_status_and_by_provider():
    summary = StatusSummary()
    for i in range(7):
        summary.add(status(i, Status.SENT, "p1" if i % 2 else "p2"))
    summary.add(status(8, Status.FAILED, "p1", ("provider_refused", "bad number +14155550123")))
    summary.add(b"not json")
    summary.add(orjson.dumps({"no": "status"}))
    assert summary.total == 8 and summary.unreadable == 2
    assert summary.by_status == {"sent": 7, "failed": 1}
    assert summary.by_provider == {("p1", "sent"): 3, ("p2", "sent"): 4, ("p1", "failed"): 1}
    text = summary.render(elapsed=4.0, window=2.0, window_count=4)
    assert "8 statuses in 4.0 s: 2.0/s overall, 2.0/s in the last 2.0 s; 2 unreadable records" in text
    assert "sent                   7" in text and "p2              sent                   4" in text


def test_keeps_the_last_failures_with_phone_numbers_masked():
    summary = StatusSummary(keep_failures=2)
    for i in range(4):
        summary.add(status(i, Status.REJECTED, reason=("invalid_event", f"to +4479460{i:05d} is not valid")))
    assert [f.message_id for f in summary.failures] == ["m-2", "m-3"]
    text = summary.render(elapsed=1.0, window=1.0, window_count=0)
    assert "+14155550123" not in text and "+4479460" not in text
    assert "to=+141******23 message_id=m-3: to +447*******03 is not valid" in text


def test_masks_numbers_in_free_text_but_not_dates():
    assert mask_phones("expired at 2026-01-02T03:04:05+00:00") == "expired at 2026-01-02T03:04:05+00:00"
    assert mask_phones("number 919812345678 refused") == "number 9198******78 refused"
