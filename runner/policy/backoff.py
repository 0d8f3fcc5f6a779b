"""What to do with a failed attempt: retry later, defer for backpressure, or fail. Pure."""

from __future__ import annotations

import math
import random
from dataclasses import dataclass
from typing import Literal

RetryAction = Literal["retry", "failed", "defer"]

# 2**64 seconds is far past any cap; clamping the exponent keeps the float math finite.
_MAX_EXPONENT = 64
# A provider answering 429 with `Retry-After: 0` would have the subtask claimed and refused
# again at once (153 requests in 1.5 s in the report): a deferral always waits this long.
MIN_DEFERRAL = 1.0  # seconds


def _uniform(rng: random.Random | None, a: float, b: float) -> float:
    return rng.uniform(a, b) if rng is not None else random.uniform(a, b)


def retry_delay(
    retry_count: int,
    *,
    base: float = 1.0,
    cap: float = 300.0,
    jitter: float = 0.0,
    rng: random.Random | None = None,
) -> float:
    """Seconds before retry number ``retry_count`` (0-based): base × 2^n, capped, ± jitter."""
    if retry_count < 0:
        raise ValueError(f"retry_count must be >= 0, got {retry_count}")
    if base < 0 or cap < 0:
        raise ValueError("base and cap must be >= 0")
    if not 0.0 <= jitter <= 1.0:
        raise ValueError(f"jitter must be in [0, 1], got {jitter}")
    delay = min(base * 2.0 ** min(retry_count, _MAX_EXPONENT), cap)
    if jitter:
        # Proportional jitter (delay × (1 ± jitter)) spreads retries of a batch that failed
        # together; the cap still bounds the result.
        delay = min(delay * (1.0 + _uniform(rng, -jitter, jitter)), cap)
    return max(delay, 0.0)


@dataclass(frozen=True)
class SubtaskRetryPolicy:
    """Retry budget and backpressure settings (DESIGN.md "Retries and errors")."""

    max_retries: int = 3  # seed: at most 3 retries after the first attempt
    base: float = 1.0  # seconds; seed: 1 s × 2^n
    cap: float = 300.0  # seconds; longest retry delay
    jitter: float = 0.0  # proportional, for retries; 0 keeps the seed's exact delays
    rate_limit_cap: int = 50  # deferrals before a rate-limited subtask fails anyway
    default_retry_after: float = 5.0  # seconds, when a 429 carries no Retry-After
    defer_jitter: float = 0.2  # upward only: we never come back before Retry-After
    max_retry_after: float = 3600.0  # seconds; a bigger Retry-After is clamped to this
    min_deferral: float = MIN_DEFERRAL  # seconds; a smaller Retry-After is raised to this

    def __post_init__(self) -> None:
        """Reject settings that make no sense."""
        if self.max_retries < 0 or self.rate_limit_cap < 0:
            raise ValueError("max_retries and rate_limit_cap must be >= 0")
        delays = (self.base, self.cap, self.default_retry_after, self.max_retry_after)
        if min(*delays, self.min_deferral) < 0:
            raise ValueError("delays must be >= 0")
        if not (0.0 <= self.jitter <= 1.0 and 0.0 <= self.defer_jitter <= 1.0):
            raise ValueError("jitter and defer_jitter must be in [0, 1]")


DEFAULT_RETRY_POLICY = SubtaskRetryPolicy()


@dataclass(frozen=True)
class RetryDecision:
    """The runner's next step for a failed attempt.

    ``retry``: back to pending at now + delay and increment retry_count (counts_retry).
    ``defer``: back to pending at now + delay and increment the deferral count instead.
    ``fail``: terminal failure; delay is 0.
    """

    action: RetryAction
    delay: float
    counts_retry: bool
    reason: str


def decide_failure(
    *,
    retryable: bool,
    retry_count: int,
    rate_limited: bool = False,
    retry_after: float | None = None,
    rate_limit_count: int = 0,
    policy: SubtaskRetryPolicy = DEFAULT_RETRY_POLICY,
    rng: random.Random | None = None,
) -> RetryDecision:
    """Decide retry, defer or fail from the error's nature and the subtask's counters."""
    if rate_limited:
        return _decide_rate_limited(retry_after, rate_limit_count, policy, rng)
    if not retryable:
        return RetryDecision("failed", 0.0, counts_retry=False, reason="non-retryable error")
    if retry_count >= policy.max_retries:
        return RetryDecision(
            "failed",
            0.0,
            counts_retry=False,
            reason=f"retries exhausted ({retry_count}/{policy.max_retries})",
        )
    delay = retry_delay(
        retry_count, base=policy.base, cap=policy.cap, jitter=policy.jitter, rng=rng
    )
    return RetryDecision(
        "retry",
        delay,
        counts_retry=True,
        reason=f"retry {retry_count + 1}/{policy.max_retries} in {delay:.3g}s",
    )


def _decide_rate_limited(
    retry_after: float | None,
    rate_limit_count: int,
    policy: SubtaskRetryPolicy,
    rng: random.Random | None,
) -> RetryDecision:
    # Backpressure is the provider's state, not the subtask's fault, so it must not burn
    # the retry budget; the separate cap only stops a subtask bouncing forever.
    if rate_limit_count >= policy.rate_limit_cap:
        return RetryDecision(
            "failed",
            0.0,
            counts_retry=False,
            reason=f"rate-limited {rate_limit_count} times (cap {policy.rate_limit_cap})",
        )
    if retry_after is None or math.isnan(retry_after) or retry_after < 0:
        wait = policy.default_retry_after
    else:
        wait = min(max(retry_after, policy.min_deferral), policy.max_retry_after)
    if policy.defer_jitter and wait > 0:
        # Every subtask rejected by one overload got the same Retry-After; spreading them
        # upwards avoids a synchronised stampede at exactly that instant.
        wait *= 1.0 + _uniform(rng, 0.0, policy.defer_jitter)
    return RetryDecision(
        "defer",
        wait,
        counts_retry=False,
        reason=f"rate-limited, deferral {rate_limit_count + 1}/{policy.rate_limit_cap} "
        f"in {wait:.3g}s",
    )
