"""A pool's long-lived worker tasks: each claimed subtask goes to an idle worker.

Starting a task per subtask cost more than the rest of the runner's work on it: an anyio
task is a TaskHandle, an Event and a cancel scope, ~27 µs against ~5 µs for a hand-off
through a queue. Workers are started on demand (one whenever a subtask finds none idle), so
their number is the pool's peak concurrency, never more than its `max`, and they live as
long as the work group.

An attempt's deadline, likewise, is not a timer per attempt (a cancel scope with a deadline
costs ~8 µs to enter and leave): each worker runs inside one cancel scope, notes when its
attempt is due, and one watchdog per crew cancels the scope of an attempt past it.

The queue is asyncio's: asyncpg already binds the runner to asyncio, and anyio's memory
object streams cost ~22 µs per item here.
"""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Generic, TypeVar

import anyio
from anyio.abc import TaskGroup

Item = TypeVar("Item")

WATCH_RESOLUTION = 1.0  # seconds: the watchdog wakes at least this rarely (or timeout/20)


@dataclass
class Shift:
    """One worker's current attempt: when it is due, and whether the watchdog cut it off."""

    scope: anyio.CancelScope | None = None
    deadline: float = math.inf
    timed_out: bool = False


class Crew(Generic[Item]):
    """Runs `run(item, shift)` for every handed item, on as many workers as are busy at once.

    With a `timeout`, an attempt still running that many seconds after it started is
    cancelled: `run` sees the cancellation with `shift.timed_out` set, records it, and lets
    it propagate (the worker's own scope absorbs it and the worker goes on).
    """

    def __init__(
        self,
        run: Callable[[Item, Shift], Awaitable[None]],
        timeout: float | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._run = run
        self.timeout = timeout
        self._clock = clock
        self._queue: asyncio.Queue[Item] = asyncio.Queue()
        # Workers waiting for an item, or about to (just started, or just finished one).
        self._waiting = 0
        self._shifts: list[Shift] = []

    @property
    def workers(self) -> int:
        """Workers started so far."""
        return len(self._shifts)

    def hand(self, item: Item, group: TaskGroup) -> None:
        """Queue `item`; start a worker in `group` if every worker is busy."""
        self._queue.put_nowait(item)
        if self._queue.qsize() > self._waiting:
            self._waiting += 1
            shift = Shift()
            self._shifts.append(shift)
            group.start_soon(self._work, shift)

    def leftovers(self) -> list[Item]:
        """Take the items no worker picked up (the work group was cancelled first)."""
        items = []
        while not self._queue.empty():
            items.append(self._queue.get_nowait())
        return items

    async def watch(self) -> None:
        """Cancel attempts past their deadline (runs until cancelled; needs a timeout)."""
        assert self.timeout is not None
        resolution = min(WATCH_RESOLUTION, self.timeout / 20)
        while True:
            now = self._clock()
            earliest = now + self.timeout
            for shift in self._shifts:
                if shift.deadline <= now and not shift.timed_out and shift.scope is not None:
                    shift.timed_out = True
                    shift.scope.cancel()
                earliest = min(earliest, shift.deadline)
            await anyio.sleep(max(earliest - now, resolution))

    async def _work(self, shift: Shift) -> None:
        while True:
            with anyio.CancelScope() as shift.scope:
                await self._serve(shift)
            shift.timed_out = False  # the watchdog cut an attempt off; `run` recorded it

    async def _serve(self, shift: Shift) -> None:
        while True:
            item = await self._queue.get()
            self._waiting -= 1
            if self.timeout is not None:
                shift.deadline = self._clock() + self.timeout
            try:
                await self._run(item, shift)
            finally:
                shift.deadline = math.inf
                self._waiting += 1
