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
    seen: set[Hashable] | None = None


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

    def add(self, key: K, item: T, limit: int, now: float, distinct: Hashable | None = None) -> Batch[K, T] | None:
        """Buffer `item`; returns the batch of `key` if it reached `limit` items.

        With `distinct` (e.g. the recipient), an open batch never holds two items with the same value: the
        batch that already has one is returned as it is, and `item` opens the next batch of `key`.
        `now` must not go backwards between calls (use a monotonic clock).
        """
        batch = self._open.get(key)
        if batch is not None and distinct is not None and batch.seen is not None and distinct in batch.seen:
            full = self._take(key)
            self._add_new(key, item, limit, now, distinct)
            self._count += 1
            return full
        if batch is None:
            batch = self._add_new(key, item, limit, now, distinct)
        else:
            batch.items.append(item)
            if distinct is not None:
                if batch.seen is None:
                    batch.seen = set()
                batch.seen.add(distinct)
        self._count += 1
        if len(batch.items) >= batch.limit:
            del self._open[key]
            self._count -= len(batch.items)
            return Batch(key, batch.items, batch.opened_at)
        return None

    def _add_new(self, key: K, item: T, limit: int, now: float, distinct: Hashable | None) -> _Open[K, T]:
        # A new batch goes to the end of the dict: batches stay in the order they were opened.
        batch = self._open[key] = _Open([item], now, limit, None if distinct is None else {distinct})
        return batch

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
