"""OpenAI-shaped error bodies and the fault responses shared by both APIs."""

from __future__ import annotations

import json
import time
from typing import Any

from aiohttp import web

from workers.sim.capacity import QueueFull
from workers.sim.faults import Fault
from workers.sim.state import SimState


def error(
    status: int,
    message: str,
    *,
    type_: str = "invalid_request_error",
    param: str | None = None,
    code: str | None = None,
    headers: dict[str, str] | None = None,
) -> web.Response:
    """An error in OpenAI's `{"error": {message, type, param, code}}` shape."""
    body = {"error": {"message": message, "type": type_, "param": param, "code": code}}
    return web.json_response(body, status=status, headers=headers)


def rate_limited(state: SimState, retry_after: int, message: str) -> web.Response:
    """429 with Retry-After in whole seconds."""
    state.stats.rate_limited += 1
    return error(
        429,
        message,
        type_="requests",
        code="rate_limit_exceeded",
        headers={"Retry-After": str(retry_after)},
    )


def queue_full(state: SimState, exc: QueueFull) -> web.Response:
    """429 because every slot is busy and the queue is at its limit."""
    return rate_limited(state, exc.retry_after, "Server is at capacity; retry later.")


def malformed(body: str) -> web.Response:
    """200 with a body the client cannot use."""
    return web.Response(text=body, content_type="application/json")


async def injected(state: SimState, broken_bodies: list[str]) -> web.Response | None:
    """The response for this request's injected fault, or None to serve it normally."""
    fault = state.faults.draw()
    if fault is None:
        return None
    state.stats.fault(fault)
    if fault is Fault.ERROR:
        return error(
            500, "The server had an error while processing your request.", type_="server_error"
        )
    if fault is Fault.RATE_LIMIT:
        return rate_limited(state, state.config.retry_after_s, "Rate limit reached.")
    if fault is Fault.HANG:
        # Never answer on our own; the client's timeout (handler cancellation) or shutdown ends it.
        await state.stopping.wait()
        return error(503, "Server shutting down.", type_="server_error")
    return malformed(broken_bodies[state.faults.malformed_variant(len(broken_bodies))])


async def json_body(request: web.Request) -> dict[str, Any] | web.Response:
    """The request's JSON object, or a 400 response."""
    try:
        body = await request.json()
    except (json.JSONDecodeError, UnicodeDecodeError):
        return error(400, "We could not parse the JSON body of your request.")
    if not isinstance(body, dict):
        return error(400, "The request body must be a JSON object.")
    return body


def now() -> int:
    """Unix time in seconds, as OpenAI's `created`."""
    return int(time.time())


async def admit(
    request: web.Request, state: SimState, broken_bodies: list[str]
) -> dict[str, Any] | web.Response:
    """A POST's common start: count its key, spend an rpm token, maybe inject a fault, parse."""
    key = request.headers.get("Idempotency-Key")
    if key:
        state.stats.by_key[key] += 1
    if (wait := state.take_request()) is not None:
        return rate_limited(state, wait, "Rate limit reached for requests per minute.")
    # The fault check is skipped outright when no fault is configured: this is the hot path.
    if state.faults.active and (fault := await injected(state, broken_bodies)) is not None:
        return fault
    return await json_body(request)
