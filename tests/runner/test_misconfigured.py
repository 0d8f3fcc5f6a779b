"""A provider that refuses our credentials is paused loudly; its subtasks are not burned."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.loop.service import serve
from tests.runner.conftest import (
    make_config,
    runner_settings,
    submit,
    wait_until,
)
from workers.sim.app import RunningSim

pytestmark = pytest.mark.anyio

LIMIT = 4


async def test_bad_credentials_pause_the_provider_and_spare_its_subtasks(
    engine: AsyncEngine,
    sim: RunningSim,
    aiohttp_server_factory: Any,
    tmp_path: Path,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """401s: one claim's worth of requests, then none; nothing failed; one loud error."""
    refused = 0

    async def unauthorized(_: web.Request) -> web.Response:
        nonlocal refused
        refused += 1
        return web.json_response({"error": {"message": "Incorrect API key"}}, status=401)

    bad_url = await aiohttp_server_factory(unauthorized)
    bad_task = await submit(engine, name="bad", n=20, provider="bad")
    good_task = await submit(engine, name="good", n=30, provider="sim")
    settings = runner_settings(
        sim.url,
        {
            "providers": {"bad": {"type": "openai", "base_url": bad_url, "request_attempts": 1}},
            "pools": {"standard": {"initial": LIMIT, "max": LIMIT}},
            "runner": {"misconfigured_pause": 120.0},
        },
    )
    config, env = make_config(tmp_path, database_url, settings)
    executors: list[Any] = []

    async def good_done() -> bool:
        async with engine.connect() as connection:
            status = await connection.scalar(
                text("SELECT status FROM tasks WHERE id = :id"), {"id": good_task}
            )
        return bool(status == "completed")

    with caplog.at_level(logging.INFO):
        async with anyio.create_task_group() as group:
            group.start_soon(lambda: serve(engine, config, env, on_start=executors.append))
            await wait_until(good_done, timeout=60)
            executors[0].request_stop()

    # At most the slots that were in flight when the first 401 came back ever asked.
    assert 1 <= refused <= LIMIT
    async with engine.connect() as connection:
        rows = (
            await connection.execute(
                text(
                    "SELECT status, attempts, retry_count, deferrals, error FROM subtasks"
                    " WHERE task_id = :id"
                ),
                {"id": bad_task},
            )
        ).all()
    assert {row.status for row in rows} == {"pending"}  # none failed, none held
    assert {(row.attempts, row.retry_count, row.deferrals) for row in rows} == {(0, 0, 0)}
    assert sum("Misconfigured" in (row.error or "") for row in rows) == refused
    errors = [r for r in caplog.records if r.levelno == logging.ERROR]
    assert len(errors) == 1 and "provider bad refused us" in errors[0].getMessage()
    assert "[providers.bad]" in errors[0].getMessage()
