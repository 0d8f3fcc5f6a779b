"""The rows `imgrun submit` writes, column by column, against what the spec says they are.

The submit path is tuned for speed (precompiled templates, params JSON by concatenation,
a streamed COPY); this test pins what it must still write, whatever it is tuned into.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import select, text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import make_engine
from db.migrate import HEAD
from db.models import Subtask, Task
from db.store import PgStore
from runner.config import Config
from runner.spec.model import parse_spec
from runner.submit import prepare
from runner.submit import submit as submit_through_store
from tests.conftest import IMGRUN, create_database, drop_database

pytestmark = pytest.mark.anyio

MAX_SEED = 2**31 - 1  # DESIGN: seeds are int4; subtask i gets (seed + i) wrapped at 2^31

# Two templates over different variables (one uses a variable twice, one has literal
# braces), a seed that wraps, non-default ratio, batch size, polish and a negative priority.
SPEC = {
    "name": "rows pinned",
    "provider": "sim",
    "priority": -5,
    "prompts": [
        "a {animal} wearing a {hat}, {{literal}} {animal}",
        "{n} {animal}s in {place}",
    ],
    "variables": {
        "animal": ["cat", "fox", "ünïcode owl"],
        "hat": ["beret", "top hat"],
        "place": ["snow"],
        "n": [1, 2.5],
    },
    "ratio": "16:9",
    "seed": MAX_SEED - 3,
    "batch_size": 3,
    "polish": True,
    "max_retries": 2,
}
SIZE_16_9 = "1344x768"  # DESIGN's ratio table

# The same spec in the other pool, at another priority: its own turns, its own seeds.
SECOND = {
    "name": "Lumina second",
    "priority": 7,
    "prompts": ["{x}"],
    "variables": {"x": ["a", "b", "c"]},
    "seed": 0,
}


def expected_rows(spec: dict[str, Any], pool: str) -> list[dict[str, Any]]:
    """The subtasks DESIGN says a spec expands to, computed here independently."""
    rows = []
    for template in spec["prompts"]:
        names = [n for n in spec["variables"] if "{" + n + "}" in template]
        names.sort(key=lambda n: template.index("{" + n + "}"))  # order of first use
        for values in itertools.product(*(spec["variables"][n] for n in names)):
            prompt = template
            for name, value in zip(names, values, strict=True):
                prompt = prompt.replace("{" + name + "}", str(value))
            prompt = prompt.replace("{{", "{").replace("}}", "}")
            rows.append(prompt)
    seed0 = spec["seed"]
    return [
        {
            "ordinal": ordinal,
            "prompt": prompt,
            "pool": pool,
            "provider": spec.get("provider", "sim"),
            "priority": spec.get("priority", 1),
            "turn": ordinal,  # the first task at its priority starts at turn 0
            "status": "pending",
            "attempts": 0,
            "retry_count": 0,
            "executor_id": None,
            "result": None,
            "params": {
                "seed": (seed0 + ordinal) % (MAX_SEED + 1),
                "ratio": spec.get("ratio", "1:1"),
                "size": SIZE_16_9 if spec.get("ratio") == "16:9" else "1024x1024",
                "batch_size": spec.get("batch_size", 1),
                "polish": spec.get("polish", False),
            },
        }
        for ordinal, prompt in enumerate(rows)
    ]


async def submit(env: dict[str, str], path: Path, spec: dict[str, Any]) -> int:
    """Submit `spec` with the real CLI; return the task id."""
    path.write_text(json.dumps(spec))
    done = await anyio.run_process([*IMGRUN, "submit", str(path), "--json"], env=env, check=False)
    assert done.returncode == 0, done.stderr.decode()
    return int(json.loads(done.stdout)["task_id"])


async def stored_rows(engine: AsyncEngine, task_id: int) -> list[dict[str, Any]]:
    """A task's subtasks as stored, in ordinal order, with the columns a submit sets."""
    columns = [getattr(Subtask, key) for key in expected_rows(SECOND, "lumina")[0]]
    async with engine.connect() as connection:
        result = await connection.execute(
            select(*columns).where(Subtask.task_id == task_id).order_by(Subtask.ordinal)
        )
        return [dict(row) for row in result.mappings()]


async def test_submitted_rows_are_exactly_the_specs_expansion(
    cli_env: dict[str, str], database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """Every column of every subtask is what the spec says, for two tasks in two pools."""
    env = {**cli_env, "IMGRUN_DATABASE_URL": database_url}
    first = await submit(env, tmp_path / "first.json", SPEC)
    second = await submit(env, tmp_path / "second.json", SECOND)

    rows = await stored_rows(engine, first)
    assert len(rows) == 3 * 2 + 2 * 3 * 1  # animal × hat, then n × animal × place
    assert rows == expected_rows(SPEC, "standard")
    assert rows[4]["params"]["seed"] == 0  # wrapped past MAX_SEED
    assert rows[0]["prompt"] == "a cat wearing a beret, {literal} cat"
    assert rows[6]["prompt"] == "1 cats in snow" and rows[9]["prompt"] == "2.5 cats in snow"
    assert await stored_rows(engine, second) == expected_rows(SECOND, "lumina")

    async with engine.connect() as connection:
        task = (await connection.execute(select(Task).where(Task.id == first))).mappings().one()
    assert (task["total_subtasks"], task["total_images"]) == (12, 36)
    assert (task["seed"], task["ratio"], task["polish"]) == (MAX_SEED - 3, "16:9", True)
    assert task["turn_end"] == 12 and task["status"] == "pending"


# What two submits of one spec may differ in: identity and time.
VOLATILE = {"id", "task_id", "created_at", "updated_at", "run_after", "started_at"}


async def all_rows(
    engine: AsyncEngine, task_id: int
) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    """A task row and its subtask rows, every column but the volatile ones."""
    async with engine.connect() as connection:
        task = (await connection.execute(select(Task).where(Task.id == task_id))).mappings().one()
        subtasks = (
            await connection.execute(
                select(Subtask.__table__)
                .where(Subtask.task_id == task_id)
                .order_by(Subtask.ordinal)
            )
        ).mappings()
        rows = [{k: v for k, v in row.items() if k not in VOLATILE} for row in subtasks]
    return {k: v for k, v in task.items() if k not in VOLATILE}, rows


async def test_quick_path_writes_what_the_engine_path_writes(
    cli_env: dict[str, str], database_url: str, engine: AsyncEngine, tmp_path: Path
) -> None:
    """`imgrun submit` (bare connection) and PgStore.submit_task (API, demo): the same rows."""
    env = {**cli_env, "IMGRUN_DATABASE_URL": database_url}
    quick = await submit(env, tmp_path / "spec.json", SPEC)
    expansion = prepare(parse_spec(SPEC), Config())
    store_id = await submit_through_store(PgStore(engine), expansion, "ana")

    quick_task, quick_rows = await all_rows(engine, quick)
    store_task, store_rows = await all_rows(engine, store_id)
    assert quick_rows == store_rows and len(quick_rows) == 12
    quick_task.pop("user_id")
    store_task.pop("user_id")
    assert quick_task == store_task


async def test_submit_to_an_empty_database_migrates_then_writes(
    cli_env: dict[str, str], pg_server: str, tmp_path: Path
) -> None:
    """No schema yet: the quick path writes nothing and the engine's path migrates first."""
    url = await create_database(pg_server, None)
    engine = make_engine(url)
    try:
        task_id = await submit(
            {**cli_env, "IMGRUN_DATABASE_URL": url}, tmp_path / "spec.json", SPEC
        )
        assert await stored_rows(engine, task_id) == expected_rows(SPEC, "standard")
        async with engine.connect() as connection:
            assert await connection.scalar(text("SELECT version_num FROM alembic_version")) == HEAD
            assert await connection.scalar(text("SELECT count(*) FROM tasks")) == 1
    finally:
        await engine.dispose()
        await drop_database(pg_server, url)


async def test_submit_does_not_import_the_orm(
    cli_env: dict[str, str], database_url: str, tmp_path: Path
) -> None:
    """The quick path's point: no async engine, ORM, models, aiohttp or runner loop imported."""
    path = tmp_path / "spec.json"
    path.write_text(json.dumps(SECOND))
    program = (
        "import sys\n"
        "from runner.cli import main\n"
        "try:\n"
        f"    main(['submit', {str(path)!r}, '--json'])\n"
        "finally:\n"
        "    heavy = ('sqlalchemy.orm', 'sqlalchemy.ext.asyncio', 'db.models', 'db.store',\n"
        "             'aiohttp', 'runner.loop.service')\n"
        "    print(sorted(m for m in heavy if m in sys.modules), file=sys.stderr)\n"
    )
    done = await anyio.run_process(
        [IMGRUN[0], "-c", program],
        env={**cli_env, "IMGRUN_DATABASE_URL": database_url},
        check=False,
    )
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["total_subtasks"] == 3
    assert done.stderr.decode().strip().splitlines()[-1] == "[]"
