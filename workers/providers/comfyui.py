"""ComfyUI: POST /prompt → prompt_id, poll GET /history/{id}, download GET /view."""

from __future__ import annotations

import copy
from functools import partial
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

from workers.providers.base import JobStatus
from workers.types import ImageRequest

if TYPE_CHECKING:  # annotations only: checking a config (`imgrun submit`) skips aiohttp
    from workers.providers.http import HttpClient

OPTIONS: dict[str, Any] = {
    # An API-format workflow; string values "$prompt", "$seed", "$width", "$height",
    # "$batch_size" and "$model" are replaced with the request's values. None = DEFAULT_WORKFLOW.
    "workflow": None,
    "negative_prompt": "",
    "steps": 20,
    "cfg": 7.0,
    "sampler_name": "euler",
    "scheduler": "normal",
}

# The stock text-to-image graph (checkpoint → CLIP encode → KSampler → VAE decode → save).
DEFAULT_WORKFLOW: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "$model"}},
    "5": {
        "class_type": "EmptyLatentImage",
        "inputs": {"width": "$width", "height": "$height", "batch_size": "$batch_size"},
    },
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "$prompt", "clip": ["4", 1]}},
    "7": {"class_type": "CLIPTextEncode", "inputs": {"text": "$negative_prompt", "clip": ["4", 1]}},
    "3": {
        "class_type": "KSampler",
        "inputs": {
            "seed": "$seed",
            "steps": "$steps",
            "cfg": "$cfg",
            "sampler_name": "$sampler_name",
            "scheduler": "$scheduler",
            "denoise": 1.0,
            "model": ["4", 0],
            "positive": ["6", 0],
            "negative": ["7", 0],
            "latent_image": ["5", 0],
        },
    },
    "8": {"class_type": "VAEDecode", "inputs": {"samples": ["3", 0], "vae": ["4", 2]}},
    "9": {"class_type": "SaveImage", "inputs": {"filename_prefix": "imgrun", "images": ["8", 0]}},
}


def _fill(node: Any, values: dict[str, Any]) -> Any:
    """Replace "$name" placeholders anywhere in a workflow, keeping the values' JSON types."""
    if isinstance(node, dict):
        return {key: _fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [_fill(value, values) for value in node]
    if isinstance(node, str) and node.startswith("$") and node[1:] in values:
        return values[node[1:]]
    return node


class ComfyUIQueue:
    """A QueueProvider for a ComfyUI server."""

    def __init__(self, http: HttpClient, *, model: str, options: dict[str, Any]) -> None:
        self._http = http
        self._model = model
        self._options = options
        self._workflow = copy.deepcopy(options["workflow"] or DEFAULT_WORKFLOW)

    def __repr__(self) -> str:
        return f"ComfyUIQueue({self._http!r}, model={self._model!r})"

    def workflow(self, request: ImageRequest) -> dict[str, Any]:
        """The workflow graph for one request."""
        width, height = request.size
        values = {
            key: self._options[key]
            for key in ("negative_prompt", "steps", "cfg", "sampler_name", "scheduler")
        }
        values |= {
            "prompt": request.prompt,
            "seed": request.seed % 2**64,  # ComfyUI seeds are unsigned 64-bit
            "width": width,
            "height": height,
            "batch_size": request.batch_size,
            "model": self._model,
        }
        filled: dict[str, Any] = _fill(self._workflow, values)
        return filled

    async def submit(self, request: ImageRequest) -> str:
        """Queue the workflow and return ComfyUI's prompt_id."""
        body = {
            "prompt": self.workflow(request),
            "client_id": request.idempotency_key,
            # Kept in ComfyUI's history, so a job can be traced back to its subtask.
            "extra_data": {
                "imgrun": {
                    "subtask_id": request.subtask_id,
                    "idempotency_key": request.idempotency_key,
                }
            },
        }

        async def once() -> str:
            data = await self._http.request_json(
                "POST", "prompt", json_body=body, idempotency_key=request.idempotency_key
            )
            prompt_id = data.get("prompt_id") if isinstance(data, dict) else None
            return self._http.external_id("submit", prompt_id)

        return await self._http.retry("submit", once)

    async def poll(self, external_id: str) -> JobStatus:
        """Read the prompt's history entry; absent means still queued or running."""
        return await self._http.retry("poll", lambda: self._poll_once(external_id))

    async def _poll_once(self, external_id: str) -> JobStatus:
        data = await self._http.request_json("GET", f"history/{quote(external_id, safe='')}")
        if not isinstance(data, dict):
            raise self._http.malformed("poll", "history is not an object")
        entry = data.get(external_id)
        if entry is None:
            # ComfyUI adds the history entry only when execution ends.
            return JobStatus(state="queued")
        if not isinstance(entry, dict):
            raise self._http.malformed("poll", "history entry is not an object")
        status = entry.get("status") or {}
        if not isinstance(status, dict):
            raise self._http.malformed("poll", "status is not an object")
        if status.get("status_str") == "error":
            return JobStatus(
                state="failed", error=self._http.provider_text(_execution_error(status))
            )
        if not status.get("completed", True):
            return JobStatus(state="running")
        try:
            refs = list(_image_refs(entry.get("outputs") or {}))
        except (AttributeError, KeyError, TypeError):
            raise self._http.malformed("poll", "unexpected outputs shape") from None
        return JobStatus(state="succeeded", images=self._http.image_refs("poll", refs))

    async def fetch(self, external_id: str, status: JobStatus) -> list[bytes]:
        """GET /view for each output image."""
        return [
            await self._http.retry(
                "fetch", partial(self._http.request, "GET", "view", params=dict(parse_qsl(ref)))
            )
            for ref in status.images
        ]

    async def cancel(self, external_id: str) -> None:
        """Remove the prompt from the queue; if it is the one running, interrupt it."""
        await self._http.request("POST", "queue", json_body={"delete": [external_id]})
        data = await self._http.request_json("GET", "queue")
        running = data.get("queue_running") if isinstance(data, dict) else None
        # Items are [number, prompt_id, prompt, extra_data, outputs]. Checked first because
        # servers before targeted interrupts (2025) ignore the prompt_id and stop whatever
        # runs, maybe someone else's prompt; current ones stop only this one.
        if isinstance(running, list) and any(
            isinstance(item, list) and len(item) > 1 and item[1] == external_id for item in running
        ):
            await self._http.request("POST", "interrupt", json_body={"prompt_id": external_id})


def _image_refs(outputs: dict[str, Any]) -> tuple[str, ...]:
    """Query strings for /view of every saved output image, in node order."""
    refs = []
    for node_id in sorted(outputs, key=lambda k: (len(k), k)):
        for image in outputs[node_id].get("images") or []:
            if image.get("type", "output") != "output":
                continue  # previews and temp files are not results
            refs.append(
                urlencode(
                    {
                        "filename": image["filename"],
                        "subfolder": image.get("subfolder", ""),
                        "type": image.get("type", "output"),
                    }
                )
            )
    return tuple(refs)


def _execution_error(status: dict[str, Any]) -> str:
    """The exception message of ComfyUI's execution_error event, if any."""
    for message in status.get("messages") or []:
        if isinstance(message, list) and len(message) == 2 and message[0] == "execution_error":
            data = message[1]
            return f"{data.get('node_type', 'node')}: {data.get('exception_message', 'error')}"
    return "execution failed"
