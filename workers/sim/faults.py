"""Seeded fault injection: each request draws at most one fault."""

from __future__ import annotations

import enum
import random

from workers.sim.config import SimConfig


class Fault(enum.Enum):
    """The kinds of misbehaviour the sim can inject."""

    ERROR = "error"
    RATE_LIMIT = "rate_limit"
    HANG = "hang"
    MALFORMED = "malformed"


class FaultInjector:
    """Draws faults from random.Random(seed) so a run can be replayed."""

    def __init__(self, config: SimConfig) -> None:
        self._rng = random.Random(config.seed)
        self._job_rng = random.Random(f"jobs-{config.seed}")
        self.set_rates(config)

    def set_rates(self, config: SimConfig) -> None:
        """Take the rates from `config` (live changes keep the random streams going)."""
        self._thresholds = [
            (Fault.ERROR, config.error_rate),
            (Fault.RATE_LIMIT, config.rate_limit_rate),
            (Fault.HANG, config.hang_rate),
            (Fault.MALFORMED, config.malformed_rate),
        ]
        self.active = any(rate > 0 for _, rate in self._thresholds)
        self._fail_rate = config.lumina_fail_rate
        self._slow_rate = config.lumina_slow_rate

    def draw(self) -> Fault | None:
        """Pick the fault for one request, or None."""
        if not self.active:
            return None
        roll = self._rng.random()
        for fault, rate in self._thresholds:
            if roll < rate:
                return fault
            roll -= rate
        return None

    def malformed_variant(self, count: int) -> int:
        """Pick which of `count` broken bodies to send."""
        return self._rng.randrange(count)

    def job_fails(self) -> bool:
        """Whether a lumina job ends failed."""
        return self._fail_rate > 0 and self._job_rng.random() < self._fail_rate

    def job_is_slow(self) -> bool:
        """Whether a lumina job runs slowly."""
        return self._slow_rate > 0 and self._job_rng.random() < self._slow_rate
