"""POST /v1/images/generations, the OpenAI-compatible route."""

from __future__ import annotations

import asyncio
from typing import Any

from aiohttp import web

from workers.sim import responses
from workers.sim.capacity import QueueFull
from workers.sim.state import STATE, SimState
from workers.sim.validation import Generation, Invalid, parse_generation

_BROKEN = [
    '{"created": 1700000000, "data": [{"b64_json": "iVBORw0KGgo',  # truncated JSON
    '{"created": 1700000000}',  # no data
    '{"created": 1700000000, "data": [{"b64_json": "%%% not base64 %%%"}]}',
    '{"created": 1700000000, "data": []}',  # wrong count
]


async def generations(request: web.Request) -> web.Response:
    """Generate `n` PNGs for a prompt, through the fault injector and the capacity model."""
    state = request.app[STATE]
    body = await responses.admit(request, state, _BROKEN)
    if isinstance(body, web.Response):
        return body
    try:
        gen = parse_generation(
            body, count_field="n", max_n=state.config.max_n, max_side=state.config.max_side
        )
    except Invalid as exc:
        return responses.error(400, exc.message, param=exc.param, code=exc.code)
    response_format = body.get("response_format") or "url"
    if response_format not in ("url", "b64_json"):
        return responses.error(
            400, "response_format must be url or b64_json", param="response_format"
        )
    try:
        async with state.capacity.slot():
            if service := state.capacity.service_seconds(gen.count):
                await asyncio.sleep(service)
            data = await _images(request, state, gen, response_format)
    except QueueFull as exc:
        return responses.queue_full(state, exc)
    state.stats.completed += gen.count
    if key := request.headers.get("Idempotency-Key"):
        state.stats.generated_by_key[key] += 1
    return web.json_response({"created": responses.now(), "data": data})


async def _images(
    request: web.Request, state: SimState, gen: Generation, response_format: str
) -> list[dict[str, Any]]:
    size = state.scaled(gen.width, gen.height)
    items: list[dict[str, Any]] = []
    for index in range(gen.count):
        rendered = await state.render(gen.render_prompt, gen.seed, index, size)
        if response_format == "b64_json":
            item: dict[str, Any] = {"b64_json": rendered.b64}
        else:
            image_id = state.keep_image(rendered.png)
            item = {"url": f"{request.url.origin()}/v1/images/{image_id}.png"}
        if gen.polish:
            item["revised_prompt"] = gen.render_prompt
        items.append(item)
    return items


async def image(request: web.Request) -> web.Response:
    """GET /v1/images/{id}.png: a PNG kept for `url` responses and lumina jobs."""
    png = request.app[STATE].image(request.match_info["image_id"])
    if png is None:
        return responses.error(404, "No such image.", param="image_id")
    return web.Response(body=png, content_type="image/png")
