"""Throughput from the runners' completion rollups: per-minute rates and their spans (pure).

Each runner's rollup (db/snapshots.py `Completions`) is read on its own clock, so clock skew
between machines never matters: a runner's window ends at its last snapshot while it is live
(what it did since is not known yet, so the rate is over what is known), and at the status
read's `now`, mapped onto its clock, once it has stopped or gone silent (it did nothing
since). A window starts at the first bucket boundary inside it, so every count is exact for
its span; the span is shortened to when the runner began counting and to when the work began
(a task started 40 s ago has had 40 s, not 5 minutes). Rates of several runners add up.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime

from db.snapshots import Completions, Counts

# A rate measured over less than this is mostly noise (one completion 1 s in = 60/min).
MIN_RATE_SPAN = 10.0  # seconds


@dataclass(frozen=True)
class Source:
    """One runner's rollup of one pool, placed: where its window ends, how its clock is off."""

    pool: str
    completions: Completions
    end: float  # runner clock: the end of the window it can speak for
    offset: float  # runner clock minus the database clock, seconds

    @classmethod
    def of(
        cls, pool: str, completions: Completions, heartbeat_at: datetime, age: float, live: bool
    ) -> Source:
        """Place a rollup written at `heartbeat_at` (database clock), `age` seconds ago."""
        offset = completions.at - heartbeat_at.timestamp()
        end = completions.at if live else completions.at + max(0.0, age)
        return cls(pool, completions, end, offset)


def window_start(end: float, window: float, bucket: float) -> float:
    """The first bucket boundary at or after `end - window`: whole buckets only."""
    return math.ceil((end - window) / bucket) * bucket


def count(c: Completions, counts: Counts, start: float, end: float) -> int:
    """Completions in the buckets of `c` that begin within [start, end]."""
    # Bucket i begins at c.first + i × c.bucket; the epsilon absorbs float noise in the
    # division, never a whole bucket.
    lo = max(0, math.ceil((start - c.first) / c.bucket - 1e-9))
    hi = math.floor((end - c.first) / c.bucket + 1e-9)
    return sum(counts[lo : hi + 1]) if hi >= lo else 0


def per_min(source: Source, counts: Counts, window: float, began: datetime | None) -> float:
    """`counts` per minute over `window`, no longer than the source counted or the work ran."""
    c = source.completions
    start = window_start(source.end, window, c.bucket)
    n = count(c, counts, start, source.end)
    if not n:
        return 0.0
    begin = max(start, c.since)
    if began is not None:
        begin = max(begin, began.timestamp() + source.offset)
    return n * 60.0 / max(MIN_RATE_SPAN, source.end - begin)


class Rates:
    """The rollups of every runner shown, and the start of every task they name."""

    def __init__(self, sources: Iterable[Source], task_starts: Mapping[int, datetime]) -> None:
        self.sources = tuple(sources)
        self.task_starts = task_starts
        # Asked once per pool and window: remembered, the read stays O(runners × tasks).
        self._began: dict[tuple[int, float], datetime | None] = {}
        self._by_task: dict[int, list[tuple[Source, Counts]]] = {}
        for source in self.sources:
            for task, counts in source.completions.tasks:
                self._by_task.setdefault(task, []).append((source, counts))

    def _work_began(self, index: int, window: float) -> datetime | None:
        """When the earliest task source `index` completed in `window` started (if known)."""
        if (index, window) not in self._began:
            source = self.sources[index]
            c = source.completions
            start = window_start(source.end, window, c.bucket)
            starts = [
                self.task_starts[task]
                for task, counts in c.tasks
                if task in self.task_starts and count(c, counts, start, source.end)
            ]
            self._began[index, window] = min(starts, default=None)
        return self._began[index, window]

    def total(self, window: float, *, images: bool, pool: str | None = None) -> float:
        """Subtasks (or images) per minute over `window`, of one pool or all."""
        return math.fsum(
            per_min(
                s,
                s.completions.images if images else s.completions.subtasks,
                window,
                self._work_began(i, window),
            )
            for i, s in enumerate(self.sources)
            if pool is None or s.pool == pool
        )

    def task(self, task_id: int, window: float) -> float:
        """Subtasks per minute of one task over `window`."""
        began = self.task_starts.get(task_id)
        return math.fsum(
            per_min(s, counts, window, began) for s, counts in self._by_task.get(task_id, ())
        )
