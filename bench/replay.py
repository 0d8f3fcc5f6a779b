"""Replays runners' database traffic at a set completion rate, without the runners' Python.

    IMGRUN_DATABASE_URL=... .venv/bin/python -m bench.replay [--rate 5000] [--runners 2]
                                                         [--hold 200] [--seconds 120]

Each simulated runner does to PostgreSQL what an `imgrun run` process completing `null`
subtasks of the standard pool does, through the same store calls (db/store.py `PgStore`):
registers its executors row (`register_executor`, a fresh holder) and the provider's
fleet-wide row (`Fleet.register`); every TICK records the completions its pacer owes
(`apply_outcomes`: fenced by holder and attempt, task counters in the same statement), the
oldest held rows first, and once a quarter of `--hold` is free (the executor's `refill_at`
rule) claims more (`imgrun_claim`, its lease) — again within the tick if it owes more;
every second heartbeats with its pool snapshot and a completion rollup kept by the real
`CompletionRollup`, asks which held tasks were canceled, runs a reaper pass and reports to
the fleet (`Fleet.report_and_decide`); every 10 s counts pending rows (the scaler tick).
On SIGTERM/SIGINT or after `--seconds` it releases what it holds and marks itself stopped.
Not replayed: the runners' own work in Python (workers, images, policies) — the point is to
load the database, not this process's two cores.

Prints one line at the end: completions made, fenced out (should be 0), and what the pacer
owed but was not made (a tick later than one burst; the queue had no row left to claim).
"""

from __future__ import annotations

import argparse
import os
import secrets
import signal
import time
from collections import deque
from collections.abc import Sequence

import anyio

from bench.replay_pacing import Pacer, shares
from db.engine import open_engine
from db.records import ClaimedSubtask, Outcome
from db.snapshots import PoolSnapshot
from db.store import PgStore
from runner.config import Config, RunnerSettings
from runner.loop.duties import lease_decider, reap_once, reap_pass
from runner.loop.executor import refill_at
from runner.loop.fleet import Fleet
from runner.loop.rollup import CompletionRollup
from workers.types import WorkResult

POOL = "standard"
PROVIDER = "null"
SCALER_TICK = 10.0  # seconds: the pools' tick_interval default
# What the null provider's completion stores as the subtask's result.
RESULT = WorkResult(images=[], provider_ms=0.0).to_json()


class ReplayRunner:
    """One simulated runner: its holder, its held rows, its rollup and its fleet counts."""

    def __init__(self, store: PgStore, name: str, rate: float, hold: int) -> None:
        self.store = store
        self.name = name
        self.holder = f"{name}:{secrets.token_hex(4)}"
        self.settings = RunnerSettings()
        self.pacer = Pacer(rate)
        self.hold = hold
        self.held: deque[tuple[ClaimedSubtask, float]] = deque()  # (row, monotonic claim time)
        self.rollup = CompletionRollup(since=time.time())
        config = Config()
        self.fleet = Fleet(store, name, {PROVIDER: (config.providers[PROVIDER].control(), [POOL])})
        self.pending = 0
        self.completed = 0
        self.fenced = 0
        self.unheld = 0  # owed when the queue had no more rows to claim

    async def register(self) -> None:
        """The executors row under a new holder, and the provider's fleet-wide row."""
        identity = {"group": "replay", "host": "replay", "pid": os.getpid(), "version": "replay"}
        decide = lease_decider(self.settings, [])
        await self.store.register_executor(self.name, self.holder, identity, decide)
        await self.fleet.register(time.time())

    def snapshot(self) -> dict[str, dict[str, object]]:
        """The heartbeat's pools: the pinned pool's state and its completion rollup."""
        state = PoolSnapshot(
            limit=self.hold,
            max=self.hold,
            running=len(self.held),
            pending=self.pending,
            policy="fixed",
        )
        data: dict[str, object] = state.to_json()
        data["completions"] = self.rollup.snapshot(time.time()).to_json()
        return {POOL: data}

    async def tick(self, elapsed: float) -> None:
        """Record the completions owed now, refilling once a quarter of `hold` is free.

        A tick owing more than is held (it ran late) completes, refills and goes on, as a
        runner works through what piled up; only rows the queue no longer has are not made.
        """
        owed = self.pacer.take(elapsed)
        while True:
            n = min(owed, len(self.held))
            if n:
                await self._complete([self.held.popleft() for _ in range(n)])
                owed -= n
            if not await self._refill() or not owed:
                break
        self.unheld += owed

    async def _refill(self) -> int:
        """Claim up to the free slots once a quarter of `hold` is free; rows claimed."""
        free = self.hold - len(self.held)
        if free < refill_at(self.hold, len(self.held)):
            return 0
        batch = await self.store.claim(POOL, [PROVIDER], free, self.holder, self.settings.lease)
        now = time.monotonic()
        self.held.extend((row, now) for row in batch.rows)
        return len(batch.rows)

    async def _complete(self, done: Sequence[tuple[ClaimedSubtask, float]]) -> None:
        outcomes = [
            Outcome(row.id, row.attempts, "completed", self.holder, result=RESULT)
            for row, _ in done
        ]
        stands = await self.store.apply_outcomes(outcomes)
        self.fenced += len(done) - len(stands)
        self.completed += len(stands)
        wall, now = time.time(), time.monotonic()
        for row, claimed in done:
            # As the executor's _on_success: the rollup and the fleet count each completion.
            self.rollup.add(row.task_id, 1, wall)
            self.fleet.on_success(PROVIDER, now - claimed)

    async def drive(self, until: float) -> None:
        """Tick at the pacer's boundaries until `until` seconds have passed."""
        started = time.monotonic()
        while (elapsed := time.monotonic() - started) < until:
            await self.tick(elapsed)
            wait = self.pacer.next_tick(elapsed) - (time.monotonic() - started)
            await anyio.sleep(max(0.0, wait))

    async def duties(self) -> None:
        """Heartbeat, cancel check, reaper pass and fleet report each second; scaler count."""
        started = backstop_at = next_scale = time.monotonic()
        while True:
            now = time.monotonic()
            if now >= next_scale:
                counts = await self.store.pending_counts([POOL])
                self.pending, next_scale = counts.get(POOL, 0), now + SCALER_TICK
            await self.store.heartbeat(self.holder, self.snapshot())
            await self.store.canceled_among(sorted({row.task_id for row, _ in self.held}))
            plan = reap_pass(now, started, backstop_at, self.settings)
            backstop_at = plan.backstop_at
            await reap_once(
                self.store, self.settings, dead_runners=plan.dead_runners, backstop=plan.backstop
            )
            await self.fleet.report_and_decide()
            await anyio.sleep(self.settings.heartbeat_interval)

    async def stop(self) -> None:
        """Release what is held (the attempt not counted) and record a clean stop."""
        outcomes = [Outcome(row.id, row.attempts, "release", self.holder) for row, _ in self.held]
        self.held.clear()
        await self.store.apply_outcomes(outcomes)
        await self.store.mark_executor_stopped(self.holder, self.snapshot())


async def run(url: str, rate: float, runners: int, hold: int, seconds: float) -> None:
    """Drive `runners` simulated runners at `rate` in total until a signal or `seconds`."""
    async with open_engine(url, upgrade=False) as engine:
        store = PgStore(engine)
        tag = f"replay-{os.getpid()}"
        fleet = [
            ReplayRunner(store, f"{tag}-{n}", share, hold)
            for n, share in enumerate(shares(rate, runners))
        ]
        for runner in fleet:
            await runner.register()
        try:
            async with anyio.create_task_group() as group:
                group.start_soon(_stop_on_signal, group.cancel_scope)
                for runner in fleet:
                    group.start_soon(runner.duties)
                await _drive_all(fleet, seconds)
                group.cancel_scope.cancel()
        finally:
            with anyio.CancelScope(shield=True):
                for runner in fleet:
                    await runner.stop()
        made = sum(r.completed for r in fleet)
        fenced = sum(r.fenced for r in fleet)
        dropped = sum(r.pacer.dropped for r in fleet)
        unheld = sum(r.unheld for r in fleet)
        print(
            f"replay: {made:,} completions, {fenced:,} fenced out; owed but not made:"
            f" {dropped:,} (a tick later than a burst), {unheld:,} (no row left to claim)"
        )


async def _drive_all(fleet: Sequence[ReplayRunner], seconds: float) -> None:
    async with anyio.create_task_group() as group:
        for runner in fleet:
            group.start_soon(runner.drive, seconds)


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for _ in received:
            scope.cancel()
            return


def main() -> None:
    """Parse the flags and drive the replay."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--rate", type=float, default=5_000.0, help="completions/s in total")
    parser.add_argument("--runners", type=int, default=2, help="simulated runners")
    parser.add_argument("--hold", type=int, default=200, help="rows each runner holds")
    parser.add_argument("--seconds", type=float, default=120.0, help="stop after (bound)")
    args = parser.parse_args()
    if not (0 < args.rate <= 100_000 and 1 <= args.runners <= 16 and 1 <= args.hold <= 5_000):
        parser.error("--rate in (0, 100000], --runners in [1, 16], --hold in [1, 5000]")
    if not 0 < args.seconds <= 3_600:
        parser.error("--seconds in (0, 3600]")
    url = os.environ.get("IMGRUN_DATABASE_URL")
    if not url:
        parser.error("IMGRUN_DATABASE_URL is not set (the database to load)")
    anyio.run(run, url, args.rate, args.runners, args.hold, args.seconds)


if __name__ == "__main__":
    main()
