"""The polling worker: submit (or resume), poll until done, fetch, store."""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import anyio

from workers import budget
from workers.checks import expect_images
from workers.errors import (
    Canceled,
    JobFailed,
    PermanentError,
    ProviderTimeout,
    RateLimited,
    TransientError,
)
from workers.providers.base import JobStatus, QueueProvider
from workers.providers.limits import CANCEL_TIMEOUT
from workers.storage import ImageStore
from workers.types import ImageRequest, WorkResult

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class PollSettings:
    """How often to poll one job, and how long one attempt at it may take in all."""

    polling_interval: float  # seconds between polls
    max_attempts: int  # polls at most
    timeout: float  # seconds for a whole attempt: submit, every poll, every download


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
    on_absorbed: Callable[[BaseException], None] | None = None,
) -> WorkResult:
    """Run one queue job to its images (resuming `external_id`), all within settings.timeout.

    `on_absorbed` is told of each failed poll the loop waits past (the job goes on).
    """
    # One deadline covers submit + polls + downloads: a slow image server cannot stretch a
    # 2 s job to a minute. A job we give up on (deadline, max_attempts) is cancelled at the
    # provider, because the runner's next attempt submits a new one: never two paid jobs.
    started = clock()
    job = _Job(external_id)
    images: list[bytes] | None = None
    try:
        with budget.tracking() as seen, anyio.move_on_after(settings.timeout):
            images = await _run_job(
                provider,
                request,
                job,
                settings,
                started + settings.timeout,
                _Hooks(on_submitted, sleep, should_stop, clock, on_absorbed),
            )
        if images is None:
            raise ProviderTimeout(
                f"job {job.id or '(not submitted)'}: attempt not done in {settings.timeout:g}s"
                " (submit, polls and downloads)"
            )
    except ProviderTimeout as exc:
        if job.id is not None:
            await _cancel(provider, job.id)
            exc.job_gone = True  # canceled at the provider: never resume it
        raise
    provider_ms = (clock() - started) * 1000
    stored = await store.save(request.task_id, request.subtask_id, request.attempt, images)
    return WorkResult(
        images=stored,
        provider_ms=provider_ms,
        external_id=job.id,
        extra={"polls": job.polls},
        ratelimit=seen.lowest,
    )


@dataclass
class _Job:
    """The job an attempt works on, as far as it got (read when it has to be cancelled)."""

    id: str | None
    polls: int = 0


@dataclass(frozen=True)
class _Hooks:
    """What the caller of run_polling lends the job: persistence, time, stop and error ears."""

    on_submitted: Callable[[str], Awaitable[None]]
    sleep: Callable[[float], Awaitable[None]]
    should_stop: Callable[[], Awaitable[bool]] | None
    clock: Callable[[], float]
    on_absorbed: Callable[[BaseException], None] | None


async def _run_job(
    provider: QueueProvider,
    request: ImageRequest,
    job: _Job,
    settings: PollSettings,
    deadline: float,
    hooks: _Hooks,
) -> list[bytes]:
    """Submit (unless resuming), poll to the end, check and download the images."""
    resumed = job.id is not None
    if job.id is None:
        job.id = await provider.submit(request)
        # Persisted before the first poll, so a restarted runner resumes instead of resubmitting.
        await hooks.on_submitted(job.id)
    status, job.polls = await _wait_done(
        provider, job.id, settings, deadline, hooks, poll_first=resumed
    )
    if status.state == "failed":
        message = f"job {job.id} failed: {status.error or 'no reason given'}"
        raise JobFailed(message) if status.retryable else PermanentError(message)
    if status.state == "canceled":
        raise Canceled(f"job {job.id} was canceled by the provider")
    # A succeeded job with the wrong count is no result: JobFailed makes the next attempt
    # submit afresh instead of downloading the same wrong answer. Checked before the
    # downloads too, so a million image refs are not a million requests.
    if status.images:  # refs known before the download (null derives its images from the id)
        expect_images(provider, request, len(status.images), f"job {job.id}", JobFailed)
    images = await provider.fetch(job.id, status)
    expect_images(provider, request, len(images), f"job {job.id}", JobFailed)
    return images


async def _wait_done(
    provider: QueueProvider,
    external_id: str,
    settings: PollSettings,
    deadline: float,
    hooks: _Hooks,
    *,
    poll_first: bool,
) -> tuple[JobStatus, int]:
    """Poll until the job ends; ProviderTimeout past max_attempts or the deadline."""
    last_error: Exception | None = None
    for attempt in range(settings.max_attempts):
        delay = settings.polling_interval
        if isinstance(last_error, RateLimited) and last_error.retry_after:
            delay = max(delay, last_error.retry_after)
        if attempt > 0 or not poll_first:
            if hooks.clock() + delay > deadline:
                break
            await hooks.sleep(delay)
        if hooks.should_stop is not None and await hooks.should_stop():
            await _cancel(provider, external_id)
            raise Canceled(f"job {external_id} canceled by the runner")
        try:
            status = await provider.poll(external_id)
        except (TransientError, RateLimited) as exc:
            # The job lives on at the provider; a failed poll is just a lost look at it, but
            # still an answer (a 429, a 5xx, a timeout) the runner must hear of, once.
            log.debug("poll of job %s failed: %s", external_id, exc)
            if hooks.on_absorbed is not None:
                hooks.on_absorbed(exc)
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
    """Best-effort cancel, bounded; a failure here must not hide why we cancel."""
    try:
        # Shielded: a job we let go of must be told even if the runner is stopping too.
        with anyio.move_on_after(CANCEL_TIMEOUT, shield=True) as scope:
            await provider.cancel(external_id)
        if scope.cancelled_caught:
            log.warning("could not cancel job %s: no answer in %gs", external_id, CANCEL_TIMEOUT)
    except Exception as exc:
        log.warning("could not cancel job %s: %s", external_id, exc)
