"""`imgrun cancel`, `retry`, `errors` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.cli.test_submit import imgrun

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(cli_env: dict[str, str], database_url: str) -> dict[str, str]:
    """CLI environment pointed at this test's database."""
    return {**cli_env, "IMGRUN_DATABASE_URL": database_url}


async def test_cancel_retry_and_errors(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """Cancel marks every pending subtask; retry requeues failed ones; errors lists aggregates."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: c\nprompts: ['a {x}']\nvariables: {x: [1, 2, 3, 4, 5]}\n")
    status, stdout, _ = await imgrun(env, "submit", str(spec), "--json")
    task_id = json.loads(stdout)["task_id"]

    status, stdout, _ = await imgrun(env, "cancel", str(task_id), "--json")
    assert status == 0
    assert json.loads(stdout) == {
        "task_id": task_id,
        "previous_status": "pending",
        "canceled": 5,
        "in_flight": 0,
    }
    status, stdout, _ = await imgrun(env, "task", str(task_id), "--json")
    detail = json.loads(stdout)
    assert detail["status"] == "canceled" and detail["counts"] == {"canceled": 5}

    async with engine.begin() as connection:  # as if two attempts had failed for good
        await connection.execute(
            text(
                "UPDATE subtasks SET status = 'failed', error = 'boom'"
                " WHERE task_id = :id AND ordinal < 2"
            ),
            {"id": task_id},
        )
        await connection.execute(
            text(
                "UPDATE tasks SET failed_subtasks = 2, canceled_subtasks = 3, status = 'partial'"
                " WHERE id = :id"
            ),
            {"id": task_id},
        )
        await connection.execute(
            text(
                "INSERT INTO error_logs (error_type, error_message, count)"
                " VALUES ('TransientError', 'boom', 2)"
            )
        )
    status, stdout, _ = await imgrun(env, "retry", str(task_id))
    assert status == 0 and "2 failed subtasks back to pending" in stdout
    status, stdout, _ = await imgrun(env, "errors", "--json")
    assert [(e["error_type"], e["count"]) for e in json.loads(stdout)] == [("TransientError", 2)]
    status, stdout, _ = await imgrun(env, "errors")
    assert status == 0 and "TransientError" in stdout and "boom" in stdout
    status, _, stderr = await imgrun(env, "cancel", "999999")
    assert status == 2 and "task 999999: no such task" in stderr
