"""Bounded tenacity retries for one I/O step, honouring Retry-After."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import TypeVar

import anyio
from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception,
    stop_after_attempt,
    stop_before_delay,
    wait_exponential_jitter,
)
from tenacity.wait import wait_base

from workers.errors import RateLimited, TransientError

log = logging.getLogger("workers.providers")
T = TypeVar("T")


@dataclass(frozen=True)
class RequestRetryPolicy:
    """How hard one attempt tries before it hands an error to the runner."""

    attempts: int = 4  # tries of one I/O step (submit, poll, generate, fetch)
    total_seconds: float = 60.0  # no retry whose sleep would end past this
    wait_initial: float = 0.5  # seconds; doubles each retry
    wait_max: float = 8.0  # seconds, before jitter
    jitter: float = 0.5  # seconds of random extra wait
    rate_limit_retries: int = 2  # 429s absorbed here; the next goes to the runner to back off
    max_retry_after: float = 10.0  # a longer Retry-After goes straight to the runner
    sleep: Callable[[float], Awaitable[None]] = field(default=anyio.sleep, compare=False)
    # Told of every error a retry absorbs (a 429 waited out here is still pressure the
    # caller's concurrency policy must hear about).
    on_retry: Callable[[BaseException], None] | None = field(default=None, compare=False)


class WaitRetryAfter(wait_base):
    """Wait what the server asked for after a 429 (within [floor, cap]), else fall back."""

    def __init__(self, fallback: wait_base, cap: float, floor: float = 0.0) -> None:
        self._fallback = fallback
        self._cap = cap
        # `Retry-After: 0` must not mean "hammer it": never sooner than our own first wait.
        self._floor = floor

    def __call__(self, retry_state: RetryCallState) -> float:
        """Seconds to sleep before the next try."""
        outcome = retry_state.outcome
        exc = outcome.exception() if outcome is not None else None
        if isinstance(exc, RateLimited) and exc.retry_after is not None:
            return min(max(exc.retry_after, self._floor), self._cap)
        return self._fallback(retry_state)


def _retryable(policy: RequestRetryPolicy) -> Callable[[BaseException], bool]:
    rate_limited = 0

    def decide(exc: BaseException) -> bool:
        nonlocal rate_limited
        if isinstance(exc, RateLimited):
            rate_limited += 1
            wait = exc.retry_after or 0.0
            return rate_limited <= policy.rate_limit_retries and wait <= policy.max_retry_after
        return isinstance(exc, TransientError)

    return decide


def _log_retry(what: str, policy: RequestRetryPolicy) -> Callable[[RetryCallState], None]:
    def before_sleep(state: RetryCallState) -> None:
        exc = state.outcome.exception() if state.outcome else None
        if exc is not None and policy.on_retry is not None:
            policy.on_retry(exc)
        # Our errors' messages are already redacted; log no request data beyond them.
        log.debug(
            "%s: try %d failed (%s: %s); retrying in %.2fs",
            what,
            state.attempt_number,
            type(exc).__name__,
            exc,
            state.upcoming_sleep,
        )

    return before_sleep


async def with_retries(
    policy: RequestRetryPolicy, what: str, step: Callable[[], Awaitable[T]]
) -> T:
    """Run `step`, retrying TransientError and a few RateLimited; re-raise the last error."""
    retrying = AsyncRetrying(
        retry=retry_if_exception(_retryable(policy)),
        stop=stop_after_attempt(policy.attempts) | stop_before_delay(policy.total_seconds),
        wait=WaitRetryAfter(
            wait_exponential_jitter(
                multiplier=policy.wait_initial, max=policy.wait_max, jitter=policy.jitter
            ),
            cap=policy.max_retry_after,
            floor=policy.wait_initial,
        ),
        sleep=policy.sleep,
        before_sleep=_log_retry(what, policy),
        reraise=True,
    )

    # tenacity only awaits coroutine *functions*; a lambda returning a coroutine would not be.
    async def attempt() -> T:
        return await step()

    return await retrying(attempt)
