"""A requests-per-minute token bucket and the OpenAI-style headers that describe it.

Pure: the caller passes the time in (a monotonic clock), so tests step it exactly.
"""

from __future__ import annotations

import math

from workers.headers import format_duration


class TokenBucket:
    """`rpm` requests a minute, refilled continuously, with a minute's worth of burst.

    A full minute of burst is what OpenAI's headers describe: `x-ratelimit-remaining-requests`
    counts down from the limit and `x-ratelimit-reset-requests` is the time until it is full.
    """

    def __init__(self, rpm: int, now: float) -> None:
        if rpm < 1:
            raise ValueError(f"rpm must be >= 1, got {rpm}")
        self.rpm = rpm
        self._tokens = float(rpm)
        self._at = now

    @property
    def _rate(self) -> float:
        return self.rpm / 60.0  # tokens per second

    def _refill(self, now: float) -> None:
        # A clock that steps back (never with a monotonic one) must not mint or burn tokens.
        elapsed = max(0.0, now - self._at)
        self._tokens = min(float(self.rpm), self._tokens + elapsed * self._rate)
        self._at = max(self._at, now)

    def take(self, now: float) -> int | None:
        """Spend one token; None if there was one, else whole seconds until one is due (>= 1)."""
        self._refill(now)
        if self._tokens >= 1.0:
            self._tokens -= 1.0
            return None
        return max(1, math.ceil((1.0 - self._tokens) / self._rate))

    def set_rpm(self, rpm: int, now: float) -> None:
        """Change the rate live; tokens already saved are kept, up to the new burst."""
        if rpm < 1:
            raise ValueError(f"rpm must be >= 1, got {rpm}")
        self._refill(now)
        self.rpm = rpm
        self._tokens = min(self._tokens, float(rpm))

    def remaining(self, now: float) -> int:
        """Whole requests that could be sent right now."""
        self._refill(now)
        return math.floor(self._tokens)

    def reset_seconds(self, now: float) -> float:
        """Seconds until the bucket is full again."""
        self._refill(now)
        return (self.rpm - self._tokens) / self._rate

    def headers(self, now: float) -> dict[str, str]:
        """`x-ratelimit-{limit,remaining,reset}-requests` as OpenAI sends them."""
        return {
            "x-ratelimit-limit-requests": str(self.rpm),
            "x-ratelimit-remaining-requests": str(self.remaining(now)),
            "x-ratelimit-reset-requests": format_duration(self.reset_seconds(now)),
        }
