"""The lumina async queue protocol: POST /v1/tasks, GET /v1/tasks/{uuid}, image URLs."""

from __future__ import annotations

from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import quote

from workers.providers.base import JobState, JobStatus
from workers.types import ImageRequest

if TYPE_CHECKING:  # annotations only: checking a config (`imgrun submit`) skips aiohttp
    from workers.providers.http import HttpClient

OPTIONS: dict[str, Any] = {
    "body": {},  # extra submit fields
}

# Servers in this family spell states differently; map the common spellings.
_STATES: dict[str, JobState] = {
    "queued": "queued",
    "pending": "queued",
    "waiting": "queued",
    "running": "running",
    "processing": "running",
    "in_progress": "running",
    "succeeded": "succeeded",
    "success": "succeeded",
    "completed": "succeeded",
    "done": "succeeded",
    "failed": "failed",
    "error": "failed",
    "canceled": "canceled",
    "cancelled": "canceled",
}


class LuminaQueue:
    """A QueueProvider for the lumina protocol (the sim speaks it too)."""

    def __init__(self, http: HttpClient, *, model: str, options: dict[str, Any]) -> None:
        self._http = http
        self._model = model
        self._body: dict[str, Any] = dict(options["body"])

    def __repr__(self) -> str:
        return f"LuminaQueue({self._http!r}, model={self._model!r})"

    async def submit(self, request: ImageRequest) -> str:
        """Create the job (a retried POST reuses the Idempotency-Key) and return its uuid."""
        body: dict[str, Any] = {
            "prompt": request.prompt,
            "seed": request.seed,
            "ratio": request.ratio,
            "batch_size": request.batch_size,
            "polish": request.polish,
            "subtask_id": request.subtask_id,
            **self._body,
        }
        if self._model:
            body["model"] = self._model

        async def once() -> str:
            data = await self._http.request_json(
                "POST", "v1/tasks", json_body=body, idempotency_key=request.idempotency_key
            )
            task_uuid = data.get("task_uuid") if isinstance(data, dict) else None
            return self._http.external_id("submit", task_uuid)

        return await self._http.retry("submit", once)

    async def poll(self, external_id: str) -> JobStatus:
        """GET the job's status."""
        return await self._http.retry("poll", lambda: self._poll_once(external_id))

    async def _poll_once(self, external_id: str) -> JobStatus:
        data = await self._http.request_json("GET", f"v1/tasks/{quote(external_id, safe='')}")
        raw = data.get("status") if isinstance(data, dict) else None
        state = _STATES.get(raw.lower()) if isinstance(raw, str) else None
        if state is None:
            raise self._http.malformed("poll", f"unknown status {raw!r:.100}")
        images = self._http.image_refs("poll", data.get("images") or [])
        error = data.get("error")
        if isinstance(error, dict):
            error = error.get("message") or error
        return JobStatus(
            state=state,
            images=images,
            error=self._http.provider_text(str(error)) if error else None,
            retryable=bool(data.get("retryable", False)),
        )

    async def fetch(self, external_id: str, status: JobStatus) -> list[bytes]:
        """Download each image URL of a succeeded job."""
        return [
            await self._http.retry(
                "fetch", partial(self._http.request, "GET", self._http.resolve(ref))
            )
            for ref in status.images
        ]

    async def cancel(self, external_id: str) -> None:
        """DELETE the job; one try, since cancelling is best effort."""
        await self._http.request("DELETE", f"v1/tasks/{quote(external_id, safe='')}")
