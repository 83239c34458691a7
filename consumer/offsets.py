"""Per-partition offset tracking for out-of-order completion. Pure: no I/O.

Records of one partition are handed out in offset order but finish in any order, because a batch mixes
partitions and batches finish concurrently. A partition's committable offset is the first offset that is not
finished yet (or one past the last seen offset when all are finished): committing it never skips a record
whose status has not been acknowledged.

Assignments carry an epoch. A completion that belongs to an earlier assignment of the partition is ignored, so
work finished after a revoke can never move a newer owner's offsets.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Generic, TypeVar

P = TypeVar("P")


@dataclass(slots=True)
class Ticket(Generic[P]):
    """Proof that a record was handed out: completing it marks the record finished. Treated as immutable
    (not frozen: one is made per record, and a frozen dataclass's constructor costs several times more)."""

    partition: P
    offset: int
    epoch: int


@dataclass(slots=True)
class _PartitionState:
    epoch: int
    pending: deque[int] = field(default_factory=deque)
    done: set[int] = field(default_factory=set)
    next_offset: int | None = None
    committed: int | None = None

    def committable(self) -> int | None:
        pending, done = self.pending, self.done
        while pending and pending[0] in done:
            done.discard(pending.popleft())
        if pending:
            return pending[0]
        return self.next_offset


class OffsetTracker(Generic[P]):
    """Tracks handed-out and finished records per partition and computes what can be committed."""

    def __init__(self) -> None:
        self._parts: dict[P, _PartitionState] = {}
        self._epoch = 0

    def assign(self, partitions: Iterable[P]) -> None:
        """Start tracking `partitions` under a new epoch (previous state of them is dropped)."""
        self._epoch += 1
        for p in partitions:
            self._parts[p] = _PartitionState(epoch=self._epoch)

    def revoke(self, partitions: Iterable[P]) -> None:
        """Stop tracking `partitions`; their outstanding tickets become stale."""
        for p in partitions:
            self._parts.pop(p, None)

    def assigned(self) -> frozenset[P]:
        return frozenset(self._parts)

    def track(self, partition: P, offset: int) -> Ticket[P]:
        """Record that `offset` was handed out. Offsets of a partition must be tracked in increasing order."""
        state = self._parts.get(partition)
        if state is None:
            self._epoch += 1
            state = self._parts[partition] = _PartitionState(epoch=self._epoch)
        if state.next_offset is not None and offset < state.next_offset:
            raise ValueError(f"offset {offset} of {partition} tracked after {state.next_offset - 1}")
        if state.next_offset is None and state.committed is None:
            # The group's position when we started reading: nothing to commit until it moves.
            state.committed = offset
        state.pending.append(offset)
        state.next_offset = offset + 1
        return Ticket(partition, offset, state.epoch)

    def complete(self, ticket: Ticket[P]) -> bool:
        """Mark a record finished. Returns False (and does nothing) for a ticket of an earlier assignment."""
        state = self._parts.get(ticket.partition)
        if state is None or state.epoch != ticket.epoch:
            return False
        if state.pending and state.pending[0] == ticket.offset:
            state.pending.popleft()
        else:
            state.done.add(ticket.offset)
        return True

    def pending_count(self, partition: P) -> int:
        """Records handed out and not finished yet."""
        state = self._parts.get(partition)
        if state is None:
            return 0
        state.committable()
        return len(state.pending) - len(state.done)

    def committable(self) -> dict[P, int]:
        """Offsets to commit: for each partition whose committable offset moved since the last commit."""
        out: dict[P, int] = {}
        for p, state in self._parts.items():
            offset = state.committable()
            if offset is not None and offset != state.committed:
                out[p] = offset
        return out

    def committed_offsets(self) -> dict[P, int]:
        """The last committed (or starting) offset of each partition."""
        return {p: s.committed for p, s in self._parts.items() if s.committed is not None}

    def mark_committed(self, offsets: dict[P, int]) -> None:
        """Record a successful commit (ignores partitions no longer assigned)."""
        for p, offset in offsets.items():
            state = self._parts.get(p)
            if state is not None and (state.committed is None or offset > state.committed):
                state.committed = offset
