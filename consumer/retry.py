"""Retry policy: which outcomes are retried, and how long to wait before the next attempt. Pure: no I/O."""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime

from schemas.config import RetryConfig

RETRY_AFTER_CAP_S = 300.0


def is_retryable_status(status: int) -> bool:
    """429, 408, 425 and every 5xx are worth another attempt; other answers are final."""
    return status in (408, 425, 429) or 500 <= status <= 599


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds to wait from a `Retry-After` header (delta-seconds or HTTP date); None if absent or unreadable."""
    if not value:
        return None
    value = value.strip()
    if value.isdigit():
        return min(float(value), RETRY_AFTER_CAP_S)
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    delta = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(delta, 0.0), RETRY_AFTER_CAP_S)


@dataclass(frozen=True, slots=True)
class RetryPolicy:
    """Exponential backoff with full jitter, bounded attempts, and `Retry-After` taken as a floor."""

    max_attempts: int
    initial: float
    maximum: float

    @classmethod
    def from_config(cls, config: RetryConfig) -> RetryPolicy:
        return cls(config.max_attempts, config.backoff_initial_ms / 1000, config.backoff_max_ms / 1000)

    def delay(self, attempt: int, retry_after: float | None = None, rng: random.Random | None = None) -> float | None:
        """Wait before attempt `attempt + 1`, or None when `attempt` was the last one allowed."""
        if attempt >= self.max_attempts:
            return None
        ceiling = min(self.maximum, self.initial * (2 ** (attempt - 1)))
        wait = (rng or random).uniform(0.0, ceiling)
        if retry_after is not None:
            wait = max(wait, retry_after)
        return wait
