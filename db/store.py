"""PgStore: the PostgreSQL implementation of the store ports (the SQL lives in db.queries)."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from db import notify, queries
from db.ports import DecideLeases, RunnerStore, TaskStore
from db.records import ClaimedSubtask, ErrorRecord, NewTask, Outcome, SubtaskRow


class PgStore:
    """Holds the engine; every method is one call into db.queries (one place for the SQL)."""

    def __init__(self, engine: AsyncEngine) -> None:
        self.engine = engine

    # --- SubtaskLeases ---------------------------------------------------

    async def claim(
        self, pool: str, n: int, executor_id: str, lease: float
    ) -> list[ClaimedSubtask]:
        """Lease up to `n` due subtasks of `pool` (SKIP LOCKED)."""
        return await queries.claim(self.engine, pool, n, executor_id, lease)

    async def apply_outcomes(self, outcomes: Sequence[Outcome]) -> int:
        """Record outcomes in one fenced statement."""
        return await queries.apply_outcomes(self.engine, outcomes)

    async def set_external_id(
        self, subtask_id: int, attempt: int, executor_id: str, external_id: str
    ) -> bool:
        """Persist an async job's id under the lease."""
        return await queries.set_external_id(
            self.engine, subtask_id, attempt, executor_id, external_id
        )

    async def reap_expired(self, decide: DecideLeases, *, limit: int = 1000) -> list[Outcome]:
        """Settle expired leases as `decide` says, in the transaction that locked them."""
        return await queries.reap_expired(self.engine, decide, limit=limit)

    # --- ExecutorRegistry ------------------------------------------------

    async def register_executor(
        self, executor_id: str, group: str, host: str, pid: int, version: str
    ) -> None:
        """Insert or revive this runner's row."""
        await queries.register_executor(self.engine, executor_id, group, host, pid, version)

    async def heartbeat(
        self, executor_id: str, pools: dict[str, Any], lease: float, held: Sequence[int]
    ) -> int:
        """Record a heartbeat and renew held leases."""
        return await queries.heartbeat(self.engine, executor_id, pools, lease, held)

    async def mark_executor_stopped(self, executor_id: str, pools: dict[str, Any]) -> None:
        """Record a clean stop."""
        await queries.mark_executor_stopped(self.engine, executor_id, pools)

    # --- QueueSignals ----------------------------------------------------

    async def pending_counts(self, pools: Sequence[str]) -> dict[str, int]:
        """Claimable-now subtasks per pool."""
        return await queries.pending_counts(self.engine, pools)

    async def work_remains(self, pools: Sequence[str]) -> bool:
        """True while any subtask of `pools` is pending or processing."""
        return await queries.work_remains(self.engine, pools)

    async def canceled_among(self, task_ids: Sequence[int]) -> set[int]:
        """Which of these tasks have been canceled."""
        return await queries.canceled_among(self.engine, task_ids)

    async def listen(self, on_wake: Callable[[str], None]) -> None:
        """LISTEN for wake-ups, reconnecting forever."""
        await notify.listen(self.engine, on_wake)

    # --- ErrorSink -------------------------------------------------------

    async def record_errors(self, records: Sequence[ErrorRecord]) -> list[tuple[str, str]]:
        """Aggregate failures into error_logs."""
        return await queries.record_errors(self.engine, records)

    # --- TaskStore -------------------------------------------------------

    async def submit_task(self, task: NewTask, subtasks: Iterable[SubtaskRow]) -> int:
        """Insert a task and its subtasks in one transaction."""
        return await queries.submit_task(self.engine, task, subtasks)

    async def list_tasks(
        self, *, limit: int = 50, active_only: bool = False
    ) -> list[dict[str, Any]]:
        """Newest tasks first."""
        return await queries.list_tasks(self.engine, limit=limit, active_only=active_only)

    async def get_task(self, task_id: int) -> dict[str, Any] | None:
        """One task in detail."""
        return await queries.get_task(self.engine, task_id)

    async def cancel_task(self, task_id: int) -> dict[str, Any] | None:
        """Cancel a task."""
        return await queries.cancel_task(self.engine, task_id)

    async def retry_task(self, task_id: int) -> dict[str, Any] | None:
        """Requeue a task's failed subtasks (refuses a canceled task)."""
        return await queries.retry_task(self.engine, task_id)

    async def top_errors(self, limit: int = 20) -> list[dict[str, Any]]:
        """Aggregated errors."""
        return await queries.top_errors(self.engine, limit)

    async def demo_report(self, task_ids: Sequence[int]) -> dict[str, Any]:
        """The demo's summary data."""
        return await queries.demo_report(self.engine, task_ids)


# Checked by mypy: PgStore must keep satisfying both ports.
_RUNNER: type[RunnerStore] = PgStore
_TASKS: type[TaskStore] = PgStore
