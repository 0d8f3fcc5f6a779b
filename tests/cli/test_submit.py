"""`imgrun submit`, `tasks`, `task` as a user runs them: real processes, a real database."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import pytest
from sqlalchemy import func, select
from sqlalchemy.ext.asyncio import AsyncEngine

from db.models import Subtask, Task
from tests.conftest import IMGRUN

pytestmark = pytest.mark.anyio

GOOD = """
name: fox portraits
prompts: ["a {animal} wearing a {hat}", "a {animal} in snow"]
variables: {animal: [cat, fox, owl], hat: [beret, "top hat"]}
ratio: "4:3"
seed: 100
batch_size: 2
priority: 5
"""


async def imgrun(env: dict[str, str], *args: str) -> tuple[int, str, str]:
    """Run the CLI; return (status, stdout, stderr)."""
    done = await anyio.run_process([*IMGRUN, *args], env=env, check=False)
    return done.returncode, done.stdout.decode(), done.stderr.decode()


@pytest.fixture
def env(cli_env: dict[str, str], database_url: str) -> dict[str, str]:
    """CLI environment pointed at this test's database."""
    return {**cli_env, "IMGRUN_DATABASE_URL": database_url}


async def counts(engine: AsyncEngine) -> tuple[int, int]:
    """(tasks, subtasks) rows in the database."""
    async with engine.connect() as connection:
        tasks = await connection.scalar(select(func.count()).select_from(Task))
        subtasks = await connection.scalar(select(func.count()).select_from(Subtask))
    return int(tasks or 0), int(subtasks or 0)


async def test_submit_writes_task_and_subtasks(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """A real submit writes the task, all subtasks with their seeds, and prints the id."""
    spec = tmp_path / "fox.yaml"
    spec.write_text(GOOD)
    status, stdout, stderr = await imgrun(env, "submit", str(spec), "--json", "--user", "ana")
    assert status == 0, stderr
    result = json.loads(stdout)
    assert result["total_subtasks"] == 9 and result["total_images"] == 18
    async with engine.connect() as connection:
        task = (await connection.execute(select(Task))).mappings().one()
        rows = (
            (await connection.execute(select(Subtask).order_by(Subtask.ordinal))).mappings().all()
        )
    assert task["id"] == result["task_id"] and task["user_id"] == "ana"
    assert task["pool"] == "standard" and task["total_subtasks"] == 9
    assert [r["ordinal"] for r in rows] == list(range(9))
    assert [r["params"]["seed"] for r in rows] == list(range(100, 109))
    assert {r["priority"] for r in rows} == {5} and {r["status"] for r in rows} == {"pending"}
    assert rows[0]["prompt"] == "a cat wearing a beret" and rows[0]["params"]["size"] == "1152x864"

    status, stdout, _ = await imgrun(env, "tasks", "--json")
    assert status == 0 and [t["name"] for t in json.loads(stdout)] == ["fox portraits"]
    status, stdout, _ = await imgrun(env, "task", str(result["task_id"]), "--json")
    assert status == 0 and json.loads(stdout)["counts"] == {"pending": 9}
    status, stdout, _ = await imgrun(env, "tasks")
    assert status == 0 and "fox portraits" in stdout and "0/9 (0%)" in stdout


async def test_dry_run_writes_nothing(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """--dry-run shows counts and a preview, and the database stays empty."""
    spec = tmp_path / "fox.yaml"
    spec.write_text(GOOD)
    status, stdout, _ = await imgrun(env, "submit", str(spec), "--dry-run")
    assert status == 0
    assert "9 subtasks, 18 images" in stdout and "a cat wearing a beret" in stdout
    assert await counts(engine) == (0, 0)


BAD_SPECS = [
    ("unknown key", "name: t\nprompts: [x]\ncolour: red\n", "colour: unknown key"),
    ("unknown placeholder", "name: t\nprompts: ['a {b}']\n", "prompts[0]: unknown placeholder {b}"),
    ("unused variable", "name: t\nprompts: [a]\nvariables: {b: [x]}\n", "variables.b: not used"),
    (
        "empty variable",
        "name: t\nprompts: ['{b}']\nvariables: {b: []}\n",
        "variables.b: empty list",
    ),
    ("bad ratio", "name: t\nprompts: [x]\nratio: '5:4'\n", "ratio:"),
    ("batch size", "name: t\nprompts: [x]\nbatch_size: 0\n", "batch_size:"),
    ("wrong type", "name: t\nprompts: x\n", "prompts:"),
    ("unknown pool", "name: t\nprompts: [x]\npool: gpu\n", "pool:"),
    (
        "unknown provider",
        "name: t\nprompts: [x]\nprovider: dalle9\n",
        "provider: unknown provider 'dalle9'",
    ),
    (
        "over the cap",
        "name: t\nprompts: ['{a}{b}']\nvariables: {a: ["
        + ",".join(map(str, range(400)))
        + "], b: ["
        + ",".join(map(str, range(400)))
        + "]}\n",
        "160,000 subtasks, above the limit of 100,000",
    ),
    ("malformed yaml", "name: t\nprompts: [x\n", "malformed YAML at line"),
]


@pytest.mark.parametrize(("case", "text", "message"), BAD_SPECS, ids=[c[0] for c in BAD_SPECS])
async def test_invalid_spec_is_one_line_exit_2_and_writes_nothing(
    case: str, text: str, message: str, env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """Every invalid-spec class: exit 2, one line naming the field, no traceback, no rows."""
    spec = tmp_path / "bad.yaml"
    spec.write_text(text)
    status, stdout, stderr = await imgrun(env, "submit", str(spec))
    assert status == 2, (stdout, stderr)
    assert message in stderr
    assert stderr.strip().count("\n") == 0 and "Traceback" not in stderr
    assert await counts(engine) == (0, 0)


async def test_malformed_json_and_missing_file(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """JSON specs get the same treatment; a missing file names the path."""
    spec = tmp_path / "bad.json"
    spec.write_text('{"name": "t", "prompts": ["x",]}')
    status, _, stderr = await imgrun(env, "submit", str(spec))
    assert status == 2 and "malformed JSON at line 1" in stderr
    status, _, stderr = await imgrun(env, "submit", str(tmp_path / "nope.yaml"))
    assert status == 2 and "nope.yaml: no such file" in stderr
    status, _, stderr = await imgrun(env, "task", "12345")
    assert status == 2 and "task 12345: no such task" in stderr
    assert await counts(engine) == (0, 0)


async def test_bad_database_url_is_a_user_error(cli_env: dict[str, str]) -> None:
    """A non-PostgreSQL URL is rejected in one line."""
    env = {**cli_env, "IMGRUN_DATABASE_URL": "mysql://x@localhost/db"}
    status, _, stderr = await imgrun(env, "tasks")
    assert status == 2 and "imgrun needs a PostgreSQL URL" in stderr
