"""Time bounds on requests: a slow or stalled client cannot hold a handler open."""

from __future__ import annotations

import anyio
from aiohttp import web

from runner.api.context import CONFIG
from runner.api.errors import ApiError, Handler

# Streams bound themselves ([api] event_stream_seconds); everything else gets request_timeout.
UNTIMED = frozenset({"/v1/events"})


@web.middleware
async def timeout_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Give up on a request (reading its body included) after [api] request_timeout: 408."""
    if request.path in UNTIMED:
        return await handler(request)
    with anyio.move_on_after(request.app[CONFIG].api.request_timeout) as scope:
        return await handler(request)
    assert scope.cancelled_caught
    raise ApiError(
        408, f"request not finished within {request.app[CONFIG].api.request_timeout:g} s"
    )
