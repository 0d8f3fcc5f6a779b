"""The sim's aiohttp application and the ways to run it."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from dataclasses import dataclass

import anyio
from aiohttp import web
from aiohttp.typedefs import Handler

from workers.sim import admin, lumina_api, openai_api
from workers.sim.config import SimConfig
from workers.sim.state import STATE, SimState

log = logging.getLogger(__name__)


@web.middleware
async def _count(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Count API requests and the in-flight gauge; /_sim routes are not counted."""
    if request.path.startswith("/_sim/"):
        return await handler(request)
    state = request.app[STATE]
    state.refresh()
    state.stats.enter()
    try:
        response = await handler(request)
    except web.HTTPException as exc:  # e.g. 404 for an unknown path: still an API response
        exc.headers.update(state.ratelimit_headers())
        raise
    finally:
        state.stats.leave()
    # Every API response tells the client its request budget, as OpenAI's do.
    response.headers.update(state.ratelimit_headers())
    return response


async def _follow_schedule(app: web.Application) -> AsyncIterator[None]:
    """Cleanup context: apply capacity steps on time for the app's lifetime."""
    task = asyncio.create_task(app[STATE].follow_schedule())
    yield
    task.cancel()
    with contextlib.suppress(asyncio.CancelledError):
        await task


async def _close(app: web.Application) -> None:
    await app[STATE].close()


def build_app(config: SimConfig, *, clock: Callable[[], float] | None = None) -> web.Application:
    """An aiohttp app speaking the OpenAI images API and the lumina queue protocol.

    `clock` (monotonic seconds) drives the rpm bucket and the capacity schedule; tests pass a
    fake one to step time exactly.
    """
    app = web.Application(middlewares=[_count])
    app[STATE] = SimState(config) if clock is None else SimState(config, clock)
    app.router.add_post("/v1/images/generations", openai_api.generations)
    app.router.add_get("/v1/images/{image_id}.png", openai_api.image)
    app.router.add_post("/v1/tasks", lumina_api.submit)
    app.router.add_get("/v1/tasks/{task_uuid}", lumina_api.poll)
    app.router.add_delete("/v1/tasks/{task_uuid}", lumina_api.cancel)
    app.router.add_get("/_sim/stats", admin.stats)
    app.router.add_post("/_sim/reset", admin.reset)
    app.router.add_get("/_sim/config", admin.get_config)
    app.router.add_post("/_sim/config", admin.post_config)
    app.cleanup_ctx.append(_follow_schedule)
    # on_shutdown runs before aiohttp waits for handlers, so hung ones are released first.
    app.on_shutdown.append(_close)
    return app


@dataclass(frozen=True)
class RunningSim:
    """A listening sim: its port, base URL and app (for reading state in tests)."""

    port: int
    url: str
    app: web.Application


@contextlib.asynccontextmanager
async def running(
    config: SimConfig, *, clock: Callable[[], float] | None = None
) -> AsyncIterator[RunningSim]:
    """Listen for the duration of the block; port 0 picks a free port."""
    app = build_app(config, clock=clock)
    # handler_cancellation: a client that gives up on a hung request frees its handler.
    runner = web.AppRunner(app, access_log=None, handler_cancellation=True, shutdown_timeout=5)
    await runner.setup()
    try:
        site = web.TCPSite(runner, config.host, config.port)
        await site.start()
        port = runner.addresses[0][1]
        yield RunningSim(port=port, url=f"http://{config.host}:{port}", app=app)
    finally:
        # Shielded: under anyio a cancelled scope would otherwise abort the cleanup midway
        # and leave the port listening.
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


async def serve(config: SimConfig, *, ready: Callable[[int], None] | None = None) -> None:
    """Run the sim until cancelled, reporting the bound port through `ready`."""
    async with running(config) as sim:
        log.info("sim listening on %s", sim.url)
        if ready is not None:
            ready(sim.port)
        await asyncio.Event().wait()


def run(config: SimConfig, *, ready: Callable[[int], None] | None = None) -> None:
    """Blocking entry point for `imgrun sim`; returns quietly on Ctrl-C."""
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(config, ready=ready))
