"""What a failed attempt means: its outcome, its error record, its pressure signal. Pure.

One rule for every failure, the reaper's lease expiries included: the executor and the
reaper both call `classify` and only carry out what it decides.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, get_args

from db.records import ErrorRecord, OutcomeKind
from runner.policy.backoff import SubtaskRetryPolicy, decide_failure
from runner.policy.fingerprint import error_type, fingerprint, redact
from runner.policy.scaling import PressureKind
from workers.errors import Misconfigured, ProviderError, ProviderTimeout, RateLimited

# What one provider answer (or the lack of one) tells the runner: the three pressure signals,
# plus other 5xx, which the provider controller counts but does not treat as pressure.
Signal = Literal["rate_limited", "unavailable", "timeout", "server_error"]
SIGNAL_NAMES: tuple[str, ...] = get_args(Signal)


class LeaseExpired(ProviderError):
    """The runner holding the subtask stopped answering (a crash costs one attempt)."""

    def __init__(self) -> None:
        super().__init__("lease expired: its runner stopped answering")


@dataclass(frozen=True)
class Attempt:
    """The counters of the attempt that failed, as its row has them."""

    retry_count: int
    deferrals: int
    max_retries: int


@dataclass(frozen=True)
class Verdict:
    """Everything the runner records and signals for one failed attempt."""

    kind: OutcomeKind  # retry | defer | failed
    delay: float  # seconds until it may run again (retry, defer)
    error: str  # "<type>: <redacted message>", stored on the subtask
    error_type: str
    fingerprint: str  # the redacted message with ids and numbers masked (error_logs key)
    reset_job: bool  # the provider's job is over: the next attempt submits a new one
    pressure: PressureKind | None  # backpressure for the scaling policy, if any
    retry_after: float | None  # the provider's Retry-After, seconds
    pause_provider: bool = False  # the operator must fix the provider's config: stop using it

    @property
    def counts_as_failure(self) -> bool:
        """A failure of the provider (backpressure and misconfiguration are not)."""
        return self.kind not in ("defer", "release")


def classify(
    exc: BaseException,
    attempt: Attempt,
    policy: SubtaskRetryPolicy,
    secrets: tuple[str, ...],
    *,
    misconfigured_pause: float = 60.0,
) -> Verdict:
    """Decide retry, defer, failed or release for `exc`, with the redacted error and pressure."""
    described = describe(exc, secrets)
    message, kind = described.message, described.error_type
    if isinstance(exc, Misconfigured):
        # Every subtask of this provider would fail the same way: none is charged for it
        # (release: the attempt is not counted); they wait while the provider is paused.
        return Verdict(
            kind="release",
            delay=misconfigured_pause,
            error=f"{kind}: {message}",
            error_type=kind,
            fingerprint=described.fingerprint,
            reset_job=False,
            pressure=None,
            retry_after=None,
            pause_provider=True,
        )
    rate_limited = isinstance(exc, RateLimited)
    retry_after = exc.retry_after if isinstance(exc, RateLimited) else None
    decision = decide_failure(
        retryable=bool(getattr(exc, "retryable", True)),
        retry_count=attempt.retry_count,
        rate_limited=rate_limited,
        retry_after=retry_after,
        rate_limit_count=attempt.deferrals,
        policy=policy,
    )
    return Verdict(
        kind=decision.action,
        delay=decision.delay,
        error=f"{kind}: {message}",
        error_type=kind,
        fingerprint=described.fingerprint,
        reset_job=isinstance(exc, ProviderError) and exc.job_gone,
        pressure=pressure_of(exc),
        retry_after=retry_after,
    )


def signal_of(exc: BaseException) -> Signal | None:
    """What an error tells the provider's controller: 429, 503, timeout, other 5xx, or None."""
    status = exc.status if isinstance(exc, ProviderError) else None
    if status == 503:
        return "unavailable"
    if isinstance(exc, RateLimited):
        return "rate_limited"
    # TimeoutError: aiohttp's connect/read timeouts, should an adapter let one through raw.
    if isinstance(exc, ProviderTimeout | TimeoutError):
        return "timeout"
    if status is not None and 500 <= status <= 599:
        return "server_error"
    return None


def pressure_of(exc: BaseException) -> PressureKind | None:
    """The pressure signal an error carries (429, 503, timeout); None for the rest."""
    signal = signal_of(exc)
    return None if signal == "server_error" else signal


@dataclass(frozen=True)
class Described:
    """An error as it is stored: redacted, named, fingerprinted."""

    message: str  # the redacted message
    error_type: str
    fingerprint: str  # the message with ids and numbers masked (error_logs key)


def describe(exc: BaseException, secrets: tuple[str, ...]) -> Described:
    """Redact, name and fingerprint an error: one way for final and absorbed errors alike."""
    message = redact(str(exc) or type(exc).__name__, secrets)
    return Described(message, error_type(exc), fingerprint(message))


def recovered_error(
    exc: BaseException,
    secrets: tuple[str, ...],
    pool: str,
    provider: str,
    subtask_id: int | None,
) -> ErrorRecord:
    """The error_logs record of an error an in-attempt retry absorbed (the attempt went on)."""
    described = describe(exc, secrets)
    return ErrorRecord(
        described.error_type, described.fingerprint, None, pool, provider, subtask_id, True
    )
