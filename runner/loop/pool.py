"""One concurrency pool's live state: its limit, scaling policy, counters and wake-ups."""

from __future__ import annotations

import asyncio
import math
import time
from collections import deque
from dataclasses import dataclass, field
from typing import Any

from db.records import ClaimedSubtask
from db.snapshots import LimitChange, PoolSnapshot
from runner.config import PoolConfig
from runner.loop.rollup import CompletionRollup
from runner.policy.scaling import Decision, PoolSignals, ScalingPolicy, make_policy

# Finished subtasks waiting to be recorded may add this many pool limits' worth of rows held:
# the next claim overlaps the flush, and a database that falls behind still stops the claims.
UNRECORDED_LIMITS = 1
HISTORY = 20  # scaling decisions kept for the status view
LATENCY_SAMPLE = 1024  # latest latencies kept per window: p50 needs no more, memory stays flat


class Wakeup:
    """A re-armable wake-up: `notify()` from anywhere, `wait(timeout)` in one loop.

    On asyncio's own event and timer (asyncpg binds the runner to asyncio): an idle runner's
    dispatch runs through here, and anyio's cancel scope and fresh event per wait cost it
    tens of µs. A cancellation still ends the wait as anywhere else.
    """

    def __init__(self) -> None:
        self._event = asyncio.Event()

    def notify(self) -> None:
        """Wake the waiter (or make its next wait return at once)."""
        self._event.set()

    async def wait(self, timeout: float) -> None:
        """Return on notify or after `timeout` seconds, then re-arm."""
        if not self._event.is_set():
            timer = asyncio.get_running_loop().call_later(timeout, self._event.set)
            try:
                await self._event.wait()
            finally:
                timer.cancel()
        self._event.clear()


@dataclass
class Window:
    """What the pool saw since the last scaling tick."""

    completed: int = 0
    failures: int = 0
    rate_limited: int = 0
    timeouts: int = 0
    latencies: deque[float] = field(default_factory=lambda: deque(maxlen=LATENCY_SAMPLE))

    def signals(self, pending: int, running: int) -> PoolSignals:
        """The policy's input for this window."""
        ordered = sorted(self.latencies)
        p50 = ordered[len(ordered) // 2] if ordered else None
        mean = math.fsum(ordered) / len(ordered) if ordered else None
        return PoolSignals(
            pending=pending,
            running=running,
            completed=self.completed,
            failures=self.failures,
            rate_limited=self.rate_limited,
            timeouts=self.timeouts,
            latency_p50=p50,
            latency_mean=mean,
        )


class Pool:
    """A pool: `limit` (the policy sets it) and `running`, the slots taken.

    Plain counts, not a capacity limiter: nothing waits on a slot (the claim loop only reads
    how many are free), and a token per slot cost an idle runner ~40 µs of dispatch latency.
    A subtask's slot is freed when its attempt ends; until its outcome is recorded it is
    counted in `unrecorded`, which bounds how far claims may run ahead of the database.
    """

    def __init__(self, name: str, config: PoolConfig, now: float) -> None:
        self.name = name
        self.config = config
        self.policy: ScalingPolicy = make_policy(config.policy, config.scaling(), now=now)
        self.limit = self.policy.limit
        self.running = 0  # slots reserved for a claim or running an attempt
        self.wakeup = Wakeup()
        self.pending = 0
        self.unrecorded = 0
        self.window = Window()
        self.history: deque[LimitChange] = deque(maxlen=HISTORY)
        # Wall clock, not `now` (monotonic): the status view lines runners' buckets up by it.
        self.completions = CompletionRollup(since=time.time())

    @property
    def free(self) -> int:
        """Slots to fill now: free ones, while finished work waiting to be recorded allows."""
        limit, running = self.limit, self.running
        held = running + self.unrecorded
        # Never negative after a cut below the running count.
        return max(0, min(limit - running, (1 + UNRECORDED_LIMITS) * limit - held))

    def finished(self) -> None:
        """An attempt ended: free its slot; its outcome now waits to be recorded."""
        self.running -= 1
        self.unrecorded += 1
        self.wakeup.notify()

    def recorded(self) -> None:
        """A finished subtask's outcome is in the database."""
        self.unrecorded -= 1
        self.wakeup.notify()

    def apply(self, decision: Decision, wall_time: float) -> bool:
        """Adopt a policy decision; True if the limit changed."""
        if decision.paused_until is not None:
            self.wakeup.notify()
        if decision.reason is None:
            return False
        previous = self.limit
        self.limit = decision.limit
        self.history.append(LimitChange(wall_time, previous, decision.limit, decision.reason))
        self.wakeup.notify()
        return True

    def state(self, now: float) -> PoolSnapshot:
        """The typed state for the executor heartbeat and the status view."""
        paused = self.policy.paused_until
        return PoolSnapshot(
            limit=self.limit,
            max=self.config.max,
            running=self.running,
            pending=self.pending,
            policy=self.policy.name,
            paused_for=round(paused - now, 1) if paused and paused > now else 0.0,
            history=tuple(self.history),
        )

    def snapshot(self, now: float, wall: float | None = None) -> dict[str, Any]:
        """`state(now)` and the completions rollup, encoded for the heartbeat's jsonb."""
        data = self.state(now).to_json()
        rollup = self.completions.snapshot(time.time() if wall is None else wall)
        data["completions"] = rollup.to_json()
        return data

    def record_completion(self, row: ClaimedSubtask, wall: float) -> None:
        """Count a completed subtask in the throughput rollup (at wall-clock time `wall`)."""
        batch = row.params.get("batch_size", 1)
        images = batch if isinstance(batch, int) and batch > 0 else 1
        self.completions.add(row.task_id, images, wall)
