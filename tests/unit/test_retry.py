import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

from consumer.retry import RetryPolicy, is_retryable_status, parse_retry_after


def test_retryable_statuses():
    assert all(is_retryable_status(s) for s in (429, 500, 502, 503, 504, 408))
    assert not any(is_retryable_status(s) for s in (200, 400, 401, 403, 404, 422))


def test_backoff_is_full_jitter_under_an_exponential_ceiling():
    policy = RetryPolicy(max_attempts=10, initial=0.1, maximum=1.0)
    rng = random.Random(1)
    for attempt, ceiling in [(1, 0.1), (2, 0.2), (3, 0.4), (4, 0.8), (5, 1.0), (9, 1.0)]:
        delays = [policy.delay(attempt, rng=rng) for _ in range(200)]
        assert all(d is not None and 0 <= d <= ceiling for d in delays)
        assert max(d for d in delays if d is not None) > ceiling * 0.8


def test_no_delay_after_the_last_attempt():
    policy = RetryPolicy(max_attempts=3, initial=0.1, maximum=1.0)
    assert policy.delay(2) is not None
    assert policy.delay(3) is None


def test_retry_after_is_a_floor():
    policy = RetryPolicy(max_attempts=3, initial=0.001, maximum=0.001)
    assert policy.delay(1, retry_after=2.5) == 2.5


def test_retry_after_parsing():
    assert parse_retry_after("7") == 7.0
    now = datetime(2026, 1, 1, tzinfo=UTC)
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30.0
    assert parse_retry_after(format_datetime(now - timedelta(seconds=30), usegmt=True), now) == 0.0
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("999999") == 300.0
