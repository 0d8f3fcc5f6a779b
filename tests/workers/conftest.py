"""Fixtures for the workers suite: a sim on a free loopback port, a session, a store."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from workers.providers import RequestRetryPolicy, make_session
from workers.sim import RunningSim, SimConfig, running
from workers.storage import ImageStore

SimFactory = Callable[..., Awaitable[RunningSim]]


class RecordingSleep:
    """An instant sleep that remembers every requested delay."""

    def __init__(self) -> None:
        self.delays: list[float] = []

    async def __call__(self, delay: float) -> None:
        """Record instead of waiting."""
        self.delays.append(delay)


@pytest.fixture
def fast_retry() -> RequestRetryPolicy:
    """Three tries with millisecond waits, so retry tests take no time."""
    return RequestRetryPolicy(attempts=3, wait_initial=0.001, wait_max=0.002, jitter=0.0)


@pytest.fixture
async def sim_factory() -> AsyncIterator[SimFactory]:
    """Start sims on port 0 with SimConfig overrides; all stop at test end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(**overrides: Any) -> RunningSim:
            config = SimConfig(**{"port": 0, "service_ms": 0.0, **overrides})
            return await stack.enter_async_context(running(config))

        yield start


@pytest.fixture
async def sim(sim_factory: SimFactory) -> RunningSim:
    """A fault-free, instant sim."""
    return await sim_factory()


@pytest.fixture
async def session() -> AsyncIterator[aiohttp.ClientSession]:
    """The shared client session, as the runner makes it."""
    async with make_session(limit=50) as client:
        yield client


@pytest.fixture
def store(tmp_path: Path) -> ImageStore:
    """An image store in a temporary directory."""
    return ImageStore(tmp_path / "out")


async def sim_stats(session: aiohttp.ClientSession, sim: RunningSim) -> dict[str, Any]:
    """GET /_sim/stats."""
    async with session.get(f"{sim.url}/_sim/stats") as resp:
        stats: dict[str, Any] = await resp.json()
        return stats


ServeApp = Callable[[Any], Awaitable[str]]


@pytest.fixture
async def serve_app() -> AsyncIterator[ServeApp]:
    """Serve a scripted aiohttp app on a free loopback port; returns its base URL."""
    from aiohttp.test_utils import TestServer

    servers: list[TestServer] = []

    async def start(app: Any) -> str:
        server = TestServer(app, host="127.0.0.1")
        await server.start_server()
        servers.append(server)
        return str(server.make_url("/")).rstrip("/")

    yield start
    for server in servers:
        await server.close()
