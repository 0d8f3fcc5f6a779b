"""Small builders shared by the workers tests."""

from __future__ import annotations

import contextlib
import socket
from typing import Any

import aiohttp

from workers.providers import (
    ProviderConfig,
    QueueProvider,
    RequestRetryPolicy,
    StandardProvider,
    build_provider,
)
from workers.sim import RunningSim
from workers.types import ImageRequest


def request(subtask_id: int = 1, **overrides: Any) -> ImageRequest:
    """An ImageRequest with test defaults."""
    fields: dict[str, Any] = {
        "task_id": 10,
        "subtask_id": subtask_id,
        "attempt": 0,
        "prompt": "a fox in a beret",
        "seed": 42,
        **overrides,
    }
    return ImageRequest(**fields)


def standard(
    sim: RunningSim,
    session: aiohttp.ClientSession,
    retry: RequestRetryPolicy,
    *,
    timeout: float = 5.0,
    api_key: str | None = None,
) -> StandardProvider:
    """The sim's standard-pool adapter."""
    config = ProviderConfig(name="sim", type="sim", base_url=sim.url, timeout=timeout)
    return build_provider(config, session, api_key=api_key, pool="standard", retry=retry)


def queue(
    sim: RunningSim,
    session: aiohttp.ClientSession,
    retry: RequestRetryPolicy,
    *,
    timeout: float = 5.0,
) -> QueueProvider:
    """The sim's lumina-pool adapter."""
    config = ProviderConfig(name="sim", type="sim", base_url=sim.url, timeout=timeout)
    return build_provider(config, session, api_key=None, pool="lumina", retry=retry)


def blackhole() -> tuple[socket.socket, list[socket.socket]]:
    """A loopback listener whose accept queue is full: connects to it hang, unanswered."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(0)
    fillers = []
    for _ in range(3):
        filler = socket.socket()
        filler.setblocking(False)
        with contextlib.suppress(BlockingIOError):  # non-blocking: the SYN is out
            filler.connect(server.getsockname())
        fillers.append(filler)
    return server, fillers
