"""One rule for every failed attempt: outcome, delay, redacted error, pressure (pure)."""

from __future__ import annotations

import aiohttp
import pytest

from runner.policy.backoff import SubtaskRetryPolicy
from runner.policy.classify import (
    Attempt,
    LeaseExpired,
    Verdict,
    classify,
    pressure_of,
    recovered_error,
    signal_of,
)
from workers.errors import (
    JobFailed,
    Misconfigured,
    PermanentError,
    ProviderTimeout,
    RateLimited,
    TransientError,
)

POLICY = SubtaskRetryPolicy(max_retries=3, base=1.0, rate_limit_cap=5, defer_jitter=0.0)
FRESH = Attempt(retry_count=0, deferrals=0, max_retries=3)
SECRET = "sk-live-0123456789abcdef"


def verdict(exc: BaseException, attempt: Attempt = FRESH) -> Verdict:
    """Classify with the test policy and one secret to redact."""
    return classify(exc, attempt, POLICY, (SECRET,))


@pytest.mark.parametrize(
    ("exc", "kind", "delay", "pressure"),
    [
        (TransientError("HTTP 500"), "retry", 1.0, None),
        (ProviderTimeout("no answer in 120s"), "retry", 1.0, "timeout"),
        (PermanentError("HTTP 400: bad prompt"), "failed", 0.0, None),
        (RateLimited("HTTP 429", retry_after=7.0), "defer", 7.0, "rate_limited"),
        (RateLimited("HTTP 503", retry_after=3.0, status=503), "defer", 3.0, "unavailable"),
        (RuntimeError("a bug in an adapter"), "retry", 1.0, None),
        (LeaseExpired(), "retry", 1.0, None),
    ],
)
def test_each_error_class_has_its_outcome_and_signal(
    exc: BaseException, kind: str, delay: float, pressure: str | None
) -> None:
    """DESIGN.md's table: retryable → retry at base×2^n, 4xx → failed, 429/503 → defer."""
    result = verdict(exc)
    assert (result.kind, result.delay, result.pressure) == (kind, delay, pressure)
    assert result.counts_as_failure == (kind != "defer")


def test_retries_back_off_exponentially_then_fail() -> None:
    """Retry n waits 1 s × 2^n; after max_retries the attempt fails."""
    delays = [verdict(TransientError("x"), Attempt(n, 0, 3)).delay for n in range(3)]
    assert delays == [1.0, 2.0, 4.0]
    assert verdict(TransientError("x"), Attempt(3, 0, 3)).kind == "failed"
    assert verdict(LeaseExpired(), Attempt(3, 0, 3)).kind == "failed"


def test_backpressure_spends_the_deferral_cap_not_the_retry_budget() -> None:
    """A rate-limited subtask with its retries used up is still deferred, until the cap."""
    assert verdict(RateLimited("429"), Attempt(3, 4, 3)).kind == "defer"
    assert verdict(RateLimited("429"), Attempt(0, 5, 3)).kind == "failed"


def test_secrets_are_redacted_from_the_error_and_its_fingerprint() -> None:
    """An adapter bug that quotes the key never carries it into the database."""
    result = verdict(RuntimeError(f"POST failed with Authorization: Bearer {SECRET}"))
    assert SECRET not in result.error
    assert SECRET not in result.fingerprint
    assert result.error.startswith("RuntimeError: ")


def test_the_fingerprint_masks_ids_so_failures_aggregate() -> None:
    """Two failures differing only in an id share one fingerprint."""
    first = verdict(JobFailed("job 5f0c2a9e-1b4d-4c7e-9a1f-2b3c4d5e6f70 failed"))
    second = verdict(JobFailed("job 0a1b2c3d-4e5f-4a6b-8c7d-9e0f1a2b3c4d failed"))
    assert first.fingerprint == second.fingerprint
    assert first.error != second.error


def test_only_the_worker_says_a_job_is_gone() -> None:
    """A failed job is gone; a timeout is gone only when the worker canceled it."""
    assert verdict(JobFailed("failed")).reset_job
    timeout = ProviderTimeout("not done")
    assert not verdict(timeout).reset_job
    timeout.job_gone = True
    assert verdict(timeout).reset_job
    assert not verdict(TransientError("lost a fetch")).reset_job


@pytest.mark.parametrize(
    ("exc", "signal"),
    [
        (RateLimited("HTTP 429"), "rate_limited"),
        (RateLimited("429", status=None), "rate_limited"),
        (RateLimited("HTTP 503", retry_after=2.0, status=503), "unavailable"),
        (RateLimited("HTTP 503", status=503), "unavailable"),  # no Retry-After: still 503
        (TransientError("HTTP 503", status=503), "unavailable"),  # however an adapter spells it
        (ProviderTimeout("no answer"), "timeout"),
        (aiohttp.ConnectionTimeoutError("connect"), "timeout"),  # raw, past an adapter
        (aiohttp.ServerTimeoutError("read"), "timeout"),
        (TimeoutError(), "timeout"),
        (TransientError("HTTP 500", status=500), "server_error"),
        (TransientError("HTTP 502", status=502), "server_error"),
        (TransientError("HTTP 599", status=599), "server_error"),
        (TransientError("HTTP 409", status=409), None),
        (TransientError("connection reset"), None),
        (PermanentError("HTTP 400", status=400), None),
        (JobFailed("job failed"), None),
        (LeaseExpired(), None),
        (ValueError("a bug"), None),
    ],
)
def test_signal_of_each_answer(exc: BaseException, signal: str | None) -> None:
    """One mapping from an error to the controller's signal: 429, 503, timeout, other 5xx."""
    assert signal_of(exc) == signal
    assert pressure_of(exc) == (None if signal == "server_error" else signal)


def test_recovered_error_is_redacted_and_fingerprinted_like_a_final_one() -> None:
    """An absorbed error aggregates under the same key as the same error ending an attempt."""
    exc = TransientError(f"sim POST /v1/x: HTTP 500: key {SECRET} broke on item 4711", status=500)
    record = recovered_error(exc, (SECRET,), "standard", "sim", 7)
    final = verdict(exc)
    assert (record.error_type, record.fingerprint) == (final.error_type, final.fingerprint)
    assert SECRET not in record.fingerprint and "4711" not in record.fingerprint
    assert "HTTP 500" in record.fingerprint
    assert record.recovered and record.subtask_id == 7 and record.stack_trace is None


def test_pressure_of_absorbed_errors() -> None:
    """Errors the in-attempt retries absorb still signal pressure, and only those kinds."""
    assert pressure_of(RateLimited("429")) == "rate_limited"
    assert pressure_of(RateLimited("429", status=None)) == "rate_limited"
    assert pressure_of(RateLimited("503", status=503)) == "unavailable"
    assert pressure_of(ProviderTimeout("t")) == "timeout"
    assert pressure_of(TransientError("500")) is None


def test_the_reaper_decides_expired_leases_by_the_same_rule() -> None:
    """A crash is a retryable failure: backoff base×2^n, failed once retries are used up."""
    from db.records import ExpiredLease
    from runner.config import RunnerSettings
    from runner.loop.duties import lease_errors, lease_outcomes

    expired = [
        ExpiredLease(
            1, 1, "r1", retry_count=0, deferrals=0, max_retries=3, pool="standard", provider="sim"
        ),
        ExpiredLease(
            2, 3, "r2", retry_count=2, deferrals=9, max_retries=3, pool="lumina", provider="sim"
        ),
        ExpiredLease(
            3, 4, "r2", retry_count=3, deferrals=0, max_retries=3, pool="standard", provider="x"
        ),
    ]
    outcomes = lease_outcomes(expired, RunnerSettings(retry_base=2.0))
    assert [(o.subtask_id, o.attempt, o.executor_id) for o in outcomes] == [
        (1, 1, "r1"),
        (2, 3, "r2"),
        (3, 4, "r2"),
    ]
    assert [(o.kind, o.delay) for o in outcomes] == [
        ("retry", 2.0),
        ("retry", 8.0),
        ("failed", 0.0),
    ]
    assert all("lease expired" in (o.error or "") for o in outcomes)
    errors = lease_errors(expired)
    assert [(e.error_type, e.pool, e.provider, e.subtask_id) for e in errors] == [
        ("LeaseExpired", "standard", "sim", 1),
        ("LeaseExpired", "lumina", "sim", 2),
        ("LeaseExpired", "standard", "x", 3),
    ]


def test_a_misconfigured_provider_charges_no_subtask_and_pauses() -> None:
    """Bad credentials or model: released (attempt not counted) for the pause, not failed."""
    result = classify(
        Misconfigured("generate: HTTP 401: invalid api key", status=401),
        Attempt(retry_count=3, deferrals=50, max_retries=3),
        POLICY,
        (SECRET,),
        misconfigured_pause=45.0,
    )
    assert (result.kind, result.delay, result.pause_provider) == ("release", 45.0, True)
    assert not result.counts_as_failure and result.pressure is None
    assert not verdict(PermanentError("HTTP 400")).pause_provider
