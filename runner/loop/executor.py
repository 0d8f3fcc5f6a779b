"""The runner: claims subtasks per pool, runs them, records outcomes, scales, heartbeats."""

from __future__ import annotations

import functools
import logging
import secrets
import time
import traceback
from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextvars import ContextVar
from dataclasses import dataclass, field
from typing import Any

import anyio
import tenacity

from db.engine import is_transient_db_error
from db.ports import RunnerStore
from db.records import ClaimedSubtask, ErrorRecord, Outcome
from runner.config import PoolConfig, RunnerSettings
from runner.loop import duties
from runner.loop.crew import Crew, Shift
from runner.loop.fleet import Fleet
from runner.loop.journal import Journal
from runner.loop.metrics import Metrics
from runner.loop.outcomes import Release
from runner.loop.pool import Pool, Wakeup
from runner.loop.recorder import Discard, Recorder
from runner.loop.signals import SignalCounts
from runner.policy.backoff import SubtaskRetryPolicy
from runner.policy.classify import Attempt, Signal, classify, recovered_error, signal_of
from runner.policy.fingerprint import redact
from runner.policy.scaling import Decision, PressureKind
from runner.spec.params import image_request
from workers.errors import Canceled, ProviderError, ProviderTimeout, RateLimited
from workers.headers import RateLimitInfo
from workers.kinds import pool_kind
from workers.types import ImageRequest, WorkResult

log = logging.getLogger(__name__)

REFILL_SHARE = 4  # refill once 1/REFILL_SHARE of the pool is free (see refill_at)
CLAIM_SHARE = 2  # one claim takes at most 1/CLAIM_SHARE of the pool (see claim_size)
AT_LIMIT_RETRY = 0.05  # seconds: a provider at its fleet limit frees slots as any runner finishes
FINAL_FLUSH_TIMEOUT = 5.0  # seconds at exit to record what is left; leases cover the rest
# The subtask whose attempt runs in this task: names it on errors its retries absorb.
_RUNNING: ContextVar[int | None] = ContextVar("imgrun_running_subtask", default=None)

# Runs one claimed subtask to a result; raises ProviderError subclasses on failure.
# `on_submitted` persists an async job id; `should_stop` tells a polling worker to give up.
Work = Callable[
    [ClaimedSubtask, ImageRequest, Callable[[str], Awaitable[None]], Callable[[], Awaitable[bool]]],
    Awaitable[WorkResult],
]


def refill_at(limit: int, running: int) -> int:
    """Free slots worth a claim: a share of the limit, or one when nothing is in flight.

    Refilling a busy pool one slot at a time costs a claim per subtask; waiting for it to
    empty runs claims and outcome flushes in lock-step. A quarter of the limit lets one
    share's claim overlap the rest's work, and an idle pool still claims at once (latency).
    """
    if running == 0:
        return 1
    return max(1, limit // REFILL_SHARE)


def attempt_timeout(pool: Pool) -> float | None:
    """The deadline the pool's crew puts on an attempt: a polling pool's worker keeps its own."""
    return None if pool_kind(pool.name).polls else pool.config.timeout


def claim_size(limit: int) -> int:
    """The most one claim takes: a share of the limit, so the next claim overlaps the work.

    A claim of the whole pool leaves nothing to run while the next one is in the database;
    with half, one half runs while the other half's claim is out (and an idle runner with a
    single subtask due still claims it at once).
    """
    return max(1, limit // CLAIM_SHARE)


@dataclass(frozen=True)
class Identity:
    """Who this runner is, for the executors table."""

    executor_id: str
    group: str
    host: str
    pid: int
    version: str
    # New at every start: a restart under the same id is a new holder, never the old one.
    incarnation: str = field(default_factory=lambda: secrets.token_hex(4))

    @property
    def holder(self) -> str:
        """What this process writes into subtasks.executor_id (and the fence compares)."""
        return f"{self.executor_id}:{self.incarnation}"


class Executor:
    """One runner process's scheduling loop over its pools."""

    def __init__(
        self,
        store: RunnerStore,
        identity: Identity,
        settings: RunnerSettings,
        pools: Mapping[str, PoolConfig],
        work: Work,
        fleet: Fleet,
        routes: Mapping[str, Sequence[str]],
        *,
        secrets: tuple[str, ...] = (),
        discard: Discard | None = None,
        journal: Journal | None = None,
        until_idle: bool = False,
        metrics: Metrics | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.identity = identity
        self.settings = settings
        self.clock = clock
        self.pools = {name: Pool(name, config, clock()) for name, config in pools.items()}
        # pool -> its workers: a claimed subtask runs on one of them
        self.crews: dict[str, Crew[ClaimedSubtask]] = {
            name: Crew(functools.partial(self._run_one, pool), attempt_timeout(pool))
            for name, pool in self.pools.items()
        }
        self.work = work
        self.fleet = fleet
        # pool -> the providers this runner claims for in it (those it has a config for)
        self.routes = {pool: list(routes.get(pool, ())) for pool in self.pools}
        self.secrets = secrets
        self.until_idle = until_idle
        self.metrics = metrics or Metrics()
        self.stop_requested = anyio.Event()
        self.recorder = Recorder(store, settings.outcome_batch, discard=discard, journal=journal)
        self.idle_wakeup = Wakeup()
        # Claimed and not yet recorded: in flight, or finished and waiting in the buffer.
        self._held: dict[int, ClaimedSubtask] = {}
        self._canceled_tasks: set[int] = set()
        # provider -> until (monotonic): paused (its fleet cooldown, or it refused our
        # credentials or model): claims skip it until then
        self._paused_providers: dict[str, float] = {}
        # provider -> what its answers said since this runner started (observe()); the fleet
        # keeps its own counts per report
        self.signals: dict[str, SignalCounts] = {}
        self._work_group: anyio.abc.TaskGroup | None = None
        self._aborted = False
        self._final_scope: anyio.CancelScope | None = None

    @property
    def executor_id(self) -> str:
        """This process's holder (`<executor_id>:<incarnation>`): claims, outcomes, heartbeat."""
        return self.identity.holder

    def request_stop(self) -> None:
        """Stop claiming; in-flight work drains within the grace period."""
        self.stop_requested.set()
        for pool in self.pools.values():
            pool.wakeup.notify()  # a claim loop waiting for slots or work returns now

    def abort(self) -> None:
        """Stop at once, even mid-flush: what is not recorded stays leased and fenced."""
        self._aborted = True
        self.stop_requested.set()
        if self._final_scope is not None:
            self._final_scope.cancel()

    async def run(self) -> None:
        """Register, run until asked to stop (or idle), drain, and mark ourselves stopped."""
        i = self.identity
        # Journals first: a predecessor's finished work is recorded before registering
        # releases what it still held.
        await self.recorder.replay_journals()
        details = {"group": i.group, "host": i.host, "pid": i.pid, "version": i.version}
        await duties.register(self, i.executor_id, details)
        await self.fleet.register(time.time())
        log.info(
            "runner %s started (pools: %s)",
            self.executor_id,
            ", ".join(f"{p.name} limit {p.limit}" for p in self.pools.values()),
        )
        try:
            async with anyio.create_task_group() as services:
                services.start_soon(self.store.listen, self._routed_pools(), self._on_notify)
                services.start_soon(self._resilient, self.recorder.loop)
                for duty in (duties.heartbeat_loop, duties.reaper_loop, duties.scaler_loop):
                    services.start_soon(self._resilient, duty, self)
                services.start_soon(self._resilient, self.fleet.report_loop)
                for control in self.fleet.providers.values():
                    services.start_soon(self._resilient, self.fleet.pressure_loop, control)
                if self.until_idle:
                    services.start_soon(self._resilient, duties.idle_loop, self)
                async with anyio.create_task_group() as work:
                    self._work_group = work
                    for crew in self.crews.values():
                        if crew.timeout is not None:
                            work.start_soon(crew.watch)
                    # Claim loops are not cancelled: each returns once a stop is requested
                    # (never between a claim's commit and its rows, which would strand them).
                    async with anyio.create_task_group() as claimers:
                        for pool in self.pools.values():
                            claim_loop = functools.partial(
                                self._resilient, self._claim_loop, pool, sleep=self._pause
                            )
                            claimers.start_soon(claim_loop)
                    await self._drain()
                    work.cancel_scope.cancel()
                self._release_leftovers()
                services.cancel_scope.cancel()
        finally:
            # Also when a second signal cancels everything: the journal keeps what is left.
            await self._finish()
        log.info("runner %s stopped", self.executor_id)

    async def _finish(self) -> None:
        """Record what is left and mark ourselves stopped, within FINAL_FLUSH_TIMEOUT."""
        try:
            await self._final_flush()
        finally:
            # Whatever could not be recorded (database down or hung, a second signal) goes
            # to the journal; the next runner on this home records it.
            self.recorder.journal_leftovers()

    async def _final_flush(self) -> None:
        # Shielded from the caller's cancellation, but bounded, and abort() cuts it short:
        # a hung database must never keep a stopping runner alive.
        with anyio.CancelScope(shield=True) as scope:
            self._final_scope = scope
            scope.deadline = anyio.current_time() + FINAL_FLUSH_TIMEOUT
            if self._aborted:
                scope.cancel()
            retrying = tenacity.AsyncRetrying(
                retry=tenacity.retry_if_exception(is_transient_db_error),
                wait=tenacity.wait_exponential(multiplier=0.2, max=1),
                reraise=True,
            )
            async for attempt in retrying:
                with attempt:
                    await self.recorder.flush()
                    await self.store.mark_executor_stopped(self.executor_id, self.snapshot())

    async def _resilient(
        self,
        loop: Callable[..., Awaitable[None]],
        *args: Any,
        sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    ) -> None:
        """Run a loop; if the database goes away, wait it out (backing off) and start again."""
        retrying = tenacity.AsyncRetrying(
            sleep=sleep,
            retry=tenacity.retry_if_exception(is_transient_db_error),
            wait=tenacity.wait_exponential(multiplier=0.5, max=30) + tenacity.wait_random(0, 0.5),
            before_sleep=lambda state: log.warning(
                "%s: database error (%s); retrying in %.1fs",
                loop.__name__.strip("_"),
                state.outcome.exception() if state.outcome else "?",
                state.upcoming_sleep,
            ),
        )
        async for attempt in retrying:
            with attempt:
                await loop(*args)

    async def _pause(self, seconds: float) -> None:
        """Sleep `seconds`, or less if a stop is requested meanwhile."""
        with anyio.move_on_after(seconds):
            await self.stop_requested.wait()

    async def _drain(self) -> None:
        """Wait (up to shutdown_grace) until everything held is finished and recorded."""
        if not self._held:
            return
        log.info(
            "stopping: waiting up to %.0fs for %d subtasks in flight",
            self.settings.shutdown_grace,
            len(self._held),
        )
        with anyio.move_on_after(self.settings.shutdown_grace):
            while self._held:
                await self.idle_wakeup.wait(0.5)
        unrecorded = self.recorder.buffer.outcomes_waiting
        in_flight = len(self._held) - unrecorded
        if in_flight > 0:
            log.info("grace period over: returning %d subtasks to pending", in_flight)
        if unrecorded:
            log.info("grace period over: %d finished subtasks not yet recorded", unrecorded)

    # --- claiming ------------------------------------------------------------

    def _routed_pools(self) -> list[str]:
        """The pools this runner claims for: each wake-up a listener gets costs a server wake."""
        return [name for name, providers in self.routes.items() if providers]

    def _on_notify(self, pool_name: str) -> None:
        pool = self.pools.get(pool_name)
        if pool is not None:
            pool.wakeup.notify()

    async def _claim_loop(self, pool: Pool) -> None:
        poll = self.settings.poll_interval
        while not self.stop_requested.is_set():
            free = pool.free
            if free < refill_at(pool.limit, pool.running):
                await pool.wakeup.wait(poll)
                continue
            asked = min(free, claim_size(pool.limit))
            claimed, wait = await self._claim(pool, asked)
            if self.stop_requested.is_set():
                return
            assert self._work_group is not None
            self.metrics.claims.labels(pool.name).inc(len(claimed))
            crew = self.crews[pool.name]
            for row in claimed:
                self._held[row.id] = row
                crew.hand(row, self._work_group)
            if len(claimed) < asked:
                # Drained what is due: sleep until notified (new work, a freed slot) or poll.
                self.idle_wakeup.notify()
                await pool.wakeup.wait(min(poll, wait))

    async def _claim(self, pool: Pool, free: int) -> tuple[list[ClaimedSubtask], float]:
        """Lease up to `free` rows across the pool's providers, a reserved slot for each.

        Also returns how long to wait before trying again if the claim came up short: a
        provider at its fleet-wide limit frees slots as any runner finishes, so it is asked
        again soon; a paused one after its cooldown.
        """
        # Slots are reserved before the claim: a cut of the limit while it runs then only
        # shrinks future claims, never the rows already ours.
        pool.running += free
        rows: list[ClaimedSubtask] = []
        wait = self.settings.poll_interval
        try:
            providers = self._providers_to_claim(pool)
            # Never cancelled (see run): a claim cut off after its commit would strand rows
            # until the runner is found dead. Rows claimed as a stop arrives are handed back.
            if providers:
                batch = await self.store.claim(
                    pool.name, providers, free, self.executor_id, self.settings.lease
                )
                rows = batch.rows
                for provider, cooldown in batch.cooldowns.items():
                    self._paused_providers[provider] = self.clock() + cooldown
                    wait = min(wait, cooldown)
                if batch.at_limit:
                    wait = min(wait, AT_LIMIT_RETRY)
            if self.stop_requested.is_set():
                for row in rows:
                    self.recorder.record(Outcome(row.id, row.attempts, "release", self.executor_id))
                rows = []
        finally:
            pool.running -= free - len(rows)
        return rows, wait

    def _providers_to_claim(self, pool: Pool) -> list[str]:
        """The pool's providers not paused right now, starting after the last one served."""
        providers = self.routes[pool.name]
        if len(providers) > 1:
            providers.append(providers.pop(0))  # rotate: no provider always goes first
        now = self.clock()
        return [p for p in providers if self._paused_providers.get(p, 0.0) <= now]

    # --- running one subtask -------------------------------------------------

    def _recorded(self, pool: Pool, row: ClaimedSubtask) -> Release:
        """What to do once a finished subtask's outcome is recorded: it is no longer held."""

        def recorded() -> None:
            self._held.pop(row.id, None)
            pool.recorded()
            self.idle_wakeup.notify()

        return recorded

    def _release_leftovers(self) -> None:
        """Hand back the rows no worker started before the work group was cancelled."""
        for name, crew in self.crews.items():
            pool = self.pools[name]
            for row in crew.leftovers():
                pool.finished()
                self.recorder.record(
                    Outcome(row.id, row.attempts, "release", self.executor_id),
                    self._recorded(pool, row),
                )

    async def _run_one(self, pool: Pool, row: ClaimedSubtask, shift: Shift) -> None:
        release = self._recorded(pool, row)
        request = image_request(
            task_id=row.task_id,
            subtask_id=row.id,
            attempt=row.attempts,
            prompt=row.prompt,
            params=row.params,
        )

        async def on_submitted(external_id: str) -> None:
            await self._persist_external_id(row, external_id)

        async def should_stop() -> bool:
            return row.task_id in self._canceled_tasks

        started = self.clock()
        _RUNNING.set(row.id)  # this worker's own context: one subtask at a time
        try:
            try:
                result = await self.work(row, request, on_submitted, should_stop)
            finally:
                # The slot is free for the next claim; the outcome waits to be recorded.
                pool.finished()
        except anyio.get_cancelled_exc_class():
            if shift.timed_out:
                # Past the attempt's deadline: the crew's watchdog cut it off.
                timeout = ProviderTimeout(
                    f"no result within the attempt's {pool.config.timeout:g}s"
                )
                self._on_failure(pool, row, timeout, release, traceback_text=None)
            else:
                # Shutdown past the grace period: back to pending, attempt not counted.
                self.recorder.record(
                    Outcome(row.id, row.attempts, "release", self.executor_id), release
                )
            raise
        except Canceled:
            # The task was canceled while this attempt ran: stop here, nothing failed.
            self.recorder.record(
                Outcome(row.id, row.attempts, "canceled", self.executor_id), release
            )
        except ProviderError as exc:
            self._on_failure(pool, row, exc, release, traceback_text=None)
        except Exception as exc:
            # A bug in a worker or adapter: keep the runner alive, count it as retryable.
            # Logged redacted: the exception's text may quote a request and its key.
            trace = redact(traceback.format_exc(), self.secrets)
            log.error("unexpected error running subtask %d\n%s", row.id, trace)
            self._on_failure(pool, row, exc, release, traceback_text=trace)
        else:
            self._on_success(pool, row, result, self.clock() - started, release)

    async def _persist_external_id(self, row: ClaimedSubtask, external_id: str) -> None:
        """Record an async job's id before polling it, retrying within half a lease."""
        # The job is paid for: keep trying to record its id so a successor resumes it
        # rather than submitting again.
        retrying = tenacity.AsyncRetrying(
            retry=tenacity.retry_if_exception(is_transient_db_error),
            wait=tenacity.wait_exponential(multiplier=0.2, max=5) + tenacity.wait_random(0, 0.2),
            stop=tenacity.stop_after_delay(self.settings.lease / 2),
            reraise=True,
        )
        with anyio.CancelScope(shield=True):
            async for attempt in retrying:
                with attempt:
                    await self.store.set_external_id(
                        row.id, row.attempts, self.executor_id, external_id
                    )

    def _on_success(
        self, pool: Pool, row: ClaimedSubtask, result: WorkResult, elapsed: float, release: Release
    ) -> None:
        pool.window.completed += 1
        pool.window.latencies.append(elapsed)
        self.observe(row.provider, pool.name, None, ratelimit=result.ratelimit)
        self.fleet.on_success(row.provider, elapsed, result.ratelimit)
        pool.record_completion(row, time.time())
        self.metrics.completed(pool.name, row.provider, elapsed)
        outcome = Outcome(
            row.id, row.attempts, "completed", self.executor_id, result=result.to_json()
        )
        self.recorder.record(outcome, release)

    def _on_failure(
        self,
        pool: Pool,
        row: ClaimedSubtask,
        exc: Exception,
        release: Release,
        traceback_text: str | None,
    ) -> None:
        policy = SubtaskRetryPolicy(
            max_retries=row.max_retries,
            base=self.settings.retry_base,
            rate_limit_cap=self.settings.rate_limit_deferrals,
        )
        attempt = Attempt(row.retry_count, row.deferrals, row.max_retries)
        verdict = classify(
            exc,
            attempt,
            policy,
            self.secrets,
            misconfigured_pause=self.settings.misconfigured_pause,
        )
        if verdict.pause_provider:
            self._pause_provider(row.provider, verdict.error)
        self.observe(row.provider, pool.name, exc)
        if verdict.counts_as_failure:
            pool.window.failures += 1
        self.metrics.failures.labels(pool.name, row.provider, verdict.kind).inc()
        outcome = Outcome(
            row.id,
            row.attempts,
            verdict.kind,
            self.executor_id,
            error=verdict.error,
            delay=verdict.delay,
            reset_job=verdict.reset_job,
        )
        self.recorder.record(outcome, release)
        trace = redact(traceback_text, self.secrets) if traceback_text else None
        self.recorder.record_error(
            ErrorRecord(
                verdict.error_type, verdict.fingerprint, trace, pool.name, row.provider, row.id
            )
        )
        log.debug(
            "subtask %d attempt %d: %s -> %s", row.id, row.attempts, verdict.error, verdict.kind
        )

    def _paused(self) -> list[str]:
        """Providers whose subtasks claims skip right now."""
        now = self.clock()
        return sorted(name for name, until in self._paused_providers.items() if until > now)

    def _pause_provider(self, provider: str, error: str) -> None:
        """Stop using a provider the operator must fix; say so loudly, once per pause."""
        if provider in self._paused():
            return
        self._paused_providers[provider] = self.clock() + self.settings.misconfigured_pause
        log.error(
            "provider %s refused us (%s): its subtasks stay pending; paused %.0fs —"
            " fix [providers.%s] (credentials, model)",
            provider,
            error,
            self.settings.misconfigured_pause,
            provider,
        )

    def observe_retry(self, provider: str, pool_name: str, exc: BaseException) -> None:
        """An error an in-attempt retry absorbed: a signal like any other, and a recovered error."""
        record = recovered_error(exc, self.secrets, pool_name, provider, _RUNNING.get())
        self.recorder.record_error(record)
        self.observe(provider, pool_name, exc)

    def observe(
        self,
        provider: str,
        pool_name: str,
        event: BaseException | Signal | None,
        retry_after: float | None = None,
        sent_at: float | None = None,
        *,
        ratelimit: RateLimitInfo | None = None,
    ) -> None:
        """The one door for what a provider said: an error or signal (None: a success).

        Called once per occurrence (absorbed by an in-attempt retry or ending the attempt), it
        counts the signal, keeps the tightest request budget and hands pressure on.
        """
        if isinstance(event, BaseException):
            if isinstance(event, RateLimited) and retry_after is None:
                retry_after = event.retry_after
            if isinstance(event, ProviderError):
                sent_at = event.sent_at if sent_at is None else sent_at
                ratelimit = event.ratelimit if ratelimit is None else ratelimit
            signal = signal_of(event)
        else:
            signal = event
        counts = self.signals.setdefault(provider, SignalCounts())
        counts.note(ratelimit)
        if signal is None:
            return
        counts.count(signal)
        if signal == "server_error":
            self.fleet.on_signal(provider, signal, ratelimit=ratelimit)
        else:
            self._on_pressure_signal(provider, pool_name, signal, retry_after, sent_at)

    def _on_pressure_signal(
        self,
        provider: str,
        pool_name: str,
        signal: PressureKind,
        retry_after: float | None,
        sent_at: float | None,
    ) -> None:
        """Pressure from `provider`: the pool's window counts it, the fleet's controller acts."""
        pool = self.pools.get(pool_name)
        if pool is not None:
            if signal == "timeout":
                pool.window.timeouts += 1
            else:
                pool.window.rate_limited += 1
        self.fleet.on_signal(provider, signal, retry_after, sent_at)

    def adopt(self, pool: Pool, decision: Decision) -> None:
        """Apply a scaling decision to a pool, counting and logging a change."""
        before = pool.limit
        if pool.apply(decision, time.time()):
            direction = "up" if decision.limit > before else "down"
            self.metrics.scaling.labels(pool.name, direction).inc()
            log.info(
                "pool %s: limit %d -> %d (%s)", pool.name, before, decision.limit, decision.reason
            )

    # --- recording -----------------------------------------------------------

    @property
    def busy(self) -> bool:
        """Work in flight or not yet recorded."""
        return any(p.running for p in self.pools.values()) or self.recorder.busy

    # --- what the periodic duties (runner/loop/duties.py) use ------------------------

    def snapshot(self) -> dict[str, dict[str, object]]:
        """Every pool's state, encoded for the executors row."""
        now = self.clock()
        return {name: pool.snapshot(now) for name, pool in self.pools.items()}

    @property
    def held_ids(self) -> list[int]:
        """Subtasks claimed and not yet recorded, ascending."""
        return sorted(self._held)

    @property
    def held_task_ids(self) -> list[int]:
        """Their tasks, ascending."""
        return sorted({row.task_id for row in self._held.values()})

    def set_canceled_tasks(self, task_ids: set[int]) -> None:
        """Tell in-flight work which tasks were canceled."""
        self._canceled_tasks = task_ids

    def observe_pools(self) -> None:
        """Refresh the pool gauges."""
        self.metrics.observe_pools(self.snapshot())

    def now(self) -> float:
        """The runner's monotonic clock."""
        return self.clock()
