import pytest

from consumer.limits import BreakerState, CircuitBreaker, TokenBucket


def test_bucket_allows_the_burst_then_spaces_requests_at_the_rate():
    bucket = TokenBucket(rate=10, capacity=2, now=0)
    assert bucket.reserve(1, 0) == 0 and bucket.reserve(1, 0) == 0
    assert bucket.reserve(1, 0) == pytest.approx(0.1)
    assert bucket.reserve(1, 0) == pytest.approx(0.2)
    # After a second idle the bucket is full again, not fuller.
    assert bucket.reserve(2, 10) == 0
    assert bucket.reserve(1, 10) == pytest.approx(0.1)


def test_bucket_charges_batches_by_their_size():
    bucket = TokenBucket(rate=100, capacity=100, now=0)
    assert bucket.reserve(100, 0) == 0
    assert bucket.reserve(50, 0) == pytest.approx(0.5)


def test_bucket_throughput_matches_the_rate_over_time():
    bucket = TokenBucket(rate=50, capacity=1, now=0)
    waits = [bucket.reserve(1, 0) for _ in range(500)]
    assert waits[-1] == pytest.approx(499 / 50)


def test_breaker_opens_after_consecutive_failures_and_probes_once():
    b = CircuitBreaker(threshold=3, open_s=10, max_open_s=60)
    for _ in range(2):
        assert b.wait(0) == 0
        b.record(False, 0)
    b.record(True, 0)  # a success resets the count
    for _ in range(3):
        b.record(False, 1)
    assert b.state is BreakerState.OPEN and b.wait(5) == pytest.approx(6)
    assert b.wait(11) == 0  # the probe
    assert b.state is BreakerState.HALF_OPEN and b.wait(11) is None  # others wait for the probe
    b.record(False, 11)
    assert b.state is BreakerState.OPEN and b.wait(12) == pytest.approx(19)  # twice as long
    assert b.wait(31) == 0
    b.record(True, 31)
    assert b.state is BreakerState.CLOSED and b.wait(31) == 0 and b.opened_count == 2


def test_breaker_open_time_is_capped():
    b = CircuitBreaker(threshold=1, open_s=10, max_open_s=25)
    b.record(False, 0)
    t = 0.0
    for _ in range(5):
        t += b.current_open_s
        assert b.wait(t) == 0
        b.record(False, t)
    assert b.current_open_s == 25
