"""Typed outcomes of a provider call.

The runner maps each class to a subtask state and a scaling signal.
"""

from __future__ import annotations

from workers.headers import RateLimitInfo

# Messages end up in the database (subtasks.error, error_logs) and logs; the adapters clip
# provider text much shorter, this is the backstop for whatever they miss.
MAX_MESSAGE = 1_000  # characters


class ProviderError(Exception):
    """Base of every error a provider or worker raises; the message never holds a secret."""

    retryable: bool = True
    # The attempt's provider job is over (failed, or canceled when we gave up on it): the
    # next attempt must submit a new one instead of resuming it. Only polling jobs set it.
    job_gone: bool = False
    # Set by the HTTP client from the response that caused the error, when there was one:
    # the provider's request budget (x-ratelimit-*) and when the request was sent (wall
    # clock, Unix seconds; an answer to a request sent before a cut says nothing new).
    ratelimit: RateLimitInfo | None = None
    sent_at: float | None = None

    def __init__(self, message: str, *, status: int | None = None) -> None:
        if len(message) > MAX_MESSAGE:
            message = message[:MAX_MESSAGE] + "…"
        super().__init__(message)
        self.status = status


class RateLimited(ProviderError):
    """Backpressure (429, or 503 with or without Retry-After): retry later, not a failure."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = 429
    ) -> None:
        super().__init__(message, status=status)
        self.retry_after = retry_after


class TransientError(ProviderError):
    """A failure worth another attempt: connection error, 5xx, malformed body."""


class JobFailed(TransientError):
    """The provider ran the async job and it failed; another attempt must submit a new job."""

    job_gone = True


class ProviderTimeout(TransientError):
    """The provider did not answer (or the job did not finish) in time."""


class PermanentError(ProviderError):
    """A failure another attempt cannot fix: 4xx validation, content policy, a failed job."""

    retryable = False


class Misconfigured(PermanentError):
    """The provider refused us for a reason the operator must fix (credentials, model name).

    Not the subtask's fault: the runner pauses the provider and leaves its work pending.
    """


class Canceled(ProviderError):
    """The runner asked a polling worker to stop; the provider job was asked to cancel."""

    retryable = False
