"""Protection of a provider: rate limits and a circuit breaker. Pure: time is passed in.

`TokenBucket.reserve` hands out reservations in call order (the balance may go negative), so concurrent
senders queue fairly without a lock: each one sleeps for the delay it was given.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import Enum


class TokenBucket:
    """`rate` tokens per second, at most `capacity` saved up."""

    def __init__(self, rate: float, capacity: float, now: float) -> None:
        if rate <= 0 or capacity <= 0:
            raise ValueError("rate and capacity must be > 0")
        self.rate = rate
        self.capacity = capacity
        self._tokens = capacity
        self._at = now

    def reserve(self, amount: float, now: float) -> float:
        """Take `amount` tokens; returns how long to wait before using them (0 when available now)."""
        if now > self._at:
            self._tokens = min(self.capacity, self._tokens + (now - self._at) * self.rate)
            self._at = now
        self._tokens -= amount
        if self._tokens >= 0:
            return 0.0
        return -self._tokens / self.rate


class BreakerState(Enum):
    CLOSED = "closed"
    OPEN = "open"
    HALF_OPEN = "half_open"


@dataclass
class CircuitBreaker:
    """Opens after `threshold` consecutive failures; after `open_s` lets one probe through; a failed probe
    reopens it for twice as long (up to `max_open_s`), a successful one closes it."""

    threshold: int
    open_s: float
    max_open_s: float
    state: BreakerState = BreakerState.CLOSED
    failures: int = 0
    opened_at: float = 0.0
    current_open_s: float = 0.0
    probing: bool = False
    opened_count: int = 0

    def wait(self, now: float) -> float | None:
        """0 when a request may go now; seconds to wait otherwise; None while a probe is under way."""
        if self.state is BreakerState.CLOSED:
            return 0.0
        if self.state is BreakerState.OPEN:
            remaining = self.opened_at + self.current_open_s - now
            if remaining > 0:
                return remaining
            self.state = BreakerState.HALF_OPEN
            self.probing = False
        if self.probing:
            return None
        self.probing = True
        return 0.0

    def record(self, ok: bool, now: float) -> None:
        """Report the outcome of an attempt that `wait` let through."""
        if ok:
            self.state = BreakerState.CLOSED
            self.failures = 0
            self.probing = False
            self.current_open_s = 0.0
            return
        if self.state is BreakerState.HALF_OPEN:
            self._open(now, min(self.max_open_s, max(self.current_open_s, self.open_s) * 2))
            return
        self.failures += 1
        if self.state is BreakerState.CLOSED and self.failures >= self.threshold:
            self._open(now, self.open_s)

    def _open(self, now: float, duration: float) -> None:
        self.state = BreakerState.OPEN
        self.opened_at = now
        self.current_open_s = duration
        self.probing = False
        self.opened_count += 1
