"""Outcomes: each kind's effect on the row and the task, the fence, the canceled roll-up."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from tests.db.conftest import (
    claim_rows,
    counters,
    expire,
    outcome,
    reap,
    subtask,
    task,
)
from tests.runner.conftest import submit

pytestmark = pytest.mark.anyio

IMAGES = {"images": [{"path": "1/1-0.png", "sha256": "ab"}]}


async def test_completed_stores_the_result_and_counts(engine: AsyncEngine, store: PgStore) -> None:
    """completed: row final with its result, lease released; the task counts one completion."""
    task_id = await submit(engine, n=2)
    row, _ = await claim_rows(store, "standard", 2, "r1", 60.0)
    assert await store.apply_outcomes([outcome(row, "completed", result=IMAGES)]) == [row.id]
    stored = await subtask(engine, row.id)
    assert (stored["status"], stored["result"], stored["executor_id"]) == (
        "completed",
        IMAGES,
        None,
    )
    assert stored["lease_expires_at"] is None and stored["completed_at"] is not None
    assert await counters(engine, task_id) == ("running", 1, 0, 0)
    assert (await task(engine, task_id))["finished_at"] is None


async def test_failed_records_the_error_and_counts(engine: AsyncEngine, store: PgStore) -> None:
    """failed: row final with its error; the task counts one failure."""
    task_id = await submit(engine, n=2)
    row, _ = await claim_rows(store, "standard", 2, "r1", 60.0)
    await store.apply_outcomes([outcome(row, "failed", error="HTTP 400: bad prompt")])
    stored = await subtask(engine, row.id)
    assert (stored["status"], stored["error"], stored["retry_count"]) == (
        "failed",
        "HTTP 400: bad prompt",
        0,
    )
    assert await counters(engine, task_id) == ("running", 0, 1, 0)


async def test_retry_spends_budget_and_waits(engine: AsyncEngine, store: PgStore) -> None:
    """retry: back to pending, retry_count + 1, run_after = now + delay, attempts kept."""
    task_id = await submit(engine, n=1)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await store.apply_outcomes([outcome(row, "retry", error="HTTP 500", delay=40.0)])
    stored = await subtask(engine, row.id)
    assert (stored["status"], stored["retry_count"], stored["deferrals"]) == ("pending", 1, 0)
    assert (stored["attempts"], stored["error"], stored["executor_id"]) == (1, "HTTP 500", None)
    assert 35 < stored["due_in"] <= 40 and stored["completed_at"] is None
    assert await counters(engine, task_id) == ("running", 0, 0, 0)


async def test_defer_does_not_spend_the_retry_budget(engine: AsyncEngine, store: PgStore) -> None:
    """defer (backpressure): pending after the delay, deferrals + 1, retry_count unchanged."""
    await submit(engine, n=1)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await store.apply_outcomes([outcome(row, "defer", delay=20.0)])
    stored = await subtask(engine, row.id)
    assert (stored["status"], stored["retry_count"], stored["deferrals"]) == ("pending", 0, 1)
    assert stored["attempts"] == 1 and 15 < stored["due_in"] <= 20


async def test_release_gives_the_attempt_back(engine: AsyncEngine, store: PgStore) -> None:
    """release (shutdown): pending, and the attempt is not counted."""
    await submit(engine, n=1)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await store.apply_outcomes([outcome(row, "release")])
    stored = await subtask(engine, row.id)
    assert (stored["status"], stored["attempts"], stored["retry_count"]) == ("pending", 0, 0)
    assert stored["deferrals"] == 0 and stored["due_in"] <= 0
    (again,) = await claim_rows(store, "standard", 1, "r2", 60.0)
    assert again.attempts == 1


async def test_canceled_outcome_counts_as_canceled(engine: AsyncEngine, store: PgStore) -> None:
    """canceled: the row is final and the task counts it as canceled."""
    task_id = await submit(engine, n=2)
    row, _ = await claim_rows(store, "standard", 2, "r1", 60.0)
    await store.apply_outcomes([outcome(row, "canceled")])
    assert (await subtask(engine, row.id))["status"] == "canceled"
    assert await counters(engine, task_id) == ("running", 0, 0, 1)


@pytest.mark.parametrize("reset", [False, True])
async def test_retry_keeps_the_external_id_unless_the_job_is_reset(
    engine: AsyncEngine, store: PgStore, reset: bool
) -> None:
    """A retried async job keeps its id (resume polling) unless the job is dead (reset_job)."""
    await submit(engine, n=1, pool="lumina")
    (row,) = await claim_rows(store, "lumina", 1, "r1", 60.0)
    assert await store.set_external_id(row.id, row.attempts, "r1", "job-7")
    await store.apply_outcomes([outcome(row, "retry", reset_job=reset)])
    (again,) = await claim_rows(store, "lumina", 1, "r1", 60.0)
    assert again.external_id == (None if reset else "job-7")


# --- a task's final status, from its counters (DESIGN.md: completed|failed|partial) ---


@pytest.mark.parametrize(
    ("kinds", "final"),
    [
        (["completed", "completed", "completed"], "completed"),
        (["failed", "failed", "failed"], "failed"),
        (["completed", "failed", "failed"], "partial"),
        (["completed", "completed", "canceled"], "partial"),
        (["failed", "canceled", "failed"], "failed"),
    ],
)
async def test_task_final_status_follows_its_subtasks(
    engine: AsyncEngine, store: PgStore, kinds: list[str], final: str
) -> None:
    """All completed → completed; none completed → failed; some of each → partial."""
    task_id = await submit(engine, n=3)
    rows = await claim_rows(store, "standard", 3, "r1", 60.0)
    await store.apply_outcomes([outcome(r, k) for r, k in zip(rows[:-1], kinds[:-1], strict=True)])
    assert (await task(engine, task_id))["status"] == "running"  # not final before the last
    await store.apply_outcomes([outcome(rows[-1], kinds[-1])])
    row = await task(engine, task_id)
    assert (row["status"], row["finished_at"] is not None) == (final, True)
    assert (row["completed_subtasks"], row["failed_subtasks"], row["canceled_subtasks"]) == (
        kinds.count("completed"),
        kinds.count("failed"),
        kinds.count("canceled"),
    )


async def test_one_batch_updates_several_tasks(engine: AsyncEngine, store: PgStore) -> None:
    """Outcomes of different tasks in one call move each task's own counters."""
    a = await submit(engine, n=1)
    b = await submit(engine, n=2)
    rows = await claim_rows(store, "standard", 3, "r1", 60.0)
    by_task = {r.task_id: r for r in rows}  # the last claimed row of each task
    applied = await store.apply_outcomes(
        [outcome(by_task[a], "completed"), outcome(by_task[b], "failed")]
    )
    assert applied == sorted([by_task[a].id, by_task[b].id])
    assert await counters(engine, a) == ("completed", 1, 0, 0)
    assert await counters(engine, b) == ("running", 0, 1, 0)


# --- the fence: only the current lease holder's outcome moves a row ---


async def test_wrong_executor_outcome_is_dropped(engine: AsyncEngine, store: PgStore) -> None:
    """An outcome from an executor that does not hold the lease changes nothing."""
    task_id = await submit(engine, n=1)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    before = await subtask(engine, row.id)
    assert await store.apply_outcomes([outcome(row, "completed", executor="r2")]) == []
    after = await subtask(engine, row.id)
    assert after["status"] == "processing" and after["executor_id"] == "r1"
    assert after["updated_at"] == before["updated_at"]
    assert await counters(engine, task_id) == ("running", 0, 0, 0)


async def test_reaped_and_reclaimed_by_another_runner_drops_the_late_outcome(
    engine: AsyncEngine, store: PgStore
) -> None:
    """r1 stalls, its row is reaped and r2 claims it: r1's late 'completed' is dropped."""
    task_id = await submit(engine, n=1)
    (stale,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await expire(engine, [stale.id])
    await reap(store)
    (fresh,) = await claim_rows(store, "standard", 1, "r2", 60.0)
    assert fresh.attempts == stale.attempts + 1
    assert await store.apply_outcomes([outcome(stale, "completed", result=IMAGES)]) == []
    row = await subtask(engine, stale.id)
    assert (row["status"], row["executor_id"], row["attempts"], row["result"]) == (
        "processing",
        "r2",
        2,
        None,
    )
    assert await counters(engine, task_id) == ("running", 0, 0, 0)
    # The real holder's outcome still applies.
    assert await store.apply_outcomes([outcome(fresh, "completed", executor="r2")]) == [fresh.id]
    assert await counters(engine, task_id) == ("completed", 1, 0, 0)


async def test_same_executor_older_attempt_outcome_is_dropped(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Reaped and re-claimed by the same runner: the old attempt's outcome is dropped."""
    task_id = await submit(engine, n=1)
    (old,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await expire(engine, [old.id])
    await reap(store)
    (new,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    assert (new.attempts, new.retry_count) == (2, 1)
    assert await store.apply_outcomes([outcome(old, "failed", error="late")]) == []
    row = await subtask(engine, old.id)
    assert (row["status"], row["attempts"], row["retry_count"]) == ("processing", 2, 1)
    assert await counters(engine, task_id) == ("running", 0, 0, 0)


async def test_a_second_report_of_a_finished_attempt_is_dropped(
    engine: AsyncEngine, store: PgStore
) -> None:
    """A duplicate outcome (e.g. a flush retried after commit) does not count twice."""
    task_id = await submit(engine, n=2)
    row, _ = await claim_rows(store, "standard", 2, "r1", 60.0)
    assert await store.apply_outcomes([outcome(row, "completed")]) == [row.id]
    assert await store.apply_outcomes([outcome(row, "failed")]) == []
    assert (await subtask(engine, row.id))["status"] == "completed"
    assert await counters(engine, task_id) == ("running", 1, 0, 0)


async def test_the_same_completion_reported_twice_stands_and_counts_once(
    engine: AsyncEngine, store: PgStore
) -> None:
    """A completion replayed as is (a journal, a retried flush) stands, counted once."""
    task_id = await submit(engine, n=2)
    row, other = await claim_rows(store, "standard", 2, "r1", 60.0)
    assert await store.apply_outcomes([outcome(row, "completed", result=IMAGES)]) == [row.id]
    again = [outcome(row, "completed", result=IMAGES), outcome(other, "completed", result=IMAGES)]
    assert await store.apply_outcomes(again) == [row.id, other.id]
    assert await counters(engine, task_id) == ("completed", 2, 0, 0)
    # A different completion of the same attempt (another result) does not stand.
    elsewhere = {"images": [{"path": "1/1-9-0.png", "sha256": "cd"}]}
    assert await store.apply_outcomes([outcome(row, "completed", result=elsewhere)]) == []
    assert (await subtask(engine, row.id))["result"] == IMAGES


# --- a canceled task: work still to do ends as canceled ---


@pytest.mark.parametrize("kind", ["retry", "defer", "release"])
async def test_requeue_of_a_canceled_task_ends_canceled(
    engine: AsyncEngine, store: PgStore, kind: str
) -> None:
    """retry/defer/release of an in-flight subtask of a canceled task: canceled, not pending."""
    task_id = await submit(engine, n=3)
    row, *_ = await claim_rows(store, "standard", 1, "r1", 60.0)
    result = await store.cancel_task(task_id)
    assert result is not None and (result["canceled"], result["in_flight"]) == (2, 1)
    await store.apply_outcomes([outcome(row, kind, delay=5.0)])
    stored = await subtask(engine, row.id)
    assert stored["status"] == "canceled" and stored["completed_at"] is not None
    assert await counters(engine, task_id) == ("canceled", 0, 0, 3)
    assert await claim_rows(store, "standard", 10, "r1", 60.0) == []


@pytest.mark.parametrize("kind", ["completed", "failed"])
async def test_a_final_outcome_of_a_canceled_task_is_kept(
    engine: AsyncEngine, store: PgStore, kind: str
) -> None:
    """An attempt that finished anyway is recorded as it ended; the task stays canceled."""
    task_id = await submit(engine, n=2)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await store.cancel_task(task_id)
    await store.apply_outcomes([outcome(row, kind)])
    assert (await subtask(engine, row.id))["status"] == kind
    expected = (1, 0) if kind == "completed" else (0, 1)
    assert await counters(engine, task_id) == ("canceled", *expected, 1)
