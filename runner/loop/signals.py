"""What one provider's answers told this runner since the controller last read them.

The executor counts every 429, 503, timeout and other 5xx here exactly once — whether an
in-attempt retry absorbed it or it ended the attempt — and keeps the tightest request budget
(x-ratelimit-*) any response stated. The provider controller reads and resets it each window.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

from runner.policy.classify import Signal
from workers.budget import lowest
from workers.headers import RateLimitInfo

_FIELDS: dict[Signal, str] = {
    "rate_limited": "rate_limited",
    "unavailable": "unavailable",
    "timeout": "timeouts",
    "server_error": "server_errors",
}


@dataclass
class SignalCounts:
    """Counts of one provider's signals and its tightest stated budget, since the last take."""

    rate_limited: int = 0  # 429s
    unavailable: int = 0  # 503s
    timeouts: int = 0  # connect and request timeouts, attempt deadlines
    server_errors: int = 0  # other 5xx (counted, not pressure)
    ratelimit: RateLimitInfo | None = None  # smallest x-ratelimit-remaining-requests seen

    def count(self, signal: Signal) -> None:
        """One more occurrence of `signal`."""
        field = _FIELDS[signal]
        setattr(self, field, getattr(self, field) + 1)

    def note(self, info: RateLimitInfo | None) -> None:
        """Keep a response's budget if it is the tightest seen."""
        self.ratelimit = lowest(self.ratelimit, info)

    @property
    def ratelimit_remaining(self) -> int | None:
        """The smallest x-ratelimit-remaining-requests seen (WindowStats' name)."""
        return self.ratelimit.remaining if self.ratelimit else None

    @property
    def ratelimit_limit(self) -> int | None:
        """x-ratelimit-limit-requests alongside it."""
        return self.ratelimit.limit if self.ratelimit else None

    @property
    def ratelimit_reset(self) -> float | None:
        """Its x-ratelimit-reset-requests, seconds."""
        return self.ratelimit.reset if self.ratelimit else None

    def take(self) -> SignalCounts:
        """A copy of the counts so far, and start again from zero (one window's worth)."""
        taken = replace(self)
        self.rate_limited = self.unavailable = self.timeouts = self.server_errors = 0
        self.ratelimit = None
        return taken
