"""`imgrun run --pool/--provider` and `imgrun submit` refuse routes that cannot be served."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.cli.test_start_checks import imgrun, one_line_error, subtask_rows
from tests.runner.conftest import submit, write_toml

pytestmark = pytest.mark.anyio

# An openai-type provider speaks only the synchronous protocol: it serves the standard pool.
DALLE = {"type": "openai", "base_url": "http://127.0.0.1:9"}


@pytest.fixture
def env(cli_env: dict[str, str], database_url: str) -> dict[str, str]:
    """CLI environment on this test's database with providers sim (both pools) and dalle."""
    write_toml(
        Path(cli_env["IMGRUN_CONFIG"]),
        {"providers": {"sim": {"type": "sim", "base_url": "http://127.0.0.1:9"}, "dalle": DALLE}},
    )
    return {**cli_env, "IMGRUN_DATABASE_URL": database_url}


async def executors(engine: AsyncEngine) -> int:
    """How many runners ever registered."""
    async with engine.connect() as connection:
        return int(await connection.scalar(text("SELECT count(*) FROM executors")) or 0)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--provider", "nosuch"],
            "runner.providers: nosuch has no [providers.nosuch] section",
        ),
        (
            ["--pool", "lumina", "--provider", "dalle"],
            "runner.providers: dalle (type openai) serves none of the pools lumina",
        ),
    ],
)
async def test_run_refuses_a_provider_it_cannot_route(
    env: dict[str, str], engine: AsyncEngine, args: list[str], message: str
) -> None:
    """Exit 2, one line naming the provider; no runner registered, nothing claimed."""
    await submit(engine, n=3, provider="sim")
    status, stdout, stderr = await imgrun(env, "run", "--until-idle", *args)
    one_line_error(status, stdout, stderr, message)
    assert await subtask_rows(engine) == [("pending", 0, None)] * 3
    assert await executors(engine) == 0


async def test_submit_refuses_a_pool_the_provider_cannot_serve(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """A lumina task for an openai-type provider: exit 2, one line, no task written."""
    spec = tmp_path / "poster.yaml"
    spec.write_text(
        "name: poster\npool: lumina\nprovider: dalle\nprompts: ['a {x}']\nvariables: {x: [a, b]}\n"
    )
    status, stdout, stderr = await imgrun(env, "submit", str(spec))
    one_line_error(
        status,
        stdout,
        stderr,
        "provider: 'dalle' (type openai) cannot serve the lumina pool; it serves: standard",
    )
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM tasks")) == 0
        assert await connection.scalar(text("SELECT count(*) FROM subtasks")) == 0
