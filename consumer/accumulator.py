"""Batch accumulation: buffers messages per group until a batch is full or has waited `linger` seconds.

Pure: time is passed in by the caller, which owns the timer. A group is whatever key the caller chooses (the
pipeline uses provider, campaign and the rendered global part of the request).
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

T = TypeVar("T")
K = TypeVar("K", bound=Hashable)


@dataclass(slots=True)
class Batch(Generic[K, T]):
    """Messages that will travel in one provider request."""

    key: K
    items: list[T]
    opened_at: float


@dataclass(slots=True)
class _Open(Generic[K, T]):
    items: list[T] = field(default_factory=list)
    opened_at: float = 0.0
    limit: int = 1


class Accumulator(Generic[K, T]):
    """Open batches by key, flushed on size (`add`) or on age (`due`)."""

    def __init__(self, linger: float) -> None:
        if linger < 0:
            raise ValueError("linger must be >= 0")
        self.linger = linger
        self._open: dict[K, _Open[K, T]] = {}
        self._count = 0

    def __len__(self) -> int:
        """Messages buffered."""
        return self._count

    def add(self, key: K, item: T, limit: int, now: float) -> Batch[K, T] | None:
        """Buffer `item`; returns the batch of `key` if it reached `limit` items.

        `now` must not go backwards between calls (use a monotonic clock).
        """
        batch = self._open.get(key)
        if batch is None:
            batch = self._open[key] = _Open(opened_at=now, limit=limit)
        batch.items.append(item)
        self._count += 1
        if len(batch.items) >= batch.limit:
            del self._open[key]
            self._count -= len(batch.items)
            return Batch(key, batch.items, batch.opened_at)
        return None

    def due(self, now: float) -> list[Batch[K, T]]:
        """Remove and return every batch that has waited at least `linger`."""
        deadline = now - self.linger
        keys = []
        # Batches are opened in time order and dicts keep insertion order: stop at the first young one.
        for k, b in self._open.items():
            if b.opened_at > deadline:
                break
            keys.append(k)
        return [self._take(k) for k in keys]

    def next_due(self) -> float | None:
        """When the oldest open batch becomes due, or None when nothing is buffered."""
        for batch in self._open.values():
            return batch.opened_at + self.linger
        return None

    def drain(self) -> list[Batch[K, T]]:
        """Remove and return every open batch, full or not."""
        return [self._take(k) for k in list(self._open)]

    def _take(self, key: K) -> Batch[K, T]:
        batch = self._open.pop(key)
        self._count -= len(batch.items)
        return Batch(key, batch.items, batch.opened_at)
