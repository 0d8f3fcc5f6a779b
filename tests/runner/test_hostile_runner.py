"""Hostile providers through the whole runner: broken answers never become completed subtasks."""

from __future__ import annotations

import base64
import itertools
import time
from pathlib import Path
from typing import Any

import pytest
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.runner.conftest import (
    assert_counters_consistent,
    runner_settings,
    status_counts,
    submit,
)
from tests.runner.test_runner import rows, run_until_idle
from workers.sim.render import render_png

pytestmark = pytest.mark.anyio

PNG = render_png("x", 1, 0, 8, 8)


def provider(url: str, kind: str = "openai", **extra: Any) -> dict[str, Any]:
    """Runner settings with provider `evil` at `url`, one try per HTTP step."""
    section = {"type": kind, "base_url": url, "request_attempts": 1, **extra}
    return runner_settings(url, {"providers": {"evil": section}})


async def test_truncated_pngs_fail_the_subtask_and_leave_no_file(
    engine: AsyncEngine, tmp_path: Path, database_url: str, aiohttp_server_factory: Any
) -> None:
    """The report's case end to end: half a PNG each time; retried, then failed, never stored."""
    half = base64.b64encode(PNG[: len(PNG) // 2]).decode()

    async def handle(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"b64_json": half}]})

    url = await aiohttp_server_factory(handle)
    await submit(engine, n=2, provider="evil", max_retries=1)
    await run_until_idle(engine, tmp_path, database_url, provider(url))

    assert await status_counts(engine) == {"failed": 2}
    failed = await rows(engine, "SELECT attempts, error, result FROM subtasks")
    assert all(r["attempts"] == 2 and r["result"] is None for r in failed)
    assert all("unreadable image" in r["error"] for r in failed)
    assert list((tmp_path / "out").rglob("*.png")) == []
    await assert_counters_consistent(engine)


async def test_a_job_with_no_images_is_not_completed(
    engine: AsyncEngine, tmp_path: Path, database_url: str, aiohttp_server_factory: Any
) -> None:
    """A lumina job "succeeded" with an empty image list used to complete with no images."""
    submitted: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        if request.method == "POST":
            submitted.append(request.headers["Idempotency-Key"])
            return web.json_response({"task_uuid": f"job-{len(submitted)}"}, status=202)
        return web.json_response({"status": "succeeded", "images": []})

    url = await aiohttp_server_factory(handle)
    await submit(engine, n=1, pool="lumina", provider="evil", max_retries=1)
    await run_until_idle(engine, tmp_path, database_url, provider(url, kind="lumina"))

    assert await status_counts(engine) == {"failed": 1}
    (row,) = await rows(engine, "SELECT error FROM subtasks")
    assert "0 images for a batch of 1" in row["error"]
    # JobFailed: the retry submitted a new job rather than re-reading the empty one.
    assert len(submitted) == 2 and submitted[0] != submitted[1]


async def test_retry_after_zero_cannot_storm(
    engine: AsyncEngine, tmp_path: Path, database_url: str, aiohttp_server_factory: Any
) -> None:
    """429 + Retry-After: 0 forever: each deferral still waits >= 1 s (MIN_DEFERRAL)."""
    arrivals: list[float] = []

    async def handle(_: web.Request) -> web.Response:
        arrivals.append(time.monotonic())
        return web.json_response(
            {"error": {"message": "slow down"}}, status=429, headers={"Retry-After": "0"}
        )

    url = await aiohttp_server_factory(handle)
    await submit(engine, n=1, provider="evil", max_retries=0)
    settings = provider(url)
    settings["runner"]["rate_limit_deferrals"] = 2
    await run_until_idle(engine, tmp_path, database_url, settings)

    assert await status_counts(engine) == {"failed": 1}
    assert len(arrivals) == 3  # the attempt, and one after each of the two deferrals
    gaps = [b - a for a, b in itertools.pairwise(arrivals)]
    # 1 s minus the clock skew between PostgreSQL's now() and ours: far from 0 either way.
    assert min(gaps) >= 0.9, gaps
