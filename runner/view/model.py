"""The status view's typed records: what `imgrun status`, `--json` and `/v1/status` show."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from db.snapshots import PoolSnapshot
from runner.jsonable import jsonable


@dataclass(frozen=True)
class ScalingDecision:
    """One limit change made by one runner's policy."""

    at: datetime
    executor_id: str
    from_limit: int
    limit: int  # the limit it changed to
    reason: str  # for people only: nothing parses it


@dataclass(frozen=True)
class PoolStatus:
    """A pool summed over the live runners, plus its queue from the task counters."""

    name: str
    limit: int  # Σ live runners' limits
    max: int  # Σ live runners' max limits
    running: int  # Σ live runners' in-flight subtasks
    pending: int  # queued and not in flight (includes ones waiting out a retry backoff)
    processing: int  # subtasks in flight according to the database (incl. stale leases)
    claimable: int | None  # claimable now, as last seen by a live runner (None: no runner)
    policy: str | None  # policy name(s) of the live runners
    paused_for: float  # seconds the longest provider pause still has to run
    executors: int  # live runners serving this pool
    images_per_min: float  # over the 5-minute window
    decisions: tuple[ScalingDecision, ...]  # newest first
    limit_history: tuple[int, ...]  # Σ limit sampled over SPARKLINE_SPAN, oldest first


@dataclass(frozen=True)
class Throughput:
    """Images (and subtasks) completed per minute, and when the queue should drain."""

    images_per_min_1m: float
    images_per_min_5m: float
    subtasks_per_min_1m: float
    subtasks_per_min_5m: float
    remaining_images: int
    eta_seconds: float | None  # None: nothing completing, so no estimate


@dataclass(frozen=True)
class TaskProgress:
    """One task's counters with its recent rate."""

    id: int
    name: str
    pool: str
    provider: str
    priority: int
    status: str
    total: int
    completed: int
    failed: int
    canceled: int
    batch_size: int
    total_images: int
    rate_per_min: float  # subtasks per minute over the 5-minute window
    eta_seconds: float | None
    created_at: datetime
    started_at: datetime | None
    finished_at: datetime | None

    @property
    def remaining(self) -> int:
        """Subtasks not yet finished one way or another."""
        return max(0, self.total - self.completed - self.failed - self.canceled)


@dataclass(frozen=True)
class ErrorSummary:
    """One aggregated error_logs row."""

    error_type: str
    message: str
    count: int
    pool: str | None
    provider: str | None
    last_seen: datetime
    recovered: int = 0  # of `count`, occurrences an in-attempt retry absorbed


@dataclass(frozen=True)
class ExecutorStatus:
    """One runner process as its heartbeats describe it."""

    id: str
    group: str
    host: str
    pid: int
    version: str
    state: str
    started_at: datetime
    heartbeat_at: datetime
    heartbeat_age: float  # seconds
    stale: bool  # says it is running but stopped heartbeating
    pools: Mapping[str, PoolSnapshot] = field(default_factory=dict)


@dataclass(frozen=True)
class ProviderDecision:
    """One change of a provider's fleet-wide limit, with the controller's reason."""

    at: datetime
    from_limit: int
    to_limit: int
    reason: str  # for people only: nothing parses it


@dataclass(frozen=True)
class ProviderStatus:
    """One provider as the whole fleet sees it (its `providers` row and the runners' reports)."""

    name: str
    policy: str
    limit: int  # the fleet-wide limit every runner's claims respect
    min_limit: int
    max_concurrency: int  # the hard fleet-wide cap
    rpm: int | None  # fleet-wide requests per minute, when configured
    in_flight: int  # subtasks processing for it, across every runner
    cooldown_for: float  # seconds its Retry-After pause still has to run (0: none)
    requests_1m: int  # requests the runners reported over the last minute
    rate_limited_1m: int  # of which answered 429
    rate_limited_share: float | None  # rate_limited_1m / requests_1m (None: no requests)
    latency_p50: float | None  # seconds, median over the last minute (None: no samples)
    decisions: tuple[ProviderDecision, ...]  # newest first


@dataclass(frozen=True)
class StatusSnapshot:
    """Everything the status view shows, as of `at` (the database's clock)."""

    at: datetime
    stale_after: float
    pools: tuple[PoolStatus, ...]
    throughput: Throughput
    active_tasks: int
    tasks: tuple[TaskProgress, ...]  # active, by priority desc then id (first `task_limit`)
    recent: tuple[TaskProgress, ...]  # last finished, newest first
    errors: tuple[ErrorSummary, ...]
    executors: tuple[ExecutorStatus, ...]
    providers: tuple[ProviderStatus, ...] = ()

    def to_json(self) -> dict[str, Any]:
        """A JSON-ready dict (datetimes as ISO 8601 strings)."""
        data: dict[str, Any] = jsonable(asdict(self))
        return data
