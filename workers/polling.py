"""The polling worker: submit (or resume), poll until done, fetch, store."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from workers.errors import (
    Canceled,
    JobFailed,
    PermanentError,
    ProviderTimeout,
    RateLimited,
    TransientError,
)
from workers.providers.base import JobStatus, QueueProvider
from workers.storage import ImageStore
from workers.types import ImageRequest, WorkResult

log = logging.getLogger(__name__)

POLLING_INTERVAL = 5.0  # seconds
MAX_POLL_ATTEMPTS = 60
JOB_TIMEOUT = 300.0  # seconds, from the first poll wait to the last


@dataclass(frozen=True)
class PollSettings:
    """How often and how long to poll one job."""

    polling_interval: float = POLLING_INTERVAL
    max_attempts: int = MAX_POLL_ATTEMPTS
    timeout: float = JOB_TIMEOUT


async def run_polling(
    provider: QueueProvider,
    store: ImageStore,
    request: ImageRequest,
    *,
    settings: PollSettings,
    external_id: str | None,
    on_submitted: Callable[[str], Awaitable[None]],
    sleep: Callable[[float], Awaitable[None]] = anyio.sleep,
    should_stop: Callable[[], Awaitable[bool]] | None = None,
    clock: Callable[[], float] = time.monotonic,
) -> WorkResult:
    """Run one queue job to its images; resume polling when `external_id` is given."""
    started = clock()
    resumed = external_id is not None
    if external_id is None:
        external_id = await provider.submit(request)
        # Persisted before the first poll, so a restarted runner resumes instead of resubmitting.
        await on_submitted(external_id)
    status, polls = await _wait_done(
        provider,
        external_id,
        settings,
        sleep=sleep,
        should_stop=should_stop,
        clock=clock,
        poll_first=resumed,
    )
    if status.state == "failed":
        message = f"job {external_id} failed: {status.error or 'no reason given'}"
        raise JobFailed(message) if status.retryable else PermanentError(message)
    if status.state == "canceled":
        raise Canceled(f"job {external_id} was canceled by the provider")
    images = await provider.fetch(external_id, status)
    provider_ms = (clock() - started) * 1000
    stored = await store.save(request.task_id, request.subtask_id, images)
    return WorkResult(
        images=stored, provider_ms=provider_ms, external_id=external_id, extra={"polls": polls}
    )


async def _wait_done(
    provider: QueueProvider,
    external_id: str,
    settings: PollSettings,
    *,
    sleep: Callable[[float], Awaitable[None]],
    should_stop: Callable[[], Awaitable[bool]] | None,
    clock: Callable[[], float],
    poll_first: bool,
) -> tuple[JobStatus, int]:
    """Poll until the job ends; ProviderTimeout past max_attempts or timeout."""
    deadline = clock() + settings.timeout
    last_error: Exception | None = None
    for attempt in range(settings.max_attempts):
        delay = settings.polling_interval
        if isinstance(last_error, RateLimited) and last_error.retry_after:
            delay = max(delay, last_error.retry_after)
        if attempt > 0 or not poll_first:
            if clock() + delay > deadline:
                break
            await sleep(delay)
        if should_stop is not None and await should_stop():
            await _cancel(provider, external_id)
            raise Canceled(f"job {external_id} canceled by the runner")
        try:
            status = await provider.poll(external_id)
        except (TransientError, RateLimited) as exc:
            # The job lives on at the provider; a failed poll is just a lost look at it.
            log.debug("poll of job %s failed: %s", external_id, exc)
            last_error = exc
            continue
        last_error = None
        if status.done:
            return status, attempt + 1
    why = f" (last poll error: {last_error})" if last_error else ""
    raise ProviderTimeout(
        f"job {external_id} not done after {settings.max_attempts} polls "
        f"or {settings.timeout:.0f}s{why}"
    )


async def _cancel(provider: QueueProvider, external_id: str) -> None:
    """Best-effort cancel; a failure here must not hide the cancellation itself."""
    try:
        with anyio.CancelScope(shield=True):
            await provider.cancel(external_id)
    except Exception as exc:
        log.warning("could not cancel job %s: %s", external_id, exc)
