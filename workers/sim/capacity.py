"""A GPU-server-like capacity model: N service slots, a bounded wait queue, lognormal service."""

from __future__ import annotations

import asyncio
import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager


class QueueFull(Exception):
    """No free slot and the wait queue is at its limit."""

    def __init__(self, retry_after: int) -> None:
        super().__init__(f"queue full, retry after {retry_after}s")
        self.retry_after = retry_after


class CapacityModel:
    """Admits work into `capacity` slots; at most `queue_limit` callers may wait for one."""

    def __init__(
        self, *, capacity: int, queue_limit: int, service_ms: float, sigma: float, seed: int
    ) -> None:
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self.capacity = capacity
        self.queue_limit = queue_limit
        self.service_ms = service_ms
        self._sigma = sigma
        # A private stream so fault draws and service draws don't shift each other.
        self._rng = random.Random(f"service-{seed}")
        self._slots = asyncio.Semaphore(capacity)
        self.waiting = 0
        self.busy = 0

    def service_seconds(self, images: int, factor: float = 1.0) -> float:
        """Draw the service time of `images` images (lognormal with mean service_ms each)."""
        if self.service_ms <= 0:
            return 0.0
        # mu chosen so the lognormal's mean is service_ms.
        mu = math.log(self.service_ms) - self._sigma**2 / 2
        total_ms = sum(self._rng.lognormvariate(mu, self._sigma) for _ in range(images))
        return total_ms * factor / 1000

    def retry_after(self) -> int:
        """Whole seconds until the queue has likely drained by one slot's worth (at least 1)."""
        drain_s = (self.waiting + self.busy) * self.service_ms / 1000 / self.capacity
        return max(1, math.ceil(drain_s))

    def enter_queue(self) -> Ticket:
        """Take a place in the queue, or raise QueueFull when a newcomer has nowhere to wait."""
        if self.busy + self.waiting >= self.capacity + self.queue_limit:
            raise QueueFull(self.retry_after())
        self.waiting += 1
        return Ticket(self)

    @asynccontextmanager
    async def slot(self, ticket: Ticket | None = None) -> AsyncIterator[None]:
        """Wait for a slot (with a ticket from enter_queue, or queueing now), hold it, free it."""
        ticket = ticket or self.enter_queue()
        try:
            await self._slots.acquire()
        finally:
            ticket.leave_queue()
        self.busy += 1
        try:
            yield
        finally:
            self.busy -= 1
            self._slots.release()


class Ticket:
    """A place in the wait queue; leaving it twice is harmless (a job may never start)."""

    def __init__(self, model: CapacityModel) -> None:
        self._model: CapacityModel | None = model

    def leave_queue(self) -> None:
        """Give the place back (once)."""
        if self._model is not None:
            self._model.waiting -= 1
            self._model = None
