"""The sim's own routes: /_sim/stats, /_sim/reset and /_sim/config (read it, change it live)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated, Any

from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from workers.sim import responses
from workers.sim.config import MAX_RPM
from workers.sim.schedule import MAX_CAPACITY
from workers.sim.state import STATE

MAX_CONFIG_BODY = 4096  # bytes; six numbers fit in far less


class LiveChanges(BaseModel):
    """A POST /_sim/config body: any of the live settings, each checked on its own."""

    # strict: true is not 1, "5" is not 5; NaN and Infinity (which Python's json reads) fail.
    model_config = ConfigDict(extra="forbid", strict=True, allow_inf_nan=False, frozen=True)

    # None means "not given" (dropped by model_dump(exclude_unset=True)); an explicit null is
    # refused by _not_null below.
    capacity: Annotated[int, Field(ge=1, le=MAX_CAPACITY)] | None = None
    service_ms: Annotated[float, Field(ge=0, le=3_600_000)] | None = None
    queue_limit: Annotated[int, Field(ge=0, le=1_000_000)] | None = None
    rpm: Annotated[int, Field(ge=0, le=MAX_RPM)] | None = None
    error_rate: Annotated[float, Field(ge=0, le=1)] | None = None
    rate_limit_rate: Annotated[float, Field(ge=0, le=1)] | None = None

    @field_validator("*", mode="before")
    @classmethod
    def _not_null(cls, value: Any) -> Any:
        if value is None:
            raise ValueError("must be a number, not null")
        return value


def _first_problem(exc: ValidationError) -> str:
    error = exc.errors()[0]
    where = ".".join(str(part) for part in error["loc"]) or "body"
    if error["type"] == "extra_forbidden":
        return f"{where}: unknown setting (allowed: {', '.join(LiveChanges.model_fields)})"
    if error["type"] == "model_type":
        return "body must be a JSON object"
    return f"{where}: {error['msg'].removeprefix('Value error, ')}"


async def _read_bounded(request: web.Request, timeout: float) -> bytes | web.Response:
    if (request.content_length or 0) > MAX_CONFIG_BODY:
        return responses.error(413, f"body is larger than {MAX_CONFIG_BODY} bytes")
    body = bytearray()
    try:
        async with asyncio.timeout(timeout):
            # read(n) returns what has arrived so far; loop to the end, never past the cap.
            while len(body) <= MAX_CONFIG_BODY:
                chunk = await request.content.read(MAX_CONFIG_BODY + 1 - len(body))
                if not chunk:
                    break
                body += chunk
    except TimeoutError:
        return responses.error(408, f"body did not arrive within {timeout:g}s")
    if len(body) > MAX_CONFIG_BODY:  # chunked bodies carry no Content-Length
        return responses.error(413, f"body is larger than {MAX_CONFIG_BODY} bytes")
    return bytes(body)


async def get_config(request: web.Request) -> web.Response:
    """GET /_sim/config: the live settings now (the schedule may have moved capacity)."""
    state = request.app[STATE]
    state.refresh()
    return web.json_response(state.live_settings())


async def post_config(request: web.Request) -> web.Response:
    """POST /_sim/config: change any live settings at once, or none (400 naming the problem)."""
    state = request.app[STATE]
    body = await _read_bounded(request, state.config.admin_body_timeout_s)
    if isinstance(body, web.Response):
        return body
    try:
        data: Any = json.loads(body)
        changes = LiveChanges.model_validate(data).model_dump(exclude_unset=True)
    except (ValueError, RecursionError) as exc:  # JSON, UTF-8 and validation errors
        message = _first_problem(exc) if isinstance(exc, ValidationError) else "body is not JSON"
        return responses.error(400, message)
    state.refresh()
    try:
        state.reconfigure(changes)
    except ValueError as exc:  # cross-field rules, e.g. the fault rates' sum
        return responses.error(400, str(exc))
    return web.json_response(state.live_settings())


async def stats(request: web.Request) -> web.Response:
    """GET /_sim/stats: counters, gauges and the high-water mark of requests in flight."""
    state = request.app[STATE]
    state.refresh()
    return web.json_response(
        state.stats.to_json(queued=state.capacity.waiting, busy=state.capacity.busy)
    )


async def reset(request: web.Request) -> web.Response:
    """POST /_sim/reset: zero the counters (settings stay as they are)."""
    request.app[STATE].stats.reset()
    return web.json_response({"ok": True})
