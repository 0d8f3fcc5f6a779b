"""A runner's periodic duties: heartbeat, reaping, scaling ticks, idle stop, retention.

Each loop reads and writes through the store and the `Runner` it serves; none claims or
runs subtasks (that is the executor's one job).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Protocol

import anyio

from db.ports import RetentionStore, RunnerStore
from db.records import ErrorRecord, ExpiredLease, Outcome
from runner.config import RetentionSettings, RunnerSettings
from runner.loop.pool import Pool, Wakeup
from runner.policy.backoff import SubtaskRetryPolicy
from runner.policy.classify import Attempt, LeaseExpired, classify
from runner.policy.scaling import Decision
from runner.retention import RETENTION_LOCK, PruneReport, prune

log = logging.getLogger(__name__)


class Runner(Protocol):
    """What the duties need of the executor they serve."""

    store: RunnerStore
    settings: RunnerSettings
    pools: dict[str, Pool]
    routes: dict[str, list[str]]  # pool -> the providers it claims for
    stop_requested: anyio.Event
    idle_wakeup: Wakeup

    @property
    def executor_id(self) -> str:
        """This runner's id."""
        ...

    @property
    def held_ids(self) -> list[int]:
        """Subtasks claimed and not yet recorded, ascending."""
        ...

    @property
    def held_task_ids(self) -> list[int]:
        """Their tasks, ascending."""
        ...

    @property
    def busy(self) -> bool:
        """Work in flight or not yet recorded."""
        ...

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Every pool's state, encoded for the executors row."""
        ...

    def adopt(self, pool: Pool, decision: Decision) -> None:
        """Apply a scaling decision to a pool."""
        ...

    def set_canceled_tasks(self, task_ids: set[int]) -> None:
        """Tell in-flight work which tasks were canceled."""
        ...

    def observe_pools(self) -> None:
        """Refresh the pool gauges."""
        ...

    def request_stop(self) -> None:
        """Stop claiming and drain."""
        ...

    def now(self) -> float:
        """The runner's monotonic clock."""
        ...


def lease_outcomes(expired: Sequence[ExpiredLease], settings: RunnerSettings) -> list[Outcome]:
    """What each expired lease becomes: the same rule as any failed attempt (pure)."""
    outcomes = []
    for lease in expired:
        verdict = classify(
            LeaseExpired(),
            Attempt(lease.retry_count, lease.deferrals, lease.max_retries),
            SubtaskRetryPolicy(
                max_retries=lease.max_retries,
                base=settings.retry_base,
                rate_limit_cap=settings.rate_limit_deferrals,
            ),
            (),
        )
        outcomes.append(
            Outcome(
                lease.id,
                lease.attempt,
                verdict.kind,
                lease.executor_id,
                error=verdict.error,
                delay=verdict.delay,
            )
        )
    return outcomes


async def heartbeat_loop(runner: Runner) -> None:
    """Record this runner's state, renew its leases, learn which of its tasks were canceled."""
    store, settings = runner.store, runner.settings
    while True:
        await anyio.sleep(settings.heartbeat_interval)
        await store.heartbeat(
            runner.executor_id, runner.snapshot(), settings.lease, runner.held_ids
        )
        runner.set_canceled_tasks(await store.canceled_among(runner.held_task_ids))


def lease_errors(expired: Sequence[ExpiredLease]) -> list[ErrorRecord]:
    """Lease expiries are errors too: they show in `imgrun errors`."""
    exc = LeaseExpired()
    return [
        ErrorRecord(type(exc).__name__, str(exc), None, lease.pool, lease.provider, lease.id)
        for lease in expired
    ]


async def reap_once(store: RunnerStore, settings: RunnerSettings) -> list[ExpiredLease]:
    """Settle the expired leases (one transaction); returns those it settled."""
    seen: list[ExpiredLease] = []

    def decide(expired: Sequence[ExpiredLease]) -> list[Outcome]:
        seen.extend(expired)
        return lease_outcomes(expired, settings)

    await store.reap_expired(decide)
    if seen:
        await store.record_errors(lease_errors(seen))
    return seen


async def reaper_loop(runner: Runner) -> None:
    """Return the subtasks of runners that stopped answering; each costs one attempt."""
    while True:
        await anyio.sleep(runner.settings.heartbeat_interval)
        reaped = await reap_once(runner.store, runner.settings)
        if reaped:
            log.info("reaped %d subtasks whose lease expired", len(reaped))


async def scaler_loop(runner: Runner) -> None:
    """Every tick, give each pool's policy the queue depth and what the last window saw."""
    pools = runner.pools
    tick = min(pool.config.tick_interval for pool in pools.values())
    while True:
        pending = await runner.store.pending_counts(list(pools))
        now = runner.now()
        for pool in pools.values():
            pool.pending = pending.get(pool.name, 0)
            signals = pool.window.signals(pool.pending, pool.running)
            pool.window = type(pool.window)()
            runner.adopt(pool, pool.policy.tick(signals, now))
        runner.observe_pools()
        await anyio.sleep(tick)


async def idle_loop(runner: Runner) -> None:
    """With --until-idle: stop once nothing is pending, processing or waiting to retry."""
    while not runner.stop_requested.is_set():
        await runner.idle_wakeup.wait(runner.settings.poll_interval)
        if runner.busy:
            continue
        if not await runner.store.work_remains(list(runner.pools), runner.routes):
            log.info("nothing pending, processing or waiting to retry: stopping")
            runner.request_stop()


async def retention_once(
    store: RetentionStore, settings: RetentionSettings, images_root: Path
) -> PruneReport | None:
    """Prune as `[retention]` says, unless another runner is pruning (None then)."""
    async with store.exclusive(RETENTION_LOCK) as mine:
        if not mine:
            return None
        return await prune(
            store,
            settings.older_than,
            images_root=images_root if settings.images else None,
            batch=settings.batch,
        )


async def retention_loop(
    store: RetentionStore, settings: RetentionSettings, images_root: Path
) -> None:
    """Every `interval`, one runner of the fleet prunes what `[retention]` says is old."""
    while True:
        try:
            report = await retention_once(store, settings, images_root)
        except Exception as exc:
            # The type only: a database error's text may carry its URL. Next interval retries.
            log.warning("retention: prune failed (%s); retrying later", type(exc).__name__)
        else:
            if report is not None and report.transactions:
                log.info(
                    "retention: pruned %d tasks, %d subtasks, %d images, %d error rows,"
                    " %d alert events",
                    report.tasks,
                    report.subtasks,
                    report.images,
                    report.error_logs,
                    report.outbox,
                )
        await anyio.sleep(settings.interval)
