"""Finished attempts waiting to be recorded, each still counted by its pool until it is.

That count is the backpressure: a pool claims at most one limit ahead of its outcomes
waiting here (`Pool.unrecorded`), so a runner whose database falls behind claims less
instead of finishing work it cannot record (the backlog stall), while a healthy one claims
its next rows as the last ones are written.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from db.records import ErrorRecord, Outcome

DEFAULT_MAX_BATCH = 500  # outcomes per statement: keeps every flush statement short


Release = Callable[[], None]


@dataclass
class Batch:
    """What one flush statement writes, and the slots it frees once written."""

    entries: list[tuple[Outcome, Release | None]] = field(default_factory=list)
    errors: list[ErrorRecord] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.entries or self.errors)

    @property
    def outcomes(self) -> list[Outcome]:
        """The outcomes to write."""
        return [outcome for outcome, _ in self.entries]

    def release(self) -> None:
        """Hand the batch's slots back to their pools (after the write committed)."""
        for _, release in self.entries:
            if release is not None:
                release()


class OutcomeBuffer:
    """A FIFO of outcomes and error records, taken in bounded batches."""

    def __init__(self, max_batch: int = DEFAULT_MAX_BATCH) -> None:
        if max_batch < 1:
            raise ValueError(f"max_batch must be >= 1, got {max_batch}")
        self.max_batch = max_batch
        self._entries: deque[tuple[Outcome, Release | None]] = deque()
        self._errors: deque[ErrorRecord] = deque()

    def __len__(self) -> int:
        return len(self._entries) + len(self._errors)

    @property
    def outcomes_waiting(self) -> int:
        """Outcomes not yet written (error records aside)."""
        return len(self._entries)

    def waiting(self) -> list[Outcome]:
        """The outcomes not yet written, oldest first (left in the buffer)."""
        return [outcome for outcome, _ in self._entries]

    def record(self, outcome: Outcome, release: Release | None = None) -> None:
        """Queue an outcome; `release` frees its slot once the outcome is written."""
        self._entries.append((outcome, release))

    def record_error(self, error: ErrorRecord) -> None:
        """Queue a failure for aggregation."""
        self._errors.append(error)

    def take(self) -> Batch:
        """Remove and return up to `max_batch` outcomes and error records, oldest first."""
        batch = Batch()
        while self._entries and len(batch.entries) < self.max_batch:
            batch.entries.append(self._entries.popleft())
        while self._errors and len(batch.errors) < self.max_batch:
            batch.errors.append(self._errors.popleft())
        return batch

    def put_back(self, batch: Batch) -> None:
        """Return an unwritten batch to the front, in its original order."""
        self._entries.extendleft(reversed(batch.entries))
        self._errors.extendleft(reversed(batch.errors))
