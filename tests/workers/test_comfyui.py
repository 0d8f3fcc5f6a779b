"""The ComfyUI adapter against a server replaying ComfyUI's /prompt, /history and /view bodies."""

from __future__ import annotations

import itertools
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from tests.workers.conftest import ServeApp
from tests.workers.helpers import request
from workers.errors import PermanentError, ProviderTimeout
from workers.polling import PollSettings, run_polling
from workers.providers import ProviderConfig, QueueProvider, RequestRetryPolicy, build_provider
from workers.sim.render import render_png
from workers.storage import ImageStore

pytestmark = pytest.mark.anyio

PROMPT_ID = "6f962d0e-40d9-45e8-b378-7247258cadde"
FAST = PollSettings(polling_interval=0.01, max_attempts=50, timeout=10)


class FakeComfy:
    """Queues one prompt; history is empty for `pending_polls` polls, then complete."""

    def __init__(self, *, pending_polls: int = 2, fail: bool = False) -> None:
        self.submitted: list[dict[str, Any]] = []
        self.views: list[dict[str, str]] = []
        self.deleted: list[Any] = []
        self.interrupted: list[Any] = []
        self.running: list[str] = []  # prompt ids GET /queue reports as running
        self._polls = itertools.count()
        self._pending = pending_polls
        self._fail = fail

    def app(self) -> web.Application:
        app = web.Application()
        app.router.add_post("/prompt", self.prompt)
        app.router.add_get("/history/{prompt_id}", self.history)
        app.router.add_get("/view", self.view)
        app.router.add_post("/queue", self.queue)
        app.router.add_get("/queue", self.queue_state)
        app.router.add_post("/interrupt", self.interrupt)
        return app

    async def prompt(self, request: web.Request) -> web.Response:
        body = await request.json()
        if body["prompt"]["6"]["inputs"]["text"] == "":
            return web.json_response(
                {
                    "error": {
                        "type": "prompt_outputs_failed_validation",
                        "message": "Prompt outputs failed validation",
                        "details": "",
                        "extra_info": {},
                    },
                    "node_errors": {"6": {"errors": [{"message": "empty text"}]}},
                },
                status=400,
            )
        self.submitted.append(body)
        return web.json_response({"prompt_id": PROMPT_ID, "number": 1, "node_errors": {}})

    async def history(self, request: web.Request) -> web.Response:
        if next(self._polls) < self._pending:
            return web.json_response({})
        status: dict[str, Any] = {"status_str": "success", "completed": True, "messages": []}
        if self._fail:
            error = {"node_type": "KSampler", "exception_message": "CUDA out of memory"}
            status = {
                "status_str": "error",
                "completed": False,
                "messages": [["execution_start", {}], ["execution_error", error]],
            }
        images = [
            {"filename": f"imgrun_0000{i}_.png", "subfolder": "runs", "type": "output"}
            for i in (1, 2)
        ]
        entry = {
            "prompt": [1, PROMPT_ID, {}, {}, ["9"]],
            "outputs": {
                "9": {"images": images},
                "12": {"images": [{"filename": "p.png", "subfolder": "", "type": "temp"}]},
            },
            "status": status,
        }
        return web.json_response({request.match_info["prompt_id"]: entry})

    async def view(self, request: web.Request) -> web.Response:
        self.views.append(dict(request.query))
        png = render_png(request.query["filename"], 0, 0, 16, 12)
        return web.Response(body=png, content_type="image/png")

    async def queue(self, request: web.Request) -> web.Response:
        self.deleted.append((await request.json())["delete"])
        return web.json_response({})

    async def queue_state(self, _: web.Request) -> web.Response:
        running = [[7, prompt_id, {}, {}, ["9"]] for prompt_id in self.running]
        other = [8, "someone-elses", {}, {}, ["9"]]
        return web.json_response({"queue_running": [*running, other], "queue_pending": []})

    async def interrupt(self, request: web.Request) -> web.Response:
        self.interrupted.append(await request.json())
        return web.json_response({})


async def comfy(
    fake: FakeComfy, serve_app: ServeApp, session: aiohttp.ClientSession, retry: RequestRetryPolicy
) -> QueueProvider:
    """A ComfyUI adapter pointed at the fake."""
    config = ProviderConfig(
        name="comfy", type="comfyui", base_url=await serve_app(fake.app()), model="sdxl.safetensors"
    )
    return build_provider(config, session, api_key=None, pool="lumina", retry=retry)


async def _ignore(_: str) -> None:
    return None


async def test_full_job_fetches_saved_outputs_only(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """Workflow filled from the request; two output images fetched via /view; temp skipped."""
    fake = FakeComfy()
    provider = await comfy(fake, serve_app, session, fast_retry)
    result = await run_polling(
        provider,
        store,
        request(3, batch_size=2, ratio="16:9", seed=-1),
        settings=FAST,
        external_id=None,
        on_submitted=_ignore,
    )
    assert result.external_id == PROMPT_ID and result.to_json()["polls"] == 3
    graph = fake.submitted[0]["prompt"]
    assert graph["6"]["inputs"]["text"] == "a fox in a beret"
    assert graph["3"]["inputs"]["seed"] == 2**64 - 1
    assert graph["5"]["inputs"] == {"width": 1344, "height": 768, "batch_size": 2}
    assert graph["4"]["inputs"]["ckpt_name"] == "sdxl.safetensors"
    assert fake.submitted[0]["extra_data"]["imgrun"]["subtask_id"] == 3
    assert fake.views == [
        {"filename": f"imgrun_0000{i}_.png", "subfolder": "runs", "type": "output"} for i in (1, 2)
    ]
    assert [(i.width, i.height) for i in result.images] == [(16, 12)] * 2


async def test_execution_error_is_permanent_with_the_node_message(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """status_str=error → failed job → PermanentError naming the node's exception."""
    provider = await comfy(FakeComfy(pending_polls=0, fail=True), serve_app, session, fast_retry)
    with pytest.raises(PermanentError, match="KSampler: CUDA out of memory"):
        await run_polling(
            provider, store, request(), settings=FAST, external_id=None, on_submitted=_ignore
        )


async def test_validation_error_is_permanent(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """A 400 from /prompt (failed validation) is not retried."""
    fake = FakeComfy()
    provider = await comfy(fake, serve_app, session, fast_retry)
    with pytest.raises(PermanentError, match="Prompt outputs failed validation"):
        await provider.submit(request(prompt=""))


async def test_cancel_deletes_from_the_queue(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """cancel() posts {"delete": [prompt_id]} to /queue; not running, so no interrupt."""
    fake = FakeComfy()
    provider = await comfy(fake, serve_app, session, fast_retry)
    await provider.cancel(PROMPT_ID)
    assert fake.deleted == [[PROMPT_ID]]
    assert fake.interrupted == []


async def test_cancel_interrupts_our_prompt_only_when_it_runs(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """Running: a targeted POST /interrupt {"prompt_id"}; someone else's run is never hit."""
    fake = FakeComfy()
    fake.running = [PROMPT_ID]
    provider = await comfy(fake, serve_app, session, fast_retry)
    await provider.cancel(PROMPT_ID)
    assert fake.deleted == [[PROMPT_ID]]
    assert fake.interrupted == [{"prompt_id": PROMPT_ID}]


async def test_timed_out_job_is_cancelled_and_interrupted(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """Giving up on a running prompt (max_attempts) deletes and interrupts it."""
    fake = FakeComfy(pending_polls=1_000)
    fake.running = [PROMPT_ID]
    provider = await comfy(fake, serve_app, session, fast_retry)
    settings = PollSettings(polling_interval=0.01, max_attempts=3, timeout=10)
    with pytest.raises(ProviderTimeout, match="not done after 3 polls"):
        await run_polling(
            provider, store, request(), settings=settings, external_id=None, on_submitted=_ignore
        )
    assert fake.deleted == [[PROMPT_ID]] and fake.interrupted == [{"prompt_id": PROMPT_ID}]


async def test_custom_workflow_placeholders_keep_types(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """extra.workflow: "$name" strings are replaced by typed values; others are untouched."""
    fake = FakeComfy()
    workflow = {
        "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "$prompt", "clip": ["4", 1]}},
        "1": {"class_type": "Seed", "inputs": {"seed": "$seed", "note": "$not_a_field"}},
    }
    config = ProviderConfig(
        name="comfy",
        type="comfyui",
        base_url=await serve_app(fake.app()),
        extra={"workflow": workflow},
    )
    provider = build_provider(config, session, api_key=None, pool="lumina", retry=fast_retry)
    await provider.submit(request(seed=5))
    assert fake.submitted[0]["prompt"]["1"]["inputs"] == {"seed": 5, "note": "$not_a_field"}
