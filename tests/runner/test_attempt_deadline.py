"""A standard attempt gets the pool's `timeout` in all, whatever its requests' own timeouts.

The runner's crew keeps that deadline (one watchdog per pool), over the generation request
and the image downloads after it alike: the standard worker keeps none of its own.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.loop.executor import Executor
from runner.loop.service import serve
from tests.runner.conftest import make_config, runner_settings, status_counts, submit
from tests.runner.test_signals import (  # noqa: F401 (provider_server is a fixture)
    ScriptedProvider,
    error_rows,
    provider_server,
)
from workers.providers.null import tiny_png

pytestmark = pytest.mark.anyio

DEADLINE = 0.4  # the standard pool's timeout: under the slow answer and the request timeout
REQUEST_TIMEOUT = 2.0  # one HTTP request's own timeout, well past the attempt's deadline
PNG = tiny_png()


async def test_a_slow_answer_past_the_pool_timeout_is_a_timeout_then_retried(
    engine: AsyncEngine,
    tmp_path: Path,
    database_url: str,
    provider_server: Callable[[ScriptedProvider], Awaitable[str]],  # noqa: F811
) -> None:
    """The first attempt is cut off at the deadline (a timeout signal), the retry completes."""
    provider = ScriptedProvider(["slow"])
    url = await provider_server(provider)
    await submit(engine, n=1, max_retries=3)
    settings = runner_settings(
        url,
        {
            "providers": {"sim": {"timeout": 30}},  # the request alone would wait 30 s
            "pools": {"standard": {"timeout": DEADLINE}},
        },
    )
    config, env = make_config(tmp_path, database_url, settings)
    executors: list[Executor] = []
    with anyio.fail_after(30):
        await serve(engine, config, env, until_idle=True, on_start=executors.append)

    assert await status_counts(engine) == {"completed": 1}
    assert provider.sent == {"slow": 1, "ok": 1}
    assert executors[0].signals["sim"].timeouts == 1
    rows = await error_rows(engine)
    assert [(kind, count) for (kind, _), (count, _) in rows.items()] == [("ProviderTimeout", 1)]
    # Cut off at the deadline: had the attempt waited for the slow answer (SLOW s), it
    # would have ended on that answer's 504 instead.
    assert "no result within the attempt's" in next(iter(rows))[1]


class SlowDownload(ScriptedProvider):
    """Answers each generation at once with image URLs; the first attempt's images never come."""

    def __init__(self, release: anyio.Event) -> None:
        super().__init__([])
        self.release = release
        self.generations: Counter[str] = Counter()  # by Idempotency-Key: one per attempt
        self.downloads: Counter[str] = Counter()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """A generation (POST) or an image download (GET /slow/… hangs, GET /img/… does not)."""
        if request.method == "POST":
            key = request.headers["Idempotency-Key"]
            self.generations[key] += 1
            # Every try within the first attempt gets slow images, the next attempt quick ones.
            where = "slow" if key == next(iter(self.generations)) else "img"
            n = int((await request.json()).get("n", 1))
            data = [{"url": f"/{where}/{key}-{i}.png"} for i in range(n)]
            return web.json_response({"data": data})
        where = request.path.split("/")[1]
        self.downloads[where] += 1
        if where == "slow":
            with anyio.move_on_after(60):  # bounded, should the test fail before releasing it
                await self.release.wait()
        return web.Response(body=PNG, content_type="image/png")


async def test_a_slow_download_after_a_quick_answer_is_cut_at_the_pool_timeout(
    engine: AsyncEngine,
    tmp_path: Path,
    database_url: str,
    provider_server: Callable[[ScriptedProvider], Awaitable[str]],  # noqa: F811
) -> None:
    """The image download hangs: the attempt ends at the deadline, not after 3 × 2 s of tries."""
    release = anyio.Event()
    provider = SlowDownload(release)
    url = await provider_server(provider)
    await submit(engine, n=1, max_retries=3)
    # Without the attempt's deadline the hung download would be tried 3 times, 2 s each.
    requests = {"timeout": REQUEST_TIMEOUT, "request_attempts": 3, "request_retry_wait": 0.01}
    settings = runner_settings(
        url, {"providers": {"sim": requests}, "pools": {"standard": {"timeout": DEADLINE}}}
    )
    config, env = make_config(tmp_path, database_url, settings)
    executors: list[Executor] = []
    try:
        with anyio.fail_after(30):
            await serve(engine, config, env, until_idle=True, on_start=executors.append)
    finally:
        release.set()

    assert await status_counts(engine) == {"completed": 1}
    # Two attempts, one generation each (both answered at once): the first attempt's
    # download was cut off at the deadline, not tried again within the attempt.
    assert list(provider.generations.values()) == [1, 1]
    assert provider.downloads == {"slow": 1, "img": 1}
    assert executors[0].signals["sim"].timeouts == 1
    rows = await error_rows(engine)
    assert [(kind, count) for (kind, _), (count, _) in rows.items()] == [("ProviderTimeout", 1)]
    assert "no result within the attempt's" in next(iter(rows))[1]
