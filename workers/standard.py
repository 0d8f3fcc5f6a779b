"""The standard worker: one request, its images, stored."""

from __future__ import annotations

import time

from workers.providers.base import StandardProvider
from workers.storage import ImageStore
from workers.types import ImageRequest, WorkResult


async def run_standard(
    provider: StandardProvider, store: ImageStore, request: ImageRequest
) -> WorkResult:
    """Generate the subtask's images and store them; ProviderError subclasses propagate."""
    started = time.perf_counter()
    images = await provider.generate(request)
    provider_ms = (time.perf_counter() - started) * 1000
    stored = await store.save(request.task_id, request.subtask_id, images)
    return WorkResult(images=stored, provider_ms=provider_ms)
