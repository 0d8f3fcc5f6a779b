"""A runner's recent completions in one pool, bucketed by its wall clock (the throughput rollup).

Counting is a few dict and integer updates per completion, with no I/O; each heartbeat encodes
the last BUCKETS_KEPT buckets (db/snapshots.py `Completions`) into the pool's snapshot, and the
status view sums those small series over the runners instead of scanning subtasks.
"""

from __future__ import annotations

from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field

from db.snapshots import BUCKET_SECONDS, BUCKETS_KEPT, TASKS_KEPT, Completions, Counts


@dataclass
class _Bucket:
    start: float
    subtasks: int = 0
    images: int = 0
    tasks: Counter[int] = field(default_factory=Counter)


class CompletionRollup:
    """Completions per bucket, per task, over the last `kept` buckets (time passed in)."""

    def __init__(
        self,
        since: float,
        *,
        bucket: float = BUCKET_SECONDS,
        kept: int = BUCKETS_KEPT,
        tasks_kept: int = TASKS_KEPT,
    ) -> None:
        self.since = since
        self.bucket = bucket
        self.kept = kept
        self.tasks_kept = tasks_kept
        self._buckets: deque[_Bucket] = deque(maxlen=kept)

    def add(self, task_id: int, images: int, at: float) -> None:
        """Count one completed subtask of `task_id` (`images` of them) at wall time `at`."""
        start = at - at % self.bucket
        # A wall clock stepped back lands in the newest bucket rather than reordering them.
        if not self._buckets or start > self._buckets[-1].start:
            self._buckets.append(_Bucket(start))
        newest = self._buckets[-1]
        newest.subtasks += 1
        newest.images += images
        newest.tasks[task_id] += 1

    def snapshot(self, at: float) -> Completions:
        """The buckets still inside the kept span as of `at`, for the heartbeat."""
        oldest = at - at % self.bucket - (self.kept - 1) * self.bucket
        while self._buckets and self._buckets[0].start < oldest:
            self._buckets.popleft()
        buckets = list(self._buckets)
        first = buckets[0].start if buckets else at - at % self.bucket
        # Buckets no completion touched were never made: place each by its start.
        slots = [round((b.start - first) / self.bucket) for b in buckets]
        size = slots[-1] + 1 if slots else 0
        totals: Counter[int] = Counter()
        for b in buckets:
            totals.update(b.tasks)
        top = sorted(totals, key=lambda task: (-totals[task], task))[: self.tasks_kept]

        def dense(value: Callable[[_Bucket], int]) -> Counts:
            counts = [0] * size
            for slot, b in zip(slots, buckets, strict=True):
                counts[slot] = value(b)
            return tuple(counts)

        return Completions(
            at=at,
            since=self.since,
            bucket=self.bucket,
            first=first,
            subtasks=dense(lambda b: b.subtasks),
            images=dense(lambda b: b.images),
            tasks=tuple((task, dense(_task_count(task))) for task in sorted(top)),
        )


def _task_count(task: int) -> Callable[[_Bucket], int]:
    return lambda b: b.tasks.get(task, 0)
