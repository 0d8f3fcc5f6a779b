"""The standard worker: one request, its images, stored."""

from __future__ import annotations

import time

from workers import budget
from workers.checks import expect_images
from workers.errors import TransientError
from workers.providers.base import StandardProvider
from workers.storage import ImageStore
from workers.types import ImageRequest, WorkResult


async def run_standard(
    provider: StandardProvider, store: ImageStore, request: ImageRequest
) -> WorkResult:
    """Generate and store the subtask's images; ProviderErrors propagate."""
    # No deadline here: the runner's crew keeps one per attempt, over every try of the
    # request and every image download (runner/loop/crew.py).
    started = time.perf_counter()
    with budget.tracking() as seen:
        images = await provider.generate(request)
    # Wrong count: retried (TransientError), as any malformed response is.
    expect_images(provider, request, len(images), "generate", TransientError)
    provider_ms = (time.perf_counter() - started) * 1000
    stored = await store.save(request.task_id, request.subtask_id, request.attempt, images)
    return WorkResult(images=stored, provider_ms=provider_ms, ratelimit=seen.lowest)
