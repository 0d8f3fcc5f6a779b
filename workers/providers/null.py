"""An in-process provider with no HTTP, for measuring the runner's own overhead."""

from __future__ import annotations

import functools
import io
from typing import Any

from workers.providers.base import JobStatus
from workers.types import ImageRequest

OPTIONS: dict[str, Any] = {
    # False (default): no images at all, so neither PNG nor disk cost is measured.
    # True: a fixed 1x1 PNG per requested image, to include storage in the measurement.
    "emit_png": False,
}


@functools.cache
def tiny_png() -> bytes:
    """A fixed 1x1 grey PNG."""
    from PIL import Image  # only when asked for PNGs; not on every import of the factory

    out = io.BytesIO()
    Image.new("L", (1, 1), 128).save(out, "PNG")
    return out.getvalue()


class NullProvider:
    """Both a StandardProvider and a QueueProvider; every call returns at once."""

    def __init__(self, *, options: dict[str, Any]) -> None:
        self._emit_png: bool = options["emit_png"]
        # Without emit_png it makes no images by design; the workers accept an empty batch.
        self.produces_images = self._emit_png

    def __repr__(self) -> str:
        return f"NullProvider(emit_png={self._emit_png})"

    def _images(self, count: int) -> list[bytes]:
        return [tiny_png()] * count if self._emit_png else []

    async def generate(self, request: ImageRequest) -> list[bytes]:
        """No images (or tiny PNGs with emit_png)."""
        return self._images(request.batch_size)

    async def submit(self, request: ImageRequest) -> str:
        """An id that encodes the batch size, so fetch() needs no state."""
        return f"null-{request.subtask_id}-{request.attempt}-{request.batch_size}"

    async def poll(self, external_id: str) -> JobStatus:
        """Always succeeded."""
        return JobStatus(state="succeeded")

    async def fetch(self, external_id: str, status: JobStatus) -> list[bytes]:
        """No images (or tiny PNGs with emit_png)."""
        return self._images(int(external_id.rsplit("-", 1)[-1]))

    async def cancel(self, external_id: str) -> None:
        """Nothing to cancel."""
