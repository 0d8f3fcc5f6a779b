"""The store seam: what each part of imgrun may ask of the database, as small Protocols.

Grouped by who uses them: the runner loop needs `RunnerStore`; the CLI and the HTTP API
need `TaskStore`. `db.store.PgStore` implements both on PostgreSQL. Nothing here imports a
database library, so code typed against these ports can be tested with a fake.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from typing import Any, Protocol

from db.records import (
    ClaimBatch,
    ControlChange,
    ErrorRecord,
    ExpiredLease,
    NewTask,
    Outcome,
    ProviderBounds,
    ProviderReport,
    ProviderWindow,
    PruneCounts,
    PrunedBatch,
    SubtaskRow,
)

# The runner's rule for expired leases: the same as for any failed attempt.
DecideLeases = Callable[[Sequence[ExpiredLease]], Sequence[Outcome]]


class SubtaskLeases(Protocol):
    """Claiming subtasks and moving them on: every transition is fenced by lease holder."""

    async def claim(
        self, pool: str, providers: list[str], n: int, executor_id: str, lease: float
    ) -> ClaimBatch:
        """Lease up to `n` due subtasks of `pool`: for each provider in turn, within its limit.

        Per provider: highest priority first, then by fair-share turn (tasks interleave), then
        oldest. One transaction: all the rows are leased, or none.
        """
        ...

    async def apply_outcomes(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Record attempts' outcomes; returns the subtask ids whose outcome stands, ascending.

        An outcome stands if it applied now, or if it is a completion already recorded as
        is (reported twice); the others were dropped by the fence (stale holders' ones).
        """
        ...

    async def set_external_id(
        self, subtask_id: int, attempt: int, executor_id: str, external_id: str
    ) -> bool:
        """Persist an async job's id while still holding the lease; False if it was lost."""
        ...

    async def reap_expired(
        self,
        decide: DecideLeases,
        *,
        stale_after: float = 4.0,
        dead_runners: bool = True,
        backstop: bool = True,
        limit: int = 1000,
    ) -> list[Outcome]:
        """Release, as `decide` says, the rows of runners silent past `stale_after` (marked
        lost), and with `backstop` the expired leases no live runner holds; returns those.
        """
        ...


class ExecutorRegistry(Protocol):
    """A runner process's own row: registration, heartbeats (that row only), clean stop.

    Each process holds subtasks under its own `holder` (`<executor_id>:<incarnation>`).
    """

    async def register_executor(
        self,
        executor_id: str,
        holder: str,
        identity: dict[str, Any],
        decide: DecideLeases,
    ) -> list[Outcome]:
        """Insert or revive the row of `executor_id` (identity: group, host, pid, version)
        under `holder`; the previous holder's rows are released as `decide` says, never adopted.
        """
        ...

    async def heartbeat(self, holder: str, pools: dict[str, Any]) -> str | None:
        """Record a heartbeat; returns the row's previous state, None if superseded."""
        ...

    async def mark_executor_stopped(self, holder: str, pools: dict[str, Any]) -> None:
        """Record a clean stop."""
        ...


class QueueSignals(Protocol):
    """What the runner reads to scale, stop, and wake."""

    async def pending_counts(self, pools: Sequence[str]) -> dict[str, int]:
        """Claimable-now subtasks per pool."""
        ...

    async def work_remains(
        self, pools: Sequence[str], routes: Mapping[str, Sequence[str]] | None = None
    ) -> bool:
        """True while any subtask of `pools` (routed: those providers) is pending or processing."""
        ...

    async def canceled_among(self, task_ids: Sequence[int]) -> set[int]:
        """Which of these tasks have been canceled."""
        ...

    async def listen(self, pools: Sequence[str], on_wake: Callable[[str], None]) -> None:
        """Call `on_wake(pool)` when work of `pools` is submitted or requeued; until cancelled."""
        ...


class ErrorSink(Protocol):
    """Aggregated failures."""

    async def record_errors(self, records: Sequence[ErrorRecord]) -> list[tuple[str, str]]:
        """Aggregate failures; returns the (type, fingerprint) pairs seen for the first time."""
        ...


# A pressure event on a provider's stored state: (state, now in epoch seconds) -> change.
OnPressure = Callable[[dict[str, Any], float], ControlChange | None]
# The end of a provider's window: (state, the fleet's window, now) -> change.
DecideWindow = Callable[[dict[str, Any], ProviderWindow, float], ControlChange]


class FleetStore(Protocol):
    """The providers' fleet-wide rows, as a runner reaches them."""

    async def register_providers(self, providers: Sequence[ProviderBounds]) -> None:
        """Create or update the providers' rows with this runner's bounds."""
        ...

    async def record_pressure(self, name: str, rule: OnPressure) -> str | None:
        """Apply a pressure rule under the row's lock; the reason if something changed."""
        ...

    async def insert_reports(self, executor_id: str, reports: Sequence[ProviderReport]) -> None:
        """Store this runner's counts since its last report."""
        ...

    async def decide_window(
        self, name: str, window: float, pools: Sequence[str], pending_cap: int, rule: DecideWindow
    ) -> str | None:
        """Decide the provider's window if it is due and no other runner is deciding it."""
        ...


class RunnerStore(SubtaskLeases, ExecutorRegistry, QueueSignals, ErrorSink, FleetStore, Protocol):
    """Everything the runner loop needs from the database, and nothing else."""


class TaskStore(Protocol):
    """Tasks as users see them: submit, read, cancel, retry, errors."""

    async def submit_task(self, task: NewTask, subtasks: Iterable[SubtaskRow]) -> int:
        """Insert a task and its subtasks in one transaction; returns its id."""
        ...

    async def list_tasks(
        self, *, limit: int = 50, active_only: bool = False
    ) -> list[dict[str, Any]]:
        """Newest tasks first, with their counters."""
        ...

    async def get_task(self, task_id: int) -> dict[str, Any] | None:
        """One task with counts by status and first failures; None if unknown."""
        ...

    async def cancel_task(self, task_id: int) -> dict[str, Any] | None:
        """Cancel pending subtasks now, in-flight ones when their attempt ends."""
        ...

    async def retry_task(self, task_id: int) -> dict[str, Any] | None:
        """Requeue failed subtasks; raises TaskIsCanceled for a canceled task."""
        ...

    async def top_errors(self, limit: int = 20) -> list[dict[str, Any]]:
        """Aggregated errors, most frequent first."""
        ...

    async def demo_report(self, task_ids: Sequence[int]) -> dict[str, Any]:
        """Tasks, image paths, retry/deferral totals and errors of the given tasks."""
        ...


class RetentionStore(Protocol):
    """Pruning: each method is one short transaction over at most `batch` rows."""

    async def count_old(self, older_than: float) -> PruneCounts:
        """What a prune with this cutoff (seconds ago) would remove now."""
        ...

    async def old_task_ids(self, older_than: float, after: int, limit: int) -> list[int]:
        """Finished tasks past the cutoff, ascending ids after `after`."""
        ...

    async def prune_subtasks(
        self, task_ids: Sequence[int], older_than: float, batch: int
    ) -> PrunedBatch:
        """Delete up to `batch` subtasks of these tasks, then those tasks left empty."""
        ...

    async def prune_error_logs(self, older_than: float, batch: int) -> int:
        """Delete up to `batch` error aggregates not seen since the cutoff."""
        ...

    async def prune_outbox(self, older_than: float, batch: int) -> int:
        """Delete up to `batch` settled alert events older than the cutoff."""
        ...

    def exclusive(self, key: int) -> AbstractAsyncContextManager[bool]:
        """Hold a fleet-wide lock while inside; yields False if another process holds it."""
        ...
