"""The lumina async queue protocol: submit a job, poll it, fetch its images."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

from aiohttp import web

from workers.sim import responses
from workers.sim.capacity import QueueFull, Ticket
from workers.sim.state import STATE, Job, SimState
from workers.sim.validation import Generation, Invalid, parse_generation

_BROKEN = [
    '{"task_uuid": "0f3a',  # truncated JSON
    '{"status": "queued"}',  # no task_uuid
]


async def submit(request: web.Request) -> web.Response:
    """POST /v1/tasks → 202 {task_uuid, status}; a repeated Idempotency-Key gets the same job."""
    state = request.app[STATE]
    body = await responses.admit(request, state, _BROKEN)
    if isinstance(body, web.Response):
        return body
    key = request.headers.get("Idempotency-Key")
    state.stats.submissions_by_subtask[str(body.get("subtask_id"))] += 1
    if key and (existing := state.jobs.get(state.jobs_by_key.get(key, ""))):
        return _accepted(existing)
    rejection: str | None = None
    try:
        gen = parse_generation(
            body,
            count_field="batch_size",
            max_n=state.config.max_n,
            max_side=state.config.max_side,
        )
    except Invalid as exc:
        if exc.code != "content_policy_violation":
            return responses.error(400, exc.message, param=exc.param, code=exc.code)
        # Async queues usually accept the job and fail it later; so does the sim.
        rejection, gen = exc.message, Generation("", 0, 1, 1, 1, polish=False)
    try:
        ticket = state.capacity.enter_queue()
    except QueueFull as exc:
        return responses.queue_full(state, exc)
    job = Job(uuid=uuid.uuid4().hex, key=key)
    job.task = asyncio.create_task(_run(state, job, gen, rejection, ticket))
    # A job canceled before it ever ran would otherwise keep its queue place forever.
    job.task.add_done_callback(lambda _: ticket.leave_queue())
    state.add_job(job, key)
    return _accepted(job)


def _accepted(job: Job) -> web.Response:
    return web.json_response({"task_uuid": job.uuid, "status": job.status}, status=202)


async def _run(
    state: SimState, job: Job, gen: Generation, rejection: str | None, ticket: Ticket
) -> None:
    async with state.capacity.slot(ticket):
        job.status = "running"
        factor = state.config.lumina_slow_factor if state.faults.job_is_slow() else 1.0
        if service := state.capacity.service_seconds(gen.count, factor):
            await asyncio.sleep(service)
        if rejection is not None:
            job.status, job.error = "failed", f"content_policy_violation: {rejection}"
            return
        if state.faults.job_fails():
            job.status, job.error, job.retryable = "failed", "worker lost during inference", True
            return
        size = state.scaled(gen.width, gen.height)
        for index in range(gen.count):
            rendered = await state.render(gen.render_prompt, gen.seed, index, size)
            job.image_ids.append(state.keep_image(rendered.png))
        job.status = "succeeded"
        state.stats.completed += gen.count
        if job.key:
            state.stats.generated_by_key[job.key] += 1


def _job(request: web.Request) -> Job | web.Response:
    job = request.app[STATE].jobs.get(request.match_info["task_uuid"])
    if job is None:
        return responses.error(404, "No such task.", param="task_uuid", code="not_found")
    return job


async def poll(request: web.Request) -> web.Response:
    """GET /v1/tasks/{uuid} → {task_uuid, status, images, error, retryable}."""
    job = _job(request)
    if isinstance(job, web.Response):
        return job
    origin = request.url.origin()
    body: dict[str, Any] = {
        "task_uuid": job.uuid,
        "status": job.status,
        "images": [f"{origin}/v1/images/{image_id}.png" for image_id in job.image_ids],
        "error": job.error,
        "retryable": job.retryable,
    }
    return web.json_response(body)


async def cancel(request: web.Request) -> web.Response:
    """DELETE /v1/tasks/{uuid}: stop a queued or running job."""
    job = _job(request)
    if isinstance(job, web.Response):
        return job
    if job.status in ("queued", "running") and job.task is not None:
        job.task.cancel()
        job.status = "canceled"
        request.app[STATE].stats.canceled += 1
    return web.json_response({"task_uuid": job.uuid, "status": job.status})
