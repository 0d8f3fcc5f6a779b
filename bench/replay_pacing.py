"""The replay driver's per-tick arithmetic (pure): how many completions a tick owes.

The driver (bench/replay.py) wakes every `tick` seconds and completes what the target rate
owes since its start. A late tick catches up at most `burst` ticks' worth; time it could not
use beyond that is dropped, never repaid later, so a driver that falls behind shows it in
the achieved rate instead of bursting to hide it.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

TICK = 0.02  # seconds between the driver's wake-ups
# Ticks' worth a late tick may catch up: 200 ms, about what a runner's outcome buffer absorbs
# when its process is descheduled for a moment on a busy machine.
BURST = 10

# A product like 5000 × 0.06 lands a hair under the whole number it means.
_EPSILON = 1e-9


@dataclass
class Pacer:
    """Completions owed per tick at `rate` per second (state: what was offered so far)."""

    rate: float
    tick: float = TICK
    burst: int = BURST
    offered: int = 0  # completions owed up to now: those taken plus those dropped
    dropped: int = 0  # owed, but beyond one burst: never made up

    @property
    def cap(self) -> int:
        """The most one tick may take: `burst` ticks' worth (at least one)."""
        return max(1, math.ceil(self.rate * self.tick * self.burst - _EPSILON))

    def take(self, elapsed: float) -> int:
        """Completions to make now, `elapsed` seconds after the start."""
        owed = math.floor(self.rate * max(0.0, elapsed) + _EPSILON) - self.offered
        if owed <= 0:
            return 0
        n = min(owed, self.cap)
        self.offered += owed
        self.dropped += owed - n
        return n

    def next_tick(self, elapsed: float) -> float:
        """The first tick boundary strictly after `elapsed` (seconds since the start)."""
        return (math.floor(elapsed / self.tick + _EPSILON) + 1) * self.tick


def shares(rate: float, runners: int) -> list[float]:
    """Split a total rate evenly over `runners` simulated runners."""
    if runners < 1:
        raise ValueError("runners must be at least 1")
    return [rate / runners] * runners
