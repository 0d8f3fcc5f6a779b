"""`imgrun prune` as a user runs it: real process, real database; bad input exits 2 in one line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.cli.test_submit import env, imgrun  # noqa: F401  (env is a fixture)
from tests.db.test_store_retention import finish

pytestmark = pytest.mark.anyio


async def task_ids(engine: AsyncEngine) -> list[int]:
    """Ids of the tasks in the database."""
    async with engine.connect() as connection:
        return list((await connection.execute(text("SELECT id FROM tasks ORDER BY id"))).scalars())


@pytest.mark.parametrize("bad", ["30x", "-1d", "0", "", "nan", "1e9"])
async def test_bad_older_than_exits_2_in_one_line(
    env: dict[str, str],  # noqa: F811
    engine: AsyncEngine,
    bad: str,
) -> None:
    """A malformed or zero --older-than: exit 2, one line naming the option, nothing deleted."""
    await finish(engine, 1, age_days=400)
    status, _, stderr = await imgrun(env, "prune", "--older-than", bad)
    assert status == 2, stderr
    assert stderr.count("\n") == 1 and "--older-than" in stderr and "Traceback" not in stderr
    assert len(await task_ids(engine)) == 1


async def test_dry_run_then_prune(env: dict[str, str], engine: AsyncEngine) -> None:  # noqa: F811
    """--dry-run --json counts the old task; the real run removes it and keeps the recent one."""
    await finish(engine, 2, age_days=10)
    recent = await finish(engine, 1, age_days=1)

    status, stdout, stderr = await imgrun(env, "prune", "--older-than", "7d", "--dry-run", "--json")
    assert status == 0, stderr
    report = json.loads(stdout)
    assert (report["dry_run"], report["tasks"], report["subtasks"]) == (True, 1, 2)
    assert len(await task_ids(engine)) == 2

    status, stdout, stderr = await imgrun(env, "prune", "--older-than", "7d")
    assert status == 0, stderr
    assert "removed" in stdout
    assert await task_ids(engine) == [recent]


async def test_bad_retention_config_exits_2(
    env: dict[str, str],  # noqa: F811
    tmp_path: Path,
) -> None:
    """`[retention] older_than = "soon"` is named in one line, exit 2."""
    Path(env["IMGRUN_CONFIG"]).write_text('[retention]\nolder_than = "soon"\n')
    status, _, stderr = await imgrun(env, "prune", "--dry-run")
    assert status == 2
    assert "retention.older_than" in stderr and stderr.count("\n") == 1
