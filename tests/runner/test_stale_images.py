"""A runner whose lease was reaped finishes late: the recorded image stays as recorded.

Two real runners on one real database and one loopback provider: the provider holds the
first attempt's response until the test lets it go, after a second runner has completed the
subtask. The stale runner then writes its image and reports; the fence drops its outcome.
"""

from __future__ import annotations

import base64
import hashlib
import json
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from runner.loop.executor import Executor
from runner.loop.service import serve
from tests.db.conftest import reap, silence
from tests.runner.conftest import (
    assert_counters_consistent,
    make_config,
    merge_settings,
    runner_settings,
    submit,
    wait_until,
)
from workers.sim.render import render_png

pytestmark = pytest.mark.anyio


class GatedProvider:
    """OpenAI-compatible: attempt 1 is answered only once `release` is set; others at once."""

    def __init__(self) -> None:
        self.first_arrived = anyio.Event()
        self.release = anyio.Event()
        self.answered: list[str] = []

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers.get("Idempotency-Key", "")
        attempt = key.rsplit("-", 1)[-1]
        if attempt == "1":
            self.first_arrived.set()
            await self.release.wait()
        # Each attempt draws a different picture, so a late overwrite would show.
        png = render_png(f"attempt {attempt}", 1, 0, 16, 16)
        self.answered.append(key)
        body = {"data": [{"b64_json": base64.b64encode(png).decode()}]}
        return web.json_response(body)


async def recorded(engine: AsyncEngine, subtask_id: int) -> dict[str, Any]:
    """The subtask's row."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text("SELECT status, attempts, result FROM subtasks WHERE id = :id"),
                {"id": subtask_id},
            )
        ).mappings()
        return dict(row.one())


async def test_a_stale_holder_finishing_late_never_changes_the_recorded_image(
    engine: AsyncEngine,
    tmp_path: Path,
    database_url: str,
    aiohttp_server_factory: Callable[..., Awaitable[str]],
) -> None:
    """The late attempt's outcome is dropped, its file removed, the recorded sha256 holds."""
    provider = GatedProvider()
    url = await aiohttp_server_factory(provider.handle)
    task_id = await submit(engine, n=1, provider="gate")
    async with engine.connect() as connection:
        subtask_id = int(await connection.scalar(text("SELECT id FROM subtasks")))
    base = merge_settings(
        runner_settings(url), {"providers": {"gate": {"type": "openai", "base_url": url}}}
    )
    # The stale runner neither heartbeats nor reaps within the test.
    stale_settings = merge_settings(
        base, {"runner": {"heartbeat_interval": 60, "stale_after": 600, "lease": 60}}
    )
    stale_config, env = make_config(tmp_path, database_url, stale_settings)
    fresh_config, _ = make_config(tmp_path, database_url, base)
    stale: list[Executor] = []
    folder = tmp_path / "out" / str(task_id)

    async with anyio.create_task_group() as group:
        group.start_soon(lambda: serve(engine, stale_config, env, on_start=stale.append))
        with anyio.fail_after(30):
            await provider.first_arrived.wait()
        # Its runner stops answering (as far as the database can tell): its rows are released.
        await silence(engine, stale[0].executor_id)
        assert len(await reap(PgStore(engine))) == 1
        with anyio.fail_after(60):
            await serve(engine, fresh_config, env, until_idle=True)
        done = await recorded(engine, subtask_id)
        assert (done["status"], done["attempts"]) == ("completed", 2)
        (image,) = done["result"]["images"]
        path = Path(image["path"])
        assert path.parent == folder
        assert hashlib.sha256(path.read_bytes()).hexdigest() == image["sha256"]

        # The stale attempt finishes now: it writes its image and reports a completion.
        provider.release.set()

        async def stale_outcome_settled() -> bool:
            return len(provider.answered) == 2 and not stale[0].held_ids

        await wait_until(stale_outcome_settled, timeout=30)
        stale[0].request_stop()

    assert provider.answered == [f"imgrun-{subtask_id}-2", f"imgrun-{subtask_id}-1"]
    after = await recorded(engine, subtask_id)
    assert after == done, "the late outcome changed the recorded row"
    assert hashlib.sha256(path.read_bytes()).hexdigest() == image["sha256"]
    assert path.read_bytes() == render_png("attempt 2", 1, 0, 16, 16)
    # Only the recorded attempt's file is left: the stale one removed its own.
    assert sorted(p.name for p in folder.iterdir()) == [path.name]
    await assert_counters_consistent(engine)
    assert json.dumps(after["result"]).count(".png") == 1
