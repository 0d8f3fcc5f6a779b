"""Status, errors, health and the OpenAPI document."""

from __future__ import annotations

import anyio
from aiohttp import web

from runner.api.context import CONFIG, STORE
from runner.api.openapi import document
from runner.api.params import int_param
from runner.api.tasks import json_response
from runner.status_read import load_status

routes = web.RouteTableDef()

HEALTH_TIMEOUT = 3.0  # seconds: a load balancer's probe must get an answer, even a bad one


@routes.get("/v1/status")
async def status(request: web.Request) -> web.Response:
    """The same snapshot as `imgrun status --json`."""
    snapshot = await load_status(
        request.app[STORE], stale_after=request.app[CONFIG].runner.stale_after
    )
    return json_response(snapshot.to_json())


@routes.get("/v1/errors")
async def errors(request: web.Request) -> web.Response:
    """Aggregated errors, most frequent first, like `imgrun errors --json`."""
    limit = int_param(request.query, "limit", default=20, low=1, high=1000)
    assert limit is not None
    return json_response(await request.app[STORE].top_errors(limit))


@routes.get("/v1/openapi.json")
async def openapi(request: web.Request) -> web.Response:
    """This API described as OpenAPI 3.1."""
    return web.json_response(document())


@routes.get("/healthz")
async def healthz(request: web.Request) -> web.Response:
    """No auth: 200 when the database answers, 503 when it does not."""
    reachable = False
    with anyio.move_on_after(HEALTH_TIMEOUT):
        try:
            reachable = await request.app[STORE].ping()
        except Exception:
            reachable = False
    body = {"status": "ok" if reachable else "unavailable", "database": reachable}
    return web.json_response(body, status=200 if reachable else 503)
