"""PgStore: the PostgreSQL implementation of the store ports (the SQL lives in db.queries)."""

from __future__ import annotations

import functools
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractAsyncContextManager
from datetime import datetime
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from db import (
    api_queries,
    liveness_queries,
    outbox,
    provider_queries,
    queries,
    retention_queries,
    status_queries,
)
from db.api_queries import Submitted
from db.lanes import Lane
from db.outbox import OutboxEvent
from db.ports import DecideLeases, DecideWindow, OnPressure, RetentionStore, RunnerStore, TaskStore
from db.records import (
    ClaimBatch,
    ErrorRecord,
    NewTask,
    Outcome,
    ProviderBounds,
    ProviderReport,
    PruneCounts,
    PrunedBatch,
    SubtaskRow,
)
from db.status_queries import StatusRows
from db.submit_queries import WAKE_CHANNEL


class PgStore:
    """Holds the engine; every method is one call into db.queries (one place for the SQL).

    With `lanes`, claims (one lane per pool) and outcome flushes keep their connection checked
    out between statements (db/lanes.py): a runner's hot path. `close()` gives them back.
    """

    def __init__(self, engine: AsyncEngine, *, lanes: bool = False) -> None:
        self.engine = engine
        self._use_lanes = lanes
        self._lanes: dict[str, Lane] = {}

    def _hot(self, name: str) -> AsyncEngine | Lane:
        """Where the hot statement `name` runs: its lane, or the engine's pool."""
        return self._lane(name) if self._use_lanes else self.engine

    def _lane(self, name: str) -> Lane:
        lane = self._lanes.get(name)
        if lane is None:
            lane = self._lanes[name] = Lane(self.engine)
        return lane

    async def close(self) -> None:
        """Give the lanes' connections back to the pool."""
        for lane in self._lanes.values():
            await lane.close()

    # --- SubtaskLeases ---------------------------------------------------

    async def claim(
        self, pool: str, providers: list[str], n: int, executor_id: str, lease: float
    ) -> ClaimBatch:
        """Lease up to `n` due subtasks of `pool` for `providers`, in turn (fleet limits)."""
        return await queries.claim(
            self._hot(f"claim:{pool}"), pool, providers, n, executor_id, lease
        )

    # --- FleetStore ------------------------------------------------------

    async def register_providers(self, providers: Sequence[ProviderBounds]) -> None:
        """Create or update the providers' rows with this runner's bounds."""
        await provider_queries.register_providers(self.engine, providers)

    async def record_pressure(self, name: str, rule: OnPressure) -> str | None:
        """Apply a pressure rule under the row's lock."""
        return await provider_queries.record_pressure(self.engine, name, rule)

    async def insert_reports(self, executor_id: str, reports: Sequence[ProviderReport]) -> None:
        """Store this runner's counts."""
        await provider_queries.insert_reports(self.engine, executor_id, reports)

    async def decide_window(
        self, name: str, window: float, pools: Sequence[str], pending_cap: int, rule: DecideWindow
    ) -> str | None:
        """Decide the provider's window if it is due and nobody else is."""
        return await provider_queries.decide_window(
            self.engine, name, window, pools, pending_cap, rule
        )

    async def provider_rows(self) -> list[dict[str, Any]]:
        """Every provider's fleet-wide row, for the status view."""
        return [dict(row) for row in await status_queries.load_provider_rows(self.engine)]

    async def apply_outcomes(self, outcomes: Sequence[Outcome]) -> list[int]:
        """Record attempts' outcomes (fenced); returns the subtask ids whose outcome stands."""
        return await queries.apply_outcomes(self._hot("outcomes"), outcomes)

    async def set_external_id(
        self, subtask_id: int, attempt: int, executor_id: str, external_id: str
    ) -> bool:
        """Persist an async job's id under the lease."""
        return await queries.set_external_id(
            self.engine, subtask_id, attempt, executor_id, external_id
        )

    async def reap_expired(
        self,
        decide: DecideLeases,
        *,
        stale_after: float = 4.0,
        dead_runners: bool = True,
        backstop: bool = True,
        limit: int = 1000,
    ) -> list[Outcome]:
        """Release dead runners' rows (and unowned expired leases) as `decide` says."""
        return await liveness_queries.reap_expired(
            self.engine,
            decide,
            stale_after=stale_after,
            dead_runners=dead_runners,
            backstop=backstop,
            limit=limit,
        )

    # --- ExecutorRegistry ------------------------------------------------

    async def register_executor(
        self,
        executor_id: str,
        holder: str,
        identity: dict[str, Any],
        decide: DecideLeases,
    ) -> list[Outcome]:
        """Insert or revive this runner's row under `holder`; release the previous holder's rows."""
        return await liveness_queries.register_executor(
            self.engine, executor_id, holder, identity, decide
        )

    async def heartbeat(self, holder: str, pools: dict[str, Any]) -> str | None:
        """Record a heartbeat; the row's previous state, or None if superseded."""
        return await liveness_queries.heartbeat(self.engine, holder, pools)

    async def mark_executor_stopped(self, holder: str, pools: dict[str, Any]) -> None:
        """Record a clean stop."""
        await liveness_queries.mark_executor_stopped(self.engine, holder, pools)

    # --- QueueSignals ----------------------------------------------------

    async def pending_counts(self, pools: Sequence[str]) -> dict[str, int]:
        """Claimable-now subtasks per pool."""
        return await queries.pending_counts(self.engine, pools)

    async def work_remains(
        self, pools: Sequence[str], routes: Mapping[str, Sequence[str]] | None = None
    ) -> bool:
        """True while any subtask of `pools` (routed: those providers) is pending or processing."""
        return await queries.work_remains(self.engine, pools, routes)

    async def canceled_among(self, task_ids: Sequence[int]) -> set[int]:
        """Which of these tasks have been canceled."""
        return await queries.canceled_among(self.engine, task_ids)

    async def listen(self, pools: Sequence[str], on_wake: Callable[[str], None]) -> None:
        """LISTEN for wake-ups of `pools` on their claim lanes, reconnecting forever."""
        async with anyio.create_task_group() as group:
            for pool in pools:
                wake = functools.partial(_wake_for, pool, on_wake)
                group.start_soon(self._lane(f"claim:{pool}").listen, WAKE_CHANNEL, wake)

    # --- ErrorSink -------------------------------------------------------

    async def record_errors(self, records: Sequence[ErrorRecord]) -> list[tuple[str, str]]:
        """Aggregate failures into error_logs."""
        return await queries.record_errors(self.engine, records)

    # --- TaskStore -------------------------------------------------------

    async def submit_task(
        self,
        task: NewTask,
        subtasks: Iterable[SubtaskRow],
        *,
        on_progress: Callable[[int], None] | None = None,
    ) -> int:
        """Insert a task and its subtasks in one transaction."""
        return await queries.submit_task(self.engine, task, subtasks, on_progress=on_progress)

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

    # --- ApiReads (db.api_queries) ------------------------------
    async def create_token(self, name: str, token_hash: str) -> bool:
        """Store a token's hash under `name`; False if the name is taken."""
        return await api_queries.create_token(self.engine, name, token_hash)

    async def list_tokens(self) -> list[dict[str, Any]]:
        """Token names with when they were made and last used (never the hashes)."""
        return await api_queries.list_tokens(self.engine)

    async def revoke_token(self, name: str) -> bool:
        """Delete the token `name`; False if there is none."""
        return await api_queries.revoke_token(self.engine, name)

    async def has_tokens(self) -> bool:
        """Whether any token exists."""
        return await api_queries.has_tokens(self.engine)

    async def token_name(self, token_hash: str) -> str | None:
        """The name of the token with this hash (noting its use), or None."""
        return await api_queries.token_name(self.engine, token_hash)

    async def submit_task_once(
        self, task: NewTask, subtasks: Iterable[SubtaskRow], *, key: str, request_hash: str
    ) -> Submitted:
        """Like submit_task, but at most once per `key` (same key, other hash: KeyReused)."""
        return await api_queries.submit_task_once(
            self.engine, task, subtasks, key=key, request_hash=request_hash
        )

    async def list_tasks_page(
        self, *, status: str | None, limit: int, after: int | None
    ) -> list[dict[str, Any]]:
        """Tasks newest first (ids below `after`), optionally of one status; `tasks --json` rows."""
        return await api_queries.list_tasks_page(
            self.engine, status=status, limit=limit, after=after
        )

    async def task_header(self, task_id: int) -> dict[str, Any] | None:
        """A task's list row (no per-status counts), or None."""
        return await api_queries.task_header(self.engine, task_id)

    async def manifest_page(self, task_id: int, *, after: int, limit: int) -> list[dict[str, Any]]:
        """A task's subtasks in ordinal order after `after`, with their images."""
        return await api_queries.manifest_page(self.engine, task_id, after=after, limit=limit)

    async def stored_image(
        self, task_id: int, subtask_id: int, index: int
    ) -> dict[str, Any] | None:
        """The stored record of image `index` of a completed subtask of `task_id`, or None."""
        return await api_queries.stored_image(self.engine, task_id, subtask_id, index)

    async def task_changes(
        self, since: datetime, *, task_id: int | None = None, limit: int = 5000
    ) -> tuple[datetime, list[dict[str, Any]]]:
        """The database's now() and the tasks active, or finished since `since`."""
        return await api_queries.task_changes(self.engine, since, task_id=task_id, limit=limit)

    async def ping(self) -> bool:
        """True when the database answers a trivial query."""
        return await api_queries.ping(self.engine)

    # --- AlertOutbox (db.outbox) ------------------------------
    async def claim_events(self, n: int, lease: float) -> list[OutboxEvent]:
        """Lease up to `n` due events; one another process would take only after `lease` seconds."""
        return await outbox.claim_events(self.engine, n, lease)

    async def record_attempt(
        self,
        event_id: uuid.UUID,
        attempt: int,
        targets: Sequence[str],
        *,
        state: str,
        retry_in: float = 0.0,
        error: str | None = None,
    ) -> bool:
        """After attempt `attempt`: add the hooks that took it; state pending/delivered/failed."""
        return await outbox.record_attempt(
            self.engine, event_id, attempt, targets, state=state, retry_in=retry_in, error=error
        )

    async def mark_lost_runners(self, after: float) -> list[dict[str, Any]]:
        """Runners silent for `after` seconds become 'lost', each with one runner.lost event."""
        return await outbox.mark_lost_runners(self.engine, after)

    async def provider_pressure(self, window: float) -> dict[str, tuple[int, int]]:
        """Per provider with any 429/5xx in the last `window` seconds: (those, completions)."""
        return await outbox.provider_pressure(self.engine, window)

    async def add_degraded(
        self, payloads: Sequence[Mapping[str, Any]], cooldown: float
    ) -> list[str]:
        """provider.degraded events, each unless one for its provider is younger than `cooldown`."""
        return await outbox.add_degraded(self.engine, payloads, cooldown)

    async def purge(self, *, keep: float, pressure_keep: float) -> int:
        """Drop events older than `keep` seconds and pressure samples older than `pressure_keep`."""
        return await outbox.purge(self.engine, keep=keep, pressure_keep=pressure_keep)

    # --- StatusReads (db.status_queries) ------------------------------
    async def load_status_rows(
        self,
        *,
        now: datetime | None = None,
        task_limit: int = 20,
        recent_limit: int = 5,
        error_limit: int = 5,
    ) -> StatusRows:
        """Read every status query in one read-only, consistent transaction."""
        return await status_queries.load_status_rows(
            self.engine,
            now=now,
            task_limit=task_limit,
            recent_limit=recent_limit,
            error_limit=error_limit,
        )

    # --- RetentionStore (db.retention_queries) ------------------------------
    async def count_old(self, older_than: float) -> PruneCounts:
        """What a prune with this cutoff would remove now."""
        return await retention_queries.count_old(self.engine, older_than)

    async def old_task_ids(self, older_than: float, after: int, limit: int) -> list[int]:
        """Finished tasks past the cutoff, ascending ids after `after`."""
        return await retention_queries.old_task_ids(self.engine, older_than, after, limit)

    async def prune_subtasks(
        self, task_ids: Sequence[int], older_than: float, batch: int
    ) -> PrunedBatch:
        """Delete up to `batch` subtasks of these tasks, then those tasks left empty."""
        return await retention_queries.prune_subtasks(self.engine, task_ids, older_than, batch)

    async def prune_error_logs(self, older_than: float, batch: int) -> int:
        """Delete up to `batch` error aggregates not seen since the cutoff."""
        return await retention_queries.prune_error_logs(self.engine, older_than, batch)

    async def prune_outbox(self, older_than: float, batch: int) -> int:
        """Delete up to `batch` settled alert events older than the cutoff."""
        return await retention_queries.prune_outbox(self.engine, older_than, batch)

    def exclusive(self, key: int) -> AbstractAsyncContextManager[bool]:
        """A PostgreSQL advisory lock held while inside; yields False if already taken."""
        return retention_queries.advisory_lock(self.engine, key)


# Checked by mypy: PgStore must keep satisfying both ports.
_RUNNER: type[RunnerStore] = PgStore
_TASKS: type[TaskStore] = PgStore
_RETENTION: type[RetentionStore] = PgStore


def _wake_for(pool: str, on_wake: Callable[[str], None], payload: str | None) -> None:
    """A claim lane's notification: `pool`'s own wake-ups, and any it may have missed (None)."""
    if payload is None or payload == pool:
        on_wake(pool)
