"""A GPU-server-like capacity model: N service slots, a bounded wait queue, lognormal service."""

from __future__ import annotations

import math
import random
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import anyio


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
        self.queue_limit = queue_limit
        self.service_ms = service_ms
        self._sigma = sigma
        # A private stream so fault draws and service draws don't shift each other.
        self._rng = random.Random(f"service-{seed}")
        # Resizable: raising total_tokens wakes waiters; lowering it lets running jobs finish
        # and holds newcomers until enough of them have.
        self._slots = anyio.CapacityLimiter(capacity)
        # Jobs admitted and not finished, queued or in service. Admission counts these rather
        # than busy + waiting: a job granted a slot is briefly both while its task resumes.
        self.admitted = 0

    @property
    def capacity(self) -> int:
        """Service slots now."""
        return int(self._slots.total_tokens)

    @property
    def busy(self) -> int:
        """Jobs holding a slot (may exceed capacity right after it was lowered)."""
        return self._slots.borrowed_tokens

    @property
    def waiting(self) -> int:
        """Admitted jobs still waiting for a slot."""
        return max(0, self.admitted - self.busy)

    def reconfigure(self, *, capacity: int, queue_limit: int, service_ms: float) -> None:
        """Change slots, queue size and mean service time live."""
        if capacity < 1:
            raise ValueError("capacity must be at least 1")
        self._slots.total_tokens = capacity
        self.queue_limit = queue_limit
        self.service_ms = service_ms

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
        drain_s = self.admitted * self.service_ms / 1000 / self.capacity
        return max(1, math.ceil(drain_s))

    def enter_queue(self) -> Ticket:
        """Take a place in the queue, or raise QueueFull when a newcomer has nowhere to wait."""
        if self.admitted >= self.capacity + self.queue_limit:
            raise QueueFull(self.retry_after())
        self.admitted += 1
        return Ticket(self)

    @asynccontextmanager
    async def slot(self, ticket: Ticket | None = None) -> AsyncIterator[None]:
        """Wait for a slot (with a ticket from enter_queue, or queueing now), hold it, free it."""
        ticket = ticket or self.enter_queue()
        try:
            # The ticket is the borrower: one job, one token, whichever task runs it.
            await self._slots.acquire_on_behalf_of(ticket)
            try:
                yield
            finally:
                self._slots.release_on_behalf_of(ticket)
        finally:
            ticket.leave_queue()


class Ticket:
    """A job's admission; giving it back twice is harmless (a job may never start)."""

    def __init__(self, model: CapacityModel) -> None:
        self._model: CapacityModel | None = model

    def leave_queue(self) -> None:
        """Give the admission back (once): after service, or when the job never ran."""
        if self._model is not None:
            self._model.admitted -= 1
            self._model = None
