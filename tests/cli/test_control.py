"""`imgrun cancel`, `retry`, `errors` from the command line."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.records import ErrorRecord, Outcome
from db.store import PgStore
from tests.cli.test_submit import imgrun
from tests.db.conftest import claim_rows

pytestmark = pytest.mark.anyio


@pytest.fixture
def env(cli_env: dict[str, str], database_url: str) -> dict[str, str]:
    """CLI environment pointed at this test's database."""
    return {**cli_env, "IMGRUN_DATABASE_URL": database_url}


async def test_cancel_retry_and_errors(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """Retry requeues failed subtasks; cancel marks every pending one; errors lists aggregates."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: c\nprompts: ['a {x}']\nvariables: {x: [1, 2, 3, 4, 5]}\n")
    status, stdout, _ = await imgrun(env, "submit", str(spec), "--json")
    task_id = json.loads(stdout)["task_id"]

    # Two attempts fail for good, the way a runner records them.
    store = PgStore(engine)
    held = await claim_rows(store, "standard", 2, "r1", 60.0)
    await store.apply_outcomes(
        [Outcome(row.id, row.attempts, "failed", "r1", error="boom") for row in held]
    )
    await store.record_errors(
        [ErrorRecord("TransientError", "boom", None, "standard", "sim", row.id) for row in held]
    )
    status, stdout, _ = await imgrun(env, "retry", str(task_id))
    assert status == 0 and "2 failed subtasks back to pending" in stdout
    status, stdout, _ = await imgrun(env, "errors", "--json")
    assert [(e["error_type"], e["count"]) for e in json.loads(stdout)] == [("TransientError", 2)]
    status, stdout, _ = await imgrun(env, "errors")
    assert status == 0 and "TransientError" in stdout and "boom" in stdout

    status, stdout, _ = await imgrun(env, "cancel", str(task_id), "--json")
    assert status == 0
    assert json.loads(stdout) == {
        "task_id": task_id,
        "previous_status": "running",
        "canceled": 5,
        "in_flight": 0,
    }
    status, stdout, _ = await imgrun(env, "task", str(task_id), "--json")
    detail = json.loads(stdout)
    assert detail["status"] == "canceled" and detail["counts"] == {"canceled": 5}

    status, _, stderr = await imgrun(env, "cancel", "999999")
    assert status == 2 and "task 999999: no such task" in stderr


async def test_retry_of_a_canceled_task_is_refused(
    env: dict[str, str], engine: AsyncEngine, tmp_path: Path
) -> None:
    """`imgrun retry` of a canceled task exits 2 with one line and leaves it canceled."""
    spec = tmp_path / "s.yaml"
    spec.write_text("name: c\nprompts: ['a {x}']\nvariables: {x: [1, 2, 3]}\n")
    status, stdout, _ = await imgrun(env, "submit", str(spec), "--json")
    task_id = json.loads(stdout)["task_id"]
    store = PgStore(engine)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await store.apply_outcomes([Outcome(row.id, row.attempts, "failed", "r1", error="boom")])
    status, _, _ = await imgrun(env, "cancel", str(task_id))
    assert status == 0

    status, stdout, stderr = await imgrun(env, "retry", str(task_id))
    assert status == 2 and stdout == ""
    assert stderr.strip().splitlines() == [
        f"imgrun: error: task {task_id} is canceled;"
        " a canceled task cannot be retried, submit it again"
    ]
    task = await store.get_task(task_id)
    assert task is not None
    assert task["status"] == "canceled"
    assert task["counts"] == {"failed": 1, "canceled": 2}
