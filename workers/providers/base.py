"""The two provider shapes the workers drive, and a queue job's status."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal, Protocol, runtime_checkable

from workers.types import ImageRequest

JobState = Literal["queued", "running", "succeeded", "failed", "canceled"]
TERMINAL: frozenset[JobState] = frozenset({"succeeded", "failed", "canceled"})


@dataclass(frozen=True)
class JobStatus:
    """Where a queued job stands; `images` are provider-specific refs that fetch() understands."""

    state: JobState
    images: tuple[str, ...] = ()
    error: str | None = None
    retryable: bool = False  # a failed job the provider says is worth resubmitting

    @property
    def done(self) -> bool:
        """True once the job will not change any more."""
        return self.state in TERMINAL


# Workers require exactly `batch_size` images from every provider; one that makes none by
# design (the `null` provider) sets an attribute `produces_images = False` to be let off.


@runtime_checkable
class StandardProvider(Protocol):
    """One synchronous call per subtask: request in, PNG bytes out."""

    async def generate(self, request: ImageRequest) -> list[bytes]:
        """Return the PNG bytes of `request.batch_size` images."""
        ...


@runtime_checkable
class QueueProvider(Protocol):
    """An asynchronous job API: submit, poll until done, fetch."""

    async def submit(self, request: ImageRequest) -> str:
        """Start a job and return its external id."""
        ...

    async def poll(self, external_id: str) -> JobStatus:
        """Return the job's current status."""
        ...

    async def fetch(self, external_id: str, status: JobStatus) -> list[bytes]:
        """Download the images of a succeeded job."""
        ...

    async def cancel(self, external_id: str) -> None:
        """Ask the provider to drop the job (best effort)."""
        ...
