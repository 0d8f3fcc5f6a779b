"""What a runner's heartbeat stores per pool in `executors.pools`, and its one JSON codec.

Plain data, no SQL: the runner's pool writes these records, the status projection reads
them back, and both import this module (db/ is the lower layer, so neither side breaks the
layering). The shape of the jsonb column belongs beside the model that declares it.

Decoding is tolerant, because rows outlive the code that wrote them (an older runner may
still be heartbeating during an upgrade): a missing key takes its default; a value of the
wrong type is treated as missing; a limit change without a numeric time or target limit is
dropped (it says nothing a sparkline could use). Booleans are never taken as numbers.
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class LimitChange:
    """One change of a pool's limit made by one runner's policy (unix time `at`)."""

    at: float
    from_limit: int
    to_limit: int
    reason: str = ""

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the heartbeat."""
        return {
            "at": self.at,
            "from_limit": self.from_limit,
            "to_limit": self.to_limit,
            "reason": self.reason,
        }

    @classmethod
    def from_json(cls, value: object) -> LimitChange | None:
        """Decode one stored change; None when it has no usable time or target limit."""
        if not isinstance(value, Mapping):
            return None
        at = _number(value.get("at"))
        # "limit": the key rows written before from_limit/to_limit existed used.
        to_limit = _integer(value.get("to_limit", value.get("limit")))
        if at is None or to_limit is None:
            return None
        from_limit = _integer(value.get("from_limit"))
        return cls(
            at=at,
            # Unknown origin (an old row): assume no change, never guess from the reason text.
            from_limit=to_limit if from_limit is None else from_limit,
            to_limit=to_limit,
            reason=_text(value.get("reason")) or "",
        )


@dataclass(frozen=True)
class PoolSnapshot:
    """One pool of one runner as of its last heartbeat."""

    limit: int = 0
    max: int = 0
    running: int = 0
    pending: int = 0  # claimable now, as this runner last counted them
    policy: str | None = None
    paused_for: float = 0.0  # seconds its provider pause still has to run
    history: tuple[LimitChange, ...] = field(default=())  # oldest first

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the heartbeat."""
        return {
            "limit": self.limit,
            "max": self.max,
            "running": self.running,
            "pending": self.pending,
            "policy": self.policy,
            "paused_for": self.paused_for,
            "history": [change.to_json() for change in self.history],
        }

    @classmethod
    def from_json(cls, value: object) -> PoolSnapshot | None:
        """Decode one stored pool; None when the value is not a JSON object at all."""
        if not isinstance(value, Mapping):
            return None
        history = value.get("history")
        changes = (LimitChange.from_json(h) for h in history) if isinstance(history, list) else ()
        return cls(
            limit=_integer(value.get("limit")) or 0,
            max=_integer(value.get("max")) or 0,
            running=_integer(value.get("running")) or 0,
            pending=_integer(value.get("pending")) or 0,
            policy=_text(value.get("policy")),
            paused_for=_number(value.get("paused_for")) or 0.0,
            history=tuple(sorted((c for c in changes if c is not None), key=lambda c: c.at)),
        )


def encode_pools(pools: Mapping[str, PoolSnapshot]) -> dict[str, Any]:
    """The `executors.pools` value for a runner's pools."""
    return {name: snapshot.to_json() for name, snapshot in pools.items()}


def decode_pools(value: object) -> dict[str, PoolSnapshot]:
    """A stored `executors.pools` value; entries that are not objects are left out."""
    if not isinstance(value, Mapping):
        return {}
    decoded = {str(name): PoolSnapshot.from_json(snap) for name, snap in value.items()}
    return {name: snap for name, snap in decoded.items() if snap is not None}


def _integer(value: object) -> int | None:
    # A float such as 5.0 can come back from JSON tooling; a fractional one is not a limit.
    if isinstance(value, bool):
        return None
    if isinstance(value, int):
        return value
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return None


def _number(value: object) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value) if value == value and abs(value) != float("inf") else None


def _text(value: object) -> str | None:
    return value if isinstance(value, str) else None


# --- completions: the throughput rollup ---------------------------------------------------
# Each pool's snapshot also carries what the runner completed recently, in buckets of its own
# wall clock, so the status view sums O(runners) small series instead of scanning subtasks.

BUCKET_SECONDS = 10.0  # width of one completion bucket
# Buckets a runner keeps: the 5-minute window plus the bucket its start falls in.
BUCKETS_KEPT = 31
TASKS_KEPT = 50  # per pool and runner: the tasks with the most completions in the window
MAX_TASKS_DECODED = 200  # bounds what a hostile or future row can make the status view read

BIGINT_MAX = 2**63 - 1

# Dense counts, one per bucket, oldest first: counts[i] is the bucket starting at
# `first + i × bucket`. Dense, not (start, count) pairs: a tenth of the JSON, and the status
# view sums a window as one slice.
Counts = tuple[int, ...]


@dataclass(frozen=True)
class Completions:
    """One runner's recent completions in one pool, in buckets of the runner's wall clock."""

    at: float = 0.0  # the runner's wall clock when the snapshot was taken
    since: float = 0.0  # when it began counting (its start): nothing before is known
    bucket: float = BUCKET_SECONDS
    first: float = 0.0  # start of the oldest bucket in the counts below
    subtasks: Counts = ()
    images: Counts = ()  # subtasks × their batch size
    tasks: tuple[tuple[int, Counts], ...] = ()  # per task (at most TASKS_KEPT), by id

    def to_json(self) -> dict[str, Any]:
        """The JSON object stored in the heartbeat, under the pool's "completions" key."""
        return {
            "at": self.at,
            "since": self.since,
            "bucket": self.bucket,
            "first": self.first,
            "subtasks": list(self.subtasks),
            "images": list(self.images),
            "tasks": {str(task): list(counts) for task, counts in self.tasks},
        }

    @classmethod
    def from_json(cls, value: object) -> Completions | None:
        """Decode one stored rollup; None without a usable clock or bucket width."""
        if not isinstance(value, Mapping):
            return None
        at, since = _number(value.get("at")), _number(value.get("since"))
        bucket, first = _number(value.get("bucket")), _number(value.get("first"))
        if at is None or since is None or bucket is None or bucket <= 0 or first is None:
            return None
        # A longer list than any runner writes is cut to its newest buckets.
        lengths = [_length(value.get("subtasks")), _length(value.get("images"))]
        tasks = value.get("tasks")
        decoded: list[tuple[int, list[object]]] = []
        if isinstance(tasks, Mapping):
            for key, counts in itertools.islice(tasks.items(), MAX_TASKS_DECODED):
                task_id = _integer_text(key)
                if task_id is not None and isinstance(counts, list):
                    decoded.append((task_id, counts))
                    lengths.append(len(counts))
        skip = max(0, max(lengths) - (BUCKETS_KEPT + 1))
        return cls(
            at=at,
            since=since,
            bucket=bucket,
            first=first + skip * bucket,
            subtasks=_counts(value.get("subtasks"), skip),
            images=_counts(value.get("images"), skip),
            tasks=tuple(sorted((task, _counts(counts, skip)) for task, counts in decoded)),
        )


def decode_completions(value: object) -> dict[str, Completions]:
    """Each pool's rollup from a stored `executors.pools` value (pools without one left out)."""
    if not isinstance(value, Mapping):
        return {}
    found = {}
    for name, snap in value.items():
        if isinstance(snap, Mapping):
            completions = Completions.from_json(snap.get("completions"))
            if completions is not None:
                found[str(name)] = completions
    return found


def _length(value: object) -> int:
    return len(value) if isinstance(value, list) else 0


def _counts(value: object, skip: int) -> Counts:
    # Counts are plain non-negative ints; anything else counts as an empty bucket, so the
    # positions (the buckets' times) never shift. At most BUCKETS_KEPT + 1 are read.
    if not isinstance(value, list):
        return ()
    kept = value[skip : skip + BUCKETS_KEPT + 1]
    return tuple(n if type(n) is int and n > 0 else 0 for n in kept)


def _integer_text(value: object) -> int | None:
    # JSON object keys are strings: a task id comes back as "12". Beyond bigint it is no
    # task id, and would break the status read's lookup of task starts.
    if isinstance(value, str) and value.isascii() and value.isdigit() and len(value) <= 19:
        number = int(value)
        return number if number <= BIGINT_MAX else None
    return None
