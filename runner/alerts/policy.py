"""Pure rules of alert delivery: retry schedule, giving up, and when a provider is degraded."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass


def retry_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds before the next try after `attempts` failed ones: base × 2^(attempts-1), capped."""
    exponent = min(max(attempts - 1, 0), 60)  # 2^60 s is past any cap; avoids float overflow
    return float(min(cap, base * 2**exponent))


def next_state(age: float, retry_in: float, max_age: float) -> str:
    """'pending' while a retry would still start within `max_age` of the event, else 'failed'."""
    return "pending" if age + retry_in <= max_age else "failed"


def target_id(url: str) -> str:
    """A webhook's identity in the outbox: a hash, because a hook URL can itself be a secret."""
    return hashlib.sha256(url.encode()).hexdigest()[:16]


@dataclass(frozen=True)
class Pressure:
    """One provider's 429/5xx failures and completions over the watchdog's window."""

    provider: str
    errors: int
    completed: int

    @property
    def share(self) -> float:
        """Failures ÷ (failures + completions)."""
        total = self.errors + self.completed
        return self.errors / total if total else 0.0


def is_degraded(pressure: Pressure, *, share: float, min_events: int) -> bool:
    """Enough 429/5xx to mean something, and at least `share` of the outcomes."""
    return pressure.errors >= min_events and pressure.share >= share
