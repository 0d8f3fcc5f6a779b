"""Checks a worker applies to what any provider hands back. Pure."""

from __future__ import annotations

from workers.errors import ProviderError
from workers.types import ImageRequest


def expect_images(
    provider: object, request: ImageRequest, count: int, where: str, error: type[ProviderError]
) -> None:
    """Raise `error` unless `count` is the batch size (or 0 from an image-less provider)."""
    # A provider that makes no images by design (`null`) says so: produces_images = False.
    if count == 0 and not getattr(provider, "produces_images", True):
        return
    if count != request.batch_size:
        raise error(f"{where}: {count} images for a batch of {request.batch_size}")
