"""Commands check the configuration at start: exit 2, one line, nothing claimed or written."""

from __future__ import annotations

from pathlib import Path

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.conftest import IMGRUN
from tests.runner.conftest import submit, write_toml

pytestmark = pytest.mark.anyio

SPEC = "name: typo\nprovider: sim\nprompts: ['a {x}']\nvariables: {x: [a, b, c]}\n"


async def imgrun(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the CLI (bounded in time); return (status, stdout, stderr)."""
    with anyio.fail_after(60):
        done = await anyio.run_process([*IMGRUN, *args], env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
def env(cli_env: dict[str, str], database_url: str) -> dict[str, str]:
    """CLI environment pointed at this test's database, with a typo under [providers.sim]."""
    write_toml(
        Path(cli_env["IMGRUN_CONFIG"]),
        {"providers": {"sim": {"type": "sim", "base_url": "http://127.0.0.1:9", "colour": "red"}}},
    )
    return {**cli_env, "IMGRUN_DATABASE_URL": database_url}


def one_line_error(status: int, stdout: str, stderr: str, message: str) -> None:
    """The exit-2 contract: status 2, nothing on stdout, one line on stderr, no traceback."""
    assert (status, stdout) == (2, ""), stderr
    assert stderr.strip() == f"imgrun: error: {message}"


async def subtask_rows(engine: AsyncEngine) -> list[tuple[str, int, str | None]]:
    """(status, attempts, executor_id) of every subtask."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT status, attempts, executor_id FROM subtasks ORDER BY id")
        )
        return [(r.status, r.attempts, r.executor_id) for r in rows]


async def test_run_refuses_a_provider_typo_before_claiming(
    env: dict[str, str], engine: AsyncEngine
) -> None:
    """`imgrun run` exits 2 naming the key; the queued subtasks are untouched, no runner row."""
    await submit(engine, n=5, provider="sim")
    status, stdout, stderr = await imgrun(env, "run", "--until-idle")
    one_line_error(
        status,
        stdout,
        stderr,
        "config providers.sim.colour: unknown option; known: body, max_response_bytes,"
        " response_format, send_seed, sizes",
    )
    assert await subtask_rows(engine) == [("pending", 0, None)] * 5
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM executors")) == 0


async def test_run_refuses_a_missing_api_key_variable(
    cli_env: dict[str, str], database_url: str
) -> None:
    """A provider whose api_key_env is unset would fail every request: refused at start."""
    section = {"type": "openai", "base_url": "http://127.0.0.1:9", "api_key_env": "NO_SUCH_KEY"}
    write_toml(Path(cli_env["IMGRUN_CONFIG"]), {"providers": {"dalle": section}})
    env = {**cli_env, "IMGRUN_DATABASE_URL": database_url}
    env.pop("NO_SUCH_KEY", None)
    status, stdout, stderr = await imgrun(env, "run", "--until-idle")
    one_line_error(
        status,
        stdout,
        stderr,
        "config providers.dalle.api_key_env: the variable NO_SUCH_KEY is not set (or empty)",
    )


@pytest.mark.parametrize("dry_run", [False, True])
async def test_submit_refuses_a_task_for_a_misconfigured_provider(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path, dry_run: bool
) -> None:
    """`imgrun submit` (and its dry run) exits 2 naming the key; nothing is written."""
    spec = tmp_path / "typo.yaml"
    spec.write_text(SPEC)
    args = ["submit", str(spec), *(["--dry-run"] if dry_run else [])]
    status, stdout, stderr = await imgrun(env, *args)
    assert status == 2 and stderr.startswith("imgrun: error: config providers.sim.colour:")
    assert stdout == "" and len(stderr.strip().splitlines()) == 1
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM tasks")) == 0


async def test_invalid_database_url_exits_2_without_its_password(cli_env: dict[str, str]) -> None:
    """A malformed IMGRUN_DATABASE_URL is one line, exit 2, and its password never appears."""
    env = {**cli_env, "IMGRUN_DATABASE_URL": "postgresql://app:Hunter2-pw@db.example:port/x"}
    status, stdout, stderr = await imgrun(env, "tasks")
    one_line_error(
        status,
        stdout,
        stderr,
        "IMGRUN_DATABASE_URL: not a database URL"
        " (expected postgresql://user:password@host:port/database)",
    )
    assert "Hunter2" not in stdout + stderr
