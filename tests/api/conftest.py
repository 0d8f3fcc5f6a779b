"""API fixtures: the real app on a free loopback port, a token, a client, a webhook receiver."""

from __future__ import annotations

import contextlib
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from db import api_queries
from db.store import PgStore
from runner.alerts.signing import SIGNATURE_HEADER, verify
from runner.api.app import build_app
from runner.api.auth import hash_token, new_token
from runner.config import Config, Environment
from runner.loop.service import output_dir
from runner.serving import IDLE_TIMEOUT, app_runner

# `sim` and `start_sim` are fixtures: importing them here makes them this suite's too.
from tests.runner.conftest import make_config, runner_settings, sim, start_sim
from workers.sim.app import RunningSim

ALL_EVENTS = ["task.finished", "runner.lost", "provider.degraded", "error.new"]
SECRET = "whsec-test-3b9f1e"


@dataclass
class Api:
    """A running API: its base URL, an authorised client, and what it was built from."""

    url: str
    token: str
    client: aiohttp.ClientSession
    config: Config
    env: Environment
    images: Path


ApiFactory = Callable[..., Awaitable[Api]]


@pytest.fixture
async def token(engine: AsyncEngine) -> str:
    """A valid bearer token, named 'tester'."""
    value = new_token()
    assert await api_queries.create_token(engine, "tester", hash_token(value))
    return value


@pytest.fixture
async def start_api(
    engine: AsyncEngine, tmp_path: Path, database_url: str, token: str
) -> AsyncIterator[ApiFactory]:
    """`await start_api(settings)`: the app with these config overrides, and a client."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(
            settings: dict[str, Any] | None = None,
            sim_url: str = "",
            idle_timeout: float = IDLE_TIMEOUT,
        ) -> Api:
            config, env = make_config(
                tmp_path, database_url, runner_settings(sim_url or "http://127.0.0.1:9", settings)
            )
            images = output_dir(config, env)
            app = build_app(PgStore(engine), config, images)
            runner = app_runner(app, idle_timeout=idle_timeout)
            await runner.setup()
            stack.push_async_callback(runner.cleanup)
            await web.TCPSite(runner, "127.0.0.1", 0).start()
            url = f"http://127.0.0.1:{runner.addresses[0][1]}"
            client = await stack.enter_async_context(
                aiohttp.ClientSession(base_url=url, headers={"Authorization": f"Bearer {token}"})
            )
            return Api(url, token, client, config, env, images)

        yield start


@pytest.fixture
async def api(start_api: ApiFactory) -> Api:
    """The API with the default test config."""
    return await start_api()


@pytest.fixture
async def api_with_sim(start_api: ApiFactory, sim: RunningSim) -> Api:
    """The API whose config has the test's sim as provider `sim`."""
    return await start_api(sim_url=sim.url)


@dataclass
class Delivery:
    """One request the receiver got."""

    body: bytes
    headers: dict[str, str]
    status: int  # what the receiver answered
    at: float  # time.monotonic() on arrival

    @property
    def signed(self) -> bool:
        """The signature matches the raw body under the shared secret."""
        return verify(SECRET, self.body, self.headers.get(SIGNATURE_HEADER))


@dataclass
class Receiver:
    """A real aiohttp webhook receiver on loopback that can be told to fail."""

    url: str
    deliveries: list[Delivery] = field(default_factory=list)
    fail_next: int = 0  # answer 500 to this many requests first
    arrived: anyio.Event = field(default_factory=anyio.Event)

    def accepted(self) -> list[Delivery]:
        """The deliveries it answered 2xx."""
        return [d for d in self.deliveries if d.status < 300]

    def nudge(self) -> None:
        """Wake whoever waits for the next delivery."""
        self.arrived.set()
        self.arrived = anyio.Event()


@pytest.fixture
async def receiver() -> AsyncIterator[Receiver]:
    """A webhook receiver at <url>/hook."""
    holder: list[Receiver] = []

    async def hook(request: web.Request) -> web.Response:
        me = holder[0]
        status = 500 if me.fail_next > 0 else 200
        me.fail_next = max(0, me.fail_next - 1)
        body = await request.read()
        me.deliveries.append(Delivery(body, dict(request.headers), status, time.monotonic()))
        me.nudge()
        return web.Response(status=status)

    app = web.Application()
    app.router.add_post("/hook", hook)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    holder.append(Receiver(f"http://127.0.0.1:{runner.addresses[0][1]}/hook"))
    try:
        yield holder[0]
    finally:
        await runner.cleanup()


def alert_settings(url: str, **alerts: Any) -> dict[str, Any]:
    """Config overrides: one webhook to `url` for every event, fast schedule, plus `alerts`."""
    hook = {"url": url, "secret_env": "HOOK_SECRET", "events": ALL_EVENTS, "timeout": 5}
    base = {"webhooks": [hook], "interval": 0.05, "retry_base": 0.1, "lease": 10}
    return {"alerts": {**base, **alerts}}


__all__ = ["sim", "start_sim"]


def with_secret(env: Environment) -> Environment:
    """The environment with the webhook's secret variable set."""
    return env.model_copy(update={"secrets": {**env.secrets, "HOOK_SECRET": SECRET}})
