"""A runner's periodic duties: heartbeat, reaping, scaling ticks, idle stop, retention.

Each loop reads and writes through the store and the `Runner` it serves; none claims or
runs subtasks (that is the executor's one job).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import anyio

from db.engine import is_transient_db_error
from db.ports import DecideLeases, RetentionStore, RunnerStore
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
        """This process's holder: what its claims write into subtasks.executor_id."""
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
    """Every heartbeat_interval: this runner's row (only), and which of its tasks were canceled.

    A failed beat is retried at the next interval, not after a growing backoff: after a
    database outage, every live runner must beat again well within stale_after.
    """
    settings = runner.settings
    while True:
        await anyio.sleep(settings.heartbeat_interval)
        try:
            await beat_once(runner)
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            # The type only: a database error's text may carry its URL.
            log.warning(
                "heartbeat failed (%s); next in %gs",
                type(exc).__name__,
                settings.heartbeat_interval,
            )


async def beat_once(runner: Runner) -> None:
    """One heartbeat; stops the runner if another process registered under its id."""
    previous = await runner.store.heartbeat(runner.executor_id, runner.snapshot())
    if previous is None:
        log.error(
            "another runner registered under this executor id: its predecessor's subtasks"
            " were released; stopping (%s)",
            runner.executor_id,
        )
        runner.request_stop()
        return
    if previous == "lost":
        # Our silence outlived stale_after: the fleet released what we held; what is in
        # flight now will be dropped by the fence. We are alive, so we carry on.
        log.warning("this runner was declared lost and its subtasks released; running on")
    runner.set_canceled_tasks(await runner.store.canceled_among(runner.held_task_ids))


def lease_errors(expired: Sequence[ExpiredLease]) -> list[ErrorRecord]:
    """Lease expiries are errors too: they show in `imgrun errors`."""
    exc = LeaseExpired()
    return [
        ErrorRecord(type(exc).__name__, str(exc), None, lease.pool, lease.provider, lease.id)
        for lease in expired
    ]


def lease_decider(settings: RunnerSettings, seen: list[ExpiredLease]) -> DecideLeases:
    """The reaper's rule, noting each row it is asked about in `seen`."""

    def decide(expired: Sequence[ExpiredLease]) -> list[Outcome]:
        seen.extend(expired)
        return lease_outcomes(expired, settings)

    return decide


async def reap_once(
    store: RunnerStore,
    settings: RunnerSettings,
    *,
    dead_runners: bool = True,
    backstop: bool = True,
) -> list[ExpiredLease]:
    """Release dead runners' rows (and unowned expired leases); returns those it released."""
    seen: list[ExpiredLease] = []
    await store.reap_expired(
        lease_decider(settings, seen),
        stale_after=settings.stale_after,
        dead_runners=dead_runners,
        backstop=backstop,
    )
    if seen:
        await store.record_errors(lease_errors(seen))
    return seen


async def register(runner: Runner, executor_id: str, details: dict[str, Any]) -> None:
    """Register this process (a new holder); release what a predecessor of our id held."""
    seen: list[ExpiredLease] = []
    store, settings = runner.store, runner.settings
    await store.register_executor(
        executor_id, runner.executor_id, details, lease_decider(settings, seen)
    )
    if seen:
        await store.record_errors(lease_errors(seen))
        log.info("released %d subtasks an earlier process of this id still held", len(seen))


@dataclass(frozen=True)
class ReapPass:
    """What one reaper pass looks at, and when the lease backstop is due next."""

    dead_runners: bool
    backstop: bool
    backstop_at: float


def reap_pass(now: float, started: float, backstop_at: float, settings: RunnerSettings) -> ReapPass:
    """Plan a reaper pass (pure): judge others only once this loop has run stale_after
    (back from an outage, a runner first gives the others time to beat again); the lease
    backstop, for rows no live runner holds, every quarter lease.
    """
    backstop = now >= backstop_at
    return ReapPass(
        dead_runners=now - started >= settings.stale_after,
        backstop=backstop,
        backstop_at=now + settings.lease / 4 if backstop else backstop_at,
    )


async def reaper_loop(runner: Runner) -> None:
    """Return the subtasks of runners that stopped heartbeating; each costs one attempt."""
    settings = runner.settings
    started = backstop_at = runner.now()
    while True:
        await anyio.sleep(settings.heartbeat_interval)
        plan = reap_pass(runner.now(), started, backstop_at, settings)
        backstop_at = plan.backstop_at
        reaped = await reap_once(
            runner.store, settings, dead_runners=plan.dead_runners, backstop=plan.backstop
        )
        if reaped:
            log.info("released %d subtasks of runners that stopped heartbeating", len(reaped))


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
