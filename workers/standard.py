"""The standard worker: one request, its images, stored."""

from __future__ import annotations

import time

import anyio

from workers import budget
from workers.checks import expect_images
from workers.errors import ProviderTimeout, TransientError
from workers.providers.base import StandardProvider
from workers.storage import ImageStore
from workers.types import ImageRequest, WorkResult


async def run_standard(
    provider: StandardProvider,
    store: ImageStore,
    request: ImageRequest,
    *,
    timeout: float | None = None,
) -> WorkResult:
    """Generate and store the subtask's images within `timeout` s; ProviderErrors propagate."""
    # One deadline for every try of the request and every image download, whatever each
    # request's own timeout would allow. None: the caller keeps the deadline (the runner's
    # crew does, without a timer per attempt).
    started = time.perf_counter()
    images: list[bytes] | None = None
    with budget.tracking() as seen:
        if timeout is None:
            images = await provider.generate(request)
        else:
            with anyio.move_on_after(timeout):
                images = await provider.generate(request)
            if images is None:
                raise ProviderTimeout(f"generate: no images within the attempt's {timeout:g}s")
    # Wrong count: retried (TransientError), as any malformed response is.
    expect_images(provider, request, len(images), "generate", TransientError)
    provider_ms = (time.perf_counter() - started) * 1000
    stored = await store.save(request.task_id, request.subtask_id, request.attempt, images)
    return WorkResult(images=stored, provider_ms=provider_ms, ratelimit=seen.lowest)
