"""Runner fixtures: an in-process sim on a free loopback port, configs, runner processes."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web
from anyio.abc import Process
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from runner.config import Config, Environment, load_config, merge_settings
from tests.conftest import IMGRUN
from workers.sim.app import RunningSim, running
from workers.sim.config import SimConfig

# Small intervals so the tests see several heartbeats, ticks and polls in seconds.
FAST = {
    "runner": {
        "heartbeat_interval": 0.3,
        "lease": 3.0,
        "poll_interval": 0.5,
        "retry_base": 0.2,
        "shutdown_grace": 10.0,
    },
    "pools": {"lumina": {"polling_interval": 0.1, "timeout": 30}},
}


async def wait_until(
    condition: Callable[[], Awaitable[bool]], *, timeout: float = 30.0, every: float = 0.05
) -> None:
    """Poll `condition` until true; fail the test at the deadline."""
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(every)


async def sim_stats(sim: RunningSim) -> dict[str, Any]:
    """What actually reached the backend."""
    async with aiohttp.ClientSession() as session, session.get(f"{sim.url}/_sim/stats") as r:
        return dict(await r.json())


@pytest.fixture
def start_sim() -> Callable[..., Any]:
    """`async with start_sim(**SimConfig fields) as sim` on a free port."""

    def start(**fields: Any) -> Any:
        return running(SimConfig(port=0, **{"service_ms": 0.0, **fields}))

    return start


@pytest.fixture
async def sim(start_sim: Callable[..., Any]) -> AsyncIterator[RunningSim]:
    """A fault-free, instant sim."""
    async with start_sim() as server:
        yield server


def runner_settings(sim_url: str, extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Config overrides: the sim as provider `sim`, fast intervals, plus `extra`."""
    base = merge_settings(
        FAST, {"providers": {"sim": {"type": "sim", "base_url": sim_url, "request_attempts": 1}}}
    )
    return merge_settings(base, extra or {})


def make_config(
    tmp_path: Path, database_url: str, settings: dict[str, Any]
) -> tuple[Config, Environment]:
    """An in-process config + environment for `runner.service.serve`."""
    env = Environment(
        home=tmp_path / "home",
        config_path=tmp_path / "none.toml",
        database_url=database_url,
        secrets={},
    )
    settings = merge_settings(settings, {"runner": {"output_dir": str(tmp_path / "out")}})
    return load_config(env, settings), env


def write_toml(path: Path, settings: dict[str, Any]) -> None:
    """Write nested settings as TOML (tables of scalars only)."""
    lines: list[str] = []

    def emit(prefix: str, table: dict[str, Any]) -> None:
        scalars = {k: v for k, v in table.items() if not isinstance(v, dict)}
        if prefix:
            lines.append(f"[{prefix}]")
        for key, value in scalars.items():
            lines.append(f"{key} = {json.dumps(value)}")
        for key, value in table.items():
            if isinstance(value, dict):
                emit(f"{prefix}.{key}" if prefix else key, value)

    emit("", settings)
    path.write_text("\n".join(lines) + "\n")


def process_env(
    cli_env: dict[str, str], tmp_path: Path, database_url: str, settings: dict[str, Any]
) -> dict[str, str]:
    """Environment for a runner subprocess with `settings` in its config file."""
    settings = merge_settings(settings, {"runner": {"output_dir": str(tmp_path / "out")}})
    write_toml(Path(cli_env["IMGRUN_CONFIG"]), settings)
    return {**cli_env, "IMGRUN_DATABASE_URL": database_url}


def runner_command(*args: str) -> list[str]:
    """`imgrun run …` as a process."""
    return [*IMGRUN, "run", "--log-format", "json", *args]


async def status_counts(engine: AsyncEngine) -> dict[str, int]:
    """Subtasks by status."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT status, count(*) FROM subtasks GROUP BY status")
        )
        return {status: int(count) for status, count in rows.all()}


async def submit(
    engine: AsyncEngine,
    *,
    name: str = "t",
    n: int = 10,
    priority: int = 1,
    pool: str = "standard",
    provider: str = "sim",
    max_retries: int = 3,
    prompt: str = "a {x}",
) -> int:
    """Queue a task of `n` subtasks through the same path as `imgrun submit`."""
    from runner.spec.model import expand, parse_spec
    from runner.submit import submit as submit_expansion

    variables = {"x": [f"v{i}" for i in range(n)]}
    spec = parse_spec(
        {
            "name": name,
            "prompts": [prompt],
            "variables": variables,
            "pool": pool,
            "provider": provider,
            "priority": priority,
            "seed": 1,
            "max_retries": max_retries,
        }
    )
    return await submit_expansion(PgStore(engine), expand(spec, max_subtasks=1_000_000), "test")


@pytest.fixture
async def aiohttp_server_factory() -> AsyncIterator[Callable[..., Awaitable[str]]]:
    """Serve a single handler for every path on a free loopback port; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(handler: Callable[[web.Request], Awaitable[web.StreamResponse]]) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", handler)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


async def assert_counters_consistent(engine: AsyncEngine) -> None:
    """Every task's maintained counters equal a fresh count of its subtasks, and its status fits."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT t.id, t.status, t.total_subtasks,"
                " t.completed_subtasks, t.failed_subtasks, t.canceled_subtasks,"
                " count(*) FILTER (WHERE s.status = 'completed') AS completed,"
                " count(*) FILTER (WHERE s.status = 'failed') AS failed,"
                " count(*) FILTER (WHERE s.status = 'canceled') AS canceled,"
                " count(s.id) AS total"
                " FROM tasks t LEFT JOIN subtasks s ON s.task_id = t.id GROUP BY t.id"
            )
        )
        for row in rows.mappings():
            assert (
                row["completed_subtasks"],
                row["failed_subtasks"],
                row["canceled_subtasks"],
            ) == (row["completed"], row["failed"], row["canceled"]), dict(row)
            assert row["total_subtasks"] == row["total"], dict(row)
            finished = row["completed"] + row["failed"] + row["canceled"] == row["total"]
            if finished and row["status"] != "canceled":
                expected = (
                    "completed"
                    if row["failed"] + row["canceled"] == 0
                    else "failed"
                    if row["completed"] == 0
                    else "partial"
                )
                assert row["status"] == expected, dict(row)


async def scalar(engine: AsyncEngine, sql: str) -> Any:
    """One value."""
    async with engine.connect() as connection:
        return await connection.scalar(text(sql))


async def finish(process: Process, timeout: float = 60) -> int:
    """Wait for a runner process to exit; kill it if it overstays."""
    try:
        with anyio.fail_after(timeout):
            return await process.wait()
    finally:
        if process.returncode is None:
            process.kill()
            await process.wait()
