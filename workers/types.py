"""Plain data passed between the runner and the workers."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, NamedTuple

from workers.headers import RateLimitInfo
from workers.kinds import RATIO_SIZES


class ImageRequest(NamedTuple):
    """One subtask's generation request, as a provider sees it (built once per attempt)."""

    task_id: int
    subtask_id: int
    attempt: int
    prompt: str
    seed: int
    ratio: str = "1:1"
    batch_size: int = 1
    polish: bool = False

    @property
    def idempotency_key(self) -> str:
        """Header value that lets a backend tell a retry from a duplicate."""
        return f"imgrun-{self.subtask_id}-{self.attempt}"

    @property
    def size(self) -> tuple[int, int]:
        """Width and height for the ratio."""
        return RATIO_SIZES[self.ratio]  # type: ignore[index]  # ratios come validated


@dataclass(frozen=True)
class StoredImage:
    """An image written to the output directory."""

    path: str
    sha256: str
    bytes: int
    width: int
    height: int


@dataclass(frozen=True)
class WorkResult:
    """What a finished subtask produced; stored as the subtask's `result` jsonb."""

    images: list[StoredImage]
    provider_ms: float
    external_id: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    # The tightest request budget (x-ratelimit-*) the attempt's responses stated; for the
    # runner's provider control, not stored.
    ratelimit: RateLimitInfo | None = None

    def to_json(self) -> dict[str, Any]:
        """JSON-ready form for the database."""
        return {
            "images": [vars(image) for image in self.images],
            "provider_ms": round(self.provider_ms, 1),
            "external_id": self.external_id,
            **self.extra,
        }


def image_paths(result: Mapping[str, Any] | None) -> list[str]:
    """The image paths a stored result names (tolerates any JSON: only strings are kept)."""
    images = result.get("images") if isinstance(result, Mapping) else None
    if not isinstance(images, list):
        return []
    paths = (image.get("path") for image in images if isinstance(image, Mapping))
    return [path for path in paths if isinstance(path, str)]
