"""The runner in-process against a real database and a real HTTP backend on loopback."""

from __future__ import annotations

import base64
import itertools
import logging
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from PIL import Image
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import queries
from runner.loop.executor import Executor
from runner.loop.service import serve
from tests.runner.conftest import (
    assert_counters_consistent,
    make_config,
    runner_settings,
    sim_stats,
    status_counts,
    submit,
    wait_until,
)
from workers.providers.null import tiny_png
from workers.sim.app import RunningSim

pytestmark = pytest.mark.anyio


async def run_until_idle(
    engine: AsyncEngine, tmp_path: Path, database_url: str, settings: dict[str, Any]
) -> Executor:
    """One in-process runner until nothing is left to do."""
    config, env = make_config(tmp_path, database_url, settings)
    with anyio.fail_after(60):
        return await serve(engine, config, env, until_idle=True)


async def rows(engine: AsyncEngine, sql: str, **params: Any) -> list[dict[str, Any]]:
    """Query helper."""
    async with engine.connect() as connection:
        return [dict(r) for r in (await connection.execute(text(sql), params)).mappings()]


async def test_both_pools_complete_and_tasks_roll_up(
    engine: AsyncEngine, sim: RunningSim, tmp_path: Path, database_url: str
) -> None:
    """Standard and lumina subtasks complete once each; PNGs exist; counters and status roll up."""
    standard = await submit(engine, name="std", n=30)
    lumina = await submit(engine, name="lum", n=5, pool="lumina")
    executor = await run_until_idle(engine, tmp_path, database_url, runner_settings(sim.url))

    assert await status_counts(engine) == {"completed": 35}
    await assert_counters_consistent(engine)
    tasks = {t["id"]: t for t in await rows(engine, "SELECT * FROM tasks")}
    for task_id, total in ((standard, 30), (lumina, 5)):
        assert tasks[task_id]["status"] == "completed"
        assert tasks[task_id]["completed_subtasks"] == total
        assert tasks[task_id]["finished_at"] is not None
    results = await rows(engine, "SELECT id, task_id, attempts, result, external_id FROM subtasks")
    assert {r["attempts"] for r in results} == {1}
    for row in results:
        image = row["result"]["images"][0]
        path = Path(image["path"])
        assert path == tmp_path / "out" / str(row["task_id"]) / f"{row['id']}-1-0.png"
        with Image.open(path) as png:
            assert png.format == "PNG" and png.size == (image["width"], image["height"])
    assert all(r["external_id"] for r in results if r["task_id"] == lumina)
    stats = await sim_stats(sim)
    assert sorted(stats["submissions_by_subtask"].values()) == [1] * 5
    executors = await rows(engine, "SELECT id, state, pools FROM executors")
    # The final snapshot: every pool's state as the runner holds it (the completion rollup's
    # clock moves on, so it is compared by what it counted).
    stored = executors[0].pop("pools")
    rollups = {name: pool.pop("completions") for name, pool in stored.items()}
    now = executor.snapshot()
    for pool in now.values():
        pool.pop("completions")
    assert executors == [{"id": executor.identity.executor_id, "state": "stopped"}]
    assert stored == now
    counted = {name: sum(r["subtasks"]) for name, r in rollups.items()}
    assert counted == {"standard": 30, "lumina": 5}


async def test_non_retryable_error_fails_once_and_is_aggregated(
    engine: AsyncEngine, sim: RunningSim, tmp_path: Path, database_url: str
) -> None:
    """A content-policy 400 fails the subtask at its first attempt; error_logs counts each."""
    task_id = await submit(engine, n=4, prompt="a forbidden {x}")
    await run_until_idle(engine, tmp_path, database_url, runner_settings(sim.url))

    assert await status_counts(engine) == {"failed": 4}
    subtasks = await rows(engine, "SELECT attempts, retry_count, error FROM subtasks")
    assert {(s["attempts"], s["retry_count"]) for s in subtasks} == {(1, 0)}
    assert all(s["error"].startswith("PermanentError") for s in subtasks)
    errors = await rows(engine, "SELECT error_type, count FROM error_logs")
    assert errors == [{"error_type": "PermanentError", "count": 4}]
    assert sorted((await sim_stats(sim))["by_key"].values()) == [1, 1, 1, 1]
    task = (
        await rows(engine, "SELECT status, failed_subtasks FROM tasks WHERE id = :id", id=task_id)
    )[0]
    assert task == {"status": "failed", "failed_subtasks": 4}

    requeued = await queries.retry_task(engine, task_id)
    assert requeued == {"task_id": task_id, "requeued": 4}
    assert await status_counts(engine) == {"pending": 4}
    task = (
        await rows(engine, "SELECT status, failed_subtasks FROM tasks WHERE id = :id", id=task_id)
    )[0]
    assert task == {"status": "running", "failed_subtasks": 0}


class RecordingBackend:
    """An OpenAI-shaped test server that answers 500 and records when each attempt arrived."""

    def __init__(self) -> None:
        self.arrivals: dict[str, list[float]] = defaultdict(list)

    async def handle(self, request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        subtask = key.rsplit("-", 1)[0]
        self.arrivals[subtask].append(time.monotonic())
        return web.json_response(
            {"error": {"message": "GPU fell over", "type": "server_error"}}, status=500
        )


async def test_retries_follow_exponential_backoff_then_fail(
    engine: AsyncEngine, tmp_path: Path, database_url: str, aiohttp_server_factory: Any
) -> None:
    """500s retry after base × 2^n (0.2 s, 0.4 s) up to max_retries, then fail; 3 errors each."""
    backend = RecordingBackend()
    url = await aiohttp_server_factory(backend.handle)
    await submit(engine, n=3, provider="flaky", max_retries=2)
    settings = runner_settings(
        url, {"providers": {"flaky": {"type": "openai", "base_url": url, "request_attempts": 1}}}
    )
    await run_until_idle(engine, tmp_path, database_url, settings)

    assert await status_counts(engine) == {"failed": 3}
    subtasks = await rows(engine, "SELECT attempts, retry_count FROM subtasks")
    assert {(s["attempts"], s["retry_count"]) for s in subtasks} == {(3, 2)}
    assert len(backend.arrivals) == 3
    for arrivals in backend.arrivals.values():
        gaps = [b - a for a, b in itertools.pairwise(arrivals)]
        assert len(gaps) == 2
        # Due at base × 2^n; claimed within the fallback poll interval (0.5 s) after that.
        assert 0.2 <= gaps[0] < 0.2 + 1.0 and 0.4 <= gaps[1] < 0.4 + 1.0, gaps
    errors = await rows(engine, "SELECT error_type, error_message, count FROM error_logs")
    assert (
        len(errors) == 1 and errors[0]["count"] == 9 and errors[0]["error_type"] == "TransientError"
    )


async def test_rate_limits_are_backpressure_not_failures(
    engine: AsyncEngine, tmp_path: Path, database_url: str, aiohttp_server_factory: Any
) -> None:
    """429s defer without spending retries and cut the pool's limit; every subtask completes."""

    seen: dict[str, int] = defaultdict(int)

    async def handle(request: web.Request) -> web.Response:
        subtask = request.headers["Idempotency-Key"].rsplit("-", 1)[0]
        seen[subtask] += 1
        if seen[subtask] <= 2:  # every subtask is rate limited twice
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit"}},
                status=429,
                headers={"Retry-After": "0.1"},
            )
        return web.json_response(
            {"created": 1, "data": [{"b64_json": base64.b64encode(tiny_png()).decode()}]}
        )

    url = await aiohttp_server_factory(handle)
    await submit(engine, n=12, provider="busy", max_retries=0)
    settings = runner_settings(
        url, {"providers": {"busy": {"type": "openai", "base_url": url, "request_attempts": 1}}}
    )
    await run_until_idle(engine, tmp_path, database_url, settings)

    assert await status_counts(engine) == {"completed": 12}
    subtasks = await rows(engine, "SELECT retry_count, deferrals FROM subtasks")
    assert {s["retry_count"] for s in subtasks} == {0}
    assert {s["deferrals"] for s in subtasks} == {2}
    # The provider's fleet-wide limit was cut from its initial 10 (decisions: newest first).
    (provider,) = await rows(engine, "SELECT decisions FROM providers WHERE name = 'busy'")
    first = provider["decisions"][-1]
    assert first["to_limit"] < first["from_limit"] == 10, provider["decisions"]
    assert first["reason"].startswith("429"), first


async def test_cancel_stops_pending_work(
    engine: AsyncEngine, tmp_path: Path, database_url: str, start_sim: Any
) -> None:
    """Cancel: pending subtasks at once; the runner then finishes with nothing left to do."""
    async with start_sim(service_ms=50.0, service_sigma=0.0, capacity=2) as sim:
        task_id = await submit(engine, n=40)
        config, env = make_config(tmp_path, database_url, runner_settings(sim.url))
        async with anyio.create_task_group() as group:
            executors: list[Executor] = []
            group.start_soon(
                lambda: serve(engine, config, env, until_idle=True, on_start=executors.append)
            )

            async def some_done() -> bool:
                return (await status_counts(engine)).get("completed", 0) >= 2

            from tests.runner.conftest import wait_until

            await wait_until(some_done)
            result = await queries.cancel_task(engine, task_id)
            assert result is not None and result["canceled"] > 0
    counts = await status_counts(engine)
    assert set(counts) <= {"completed", "canceled"} and sum(counts.values()) == 40
    await assert_counters_consistent(engine)
    task = (await rows(engine, "SELECT * FROM tasks WHERE id = :id", id=task_id))[0]
    assert task["status"] == "canceled"
    assert task["completed_subtasks"] == counts.get("completed", 0)
    assert task["canceled_subtasks"] == counts["canceled"]


async def test_failed_lumina_job_is_resubmitted_on_retry(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str
) -> None:
    """A job that fails at the provider is not polled again: each retry submits a new job."""
    async with start_sim(lumina_fail_rate=0.5, seed=3) as sim:
        await submit(engine, n=8, pool="lumina", max_retries=20)
        settings = runner_settings(sim.url, {"runner": {"retry_base": 0.02}})
        await run_until_idle(engine, tmp_path, database_url, settings)
        stats = await sim_stats(sim)

    assert await status_counts(engine) == {"completed": 8}
    subtasks = await rows(engine, "SELECT id, retry_count, external_id FROM subtasks")
    assert sum(s["retry_count"] for s in subtasks) > 0, "the seed must make some jobs fail"
    for s in subtasks:
        assert stats["submissions_by_subtask"][str(s["id"])] == s["retry_count"] + 1
    assert len({s["external_id"] for s in subtasks}) == 8


async def test_rate_limits_absorbed_inside_an_attempt_still_cut_the_pool(
    engine: AsyncEngine, tmp_path: Path, database_url: str, aiohttp_server_factory: Any
) -> None:
    """A 429 the provider's own retries wait out is still pressure: the provider's limit drops."""
    seen: dict[str, int] = defaultdict(int)

    async def handle(request: web.Request) -> web.Response:
        key = request.headers["Idempotency-Key"]
        seen[key] += 1
        if seen[key] == 1:  # every request is rate limited once, then served
            return web.json_response(
                {"error": {"message": "slow down", "type": "rate_limit"}},
                status=429,
                headers={"Retry-After": "0.05"},
            )
        png = base64.b64encode(tiny_png()).decode()
        return web.json_response({"created": 1, "data": [{"b64_json": png}]})

    url = await aiohttp_server_factory(handle)
    await submit(engine, n=12, provider="busy")
    settings = runner_settings(
        url, {"providers": {"busy": {"type": "openai", "base_url": url, "request_attempts": 3}}}
    )
    await run_until_idle(engine, tmp_path, database_url, settings)

    assert await status_counts(engine) == {"completed": 12}
    subtasks = await rows(engine, "SELECT retry_count, deferrals FROM subtasks")
    assert {(s["retry_count"], s["deferrals"]) for s in subtasks} == {(0, 0)}, "none escaped"
    # The provider's fleet-wide limit was cut from its initial 10 (decisions: newest first).
    (provider,) = await rows(engine, "SELECT decisions FROM providers WHERE name = 'busy'")
    first = provider["decisions"][-1]
    assert first["to_limit"] < first["from_limit"] == 10, provider["decisions"]
    assert first["reason"].startswith("429"), first


async def test_api_key_never_reaches_database_or_logs(
    engine: AsyncEngine,
    tmp_path: Path,
    database_url: str,
    aiohttp_server_factory: Any,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A backend echoing the Authorization header into its errors: the key is redacted."""
    secret = "sk-sentinel-7f3a9c1e"
    seen_auth: list[str] = []

    async def handle(request: web.Request) -> web.Response:
        seen_auth.append(request.headers.get("Authorization", ""))
        message = f"bad gateway for {request.headers.get('Authorization')}"
        return web.json_response({"error": {"message": message}}, status=502)

    url = await aiohttp_server_factory(handle)
    await submit(engine, n=2, provider="leaky", max_retries=1)
    settings = runner_settings(
        url,
        {
            "providers": {
                "leaky": {
                    "type": "openai",
                    "base_url": url,
                    "api_key_env": "LEAKY_KEY",
                    "request_attempts": 2,
                    "request_retry_wait": 0.01,
                }
            }
        },
    )
    config, env = make_config(tmp_path, database_url, settings)
    env = env.model_copy(update={"secrets": {"LEAKY_KEY": secret}})
    caplog.set_level(logging.DEBUG)
    with anyio.fail_after(60):
        await serve(engine, config, env, until_idle=True)

    assert seen_auth and all(value == f"Bearer {secret}" for value in seen_auth)
    assert await status_counts(engine) == {"failed": 2}
    stored = await rows(
        engine,
        "SELECT (SELECT string_agg(coalesce(error, ''), ' ') FROM subtasks) AS errors,"
        " (SELECT string_agg(error_message || coalesce(stack_trace, ''), ' ') FROM error_logs)"
        " AS logs",
    )
    assert stored[0]["errors"] and stored[0]["logs"]
    assert secret not in stored[0]["errors"] and secret not in stored[0]["logs"]
    assert all(secret not in record.getMessage() for record in caplog.records)


async def test_limit_cut_during_a_claim_does_not_strand_claimed_rows(
    engine: AsyncEngine, sim: RunningSim, tmp_path: Path, database_url: str
) -> None:
    """The pool's limit is cut while a claim is in flight: the claimed rows still run."""
    from runner.policy.scaling import Decision

    task_id = await submit(engine, n=30)
    config, env = make_config(tmp_path, database_url, runner_settings(sim.url))
    executors: list[Executor] = []
    async with engine.connect() as blocker, anyio.create_task_group() as group:
        # Holding the task row makes the claim wait inside its statement (it marks the
        # task running), so the cut below lands exactly while the claim is in flight.
        transaction = await blocker.begin()
        await blocker.execute(
            text("SELECT 1 FROM tasks WHERE id = :id FOR UPDATE"), {"id": task_id}
        )
        group.start_soon(
            lambda: serve(engine, config, env, until_idle=True, on_start=executors.append)
        )

        async def claim_waiting() -> bool:
            async with engine.connect() as connection:
                waiting = await connection.scalar(
                    text(
                        "SELECT count(*) FROM pg_stat_activity WHERE wait_event_type = 'Lock'"
                        " AND query LIKE '%imgrun_claim(%'"
                    )
                )
            return bool(waiting)

        await wait_until(claim_waiting)
        # A pool limit moved while the claim is in flight (a queue-depth tick could).
        pool = executors[0].pools["standard"]
        executors[0].adopt(pool, Decision(5, "a cut during the claim"))
        assert pool.limit == 5
        await transaction.rollback()

    assert await status_counts(engine) == {"completed": 30}
    await assert_counters_consistent(engine)
