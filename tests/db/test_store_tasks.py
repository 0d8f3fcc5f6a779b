"""Task control, error aggregation and the runner's queue signals, through the store."""

from __future__ import annotations

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.records import ErrorRecord, TaskIsCanceled
from db.store import PgStore
from tests.db.conftest import claim_rows, counters, outcome, subtask, task
from tests.runner.conftest import submit

pytestmark = pytest.mark.anyio


def error(message: str, subtask_id: int = 1, error_type: str = "TransientError") -> ErrorRecord:
    """An error record for the sim provider's standard pool."""
    return ErrorRecord(error_type, message, "trace", "standard", "sim", subtask_id)


async def test_cancel_cancels_pending_and_reports_in_flight(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Pending subtasks are canceled at once; in-flight ones are counted, not touched."""
    task_id = await submit(engine, n=4)
    (held,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    assert await store.cancel_task(task_id) == {
        "task_id": task_id,
        "previous_status": "running",
        "canceled": 3,
        "in_flight": 1,
    }
    assert (await subtask(engine, held.id))["status"] == "processing"
    assert await counters(engine, task_id) == ("canceled", 0, 0, 3)
    assert (await task(engine, task_id))["finished_at"] is not None


async def test_cancel_of_a_finished_task_keeps_its_status(
    engine: AsyncEngine, store: PgStore
) -> None:
    """A completed task stays completed: nothing was left to cancel."""
    task_id = await submit(engine, n=1)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await store.apply_outcomes([outcome(row, "completed")])
    result = await store.cancel_task(task_id)
    assert result is not None and result["canceled"] == 0
    assert await counters(engine, task_id) == ("completed", 1, 0, 0)


async def test_cancel_and_retry_of_an_unknown_task(store: PgStore) -> None:
    """Unknown ids give None (the CLI turns it into 'no such task')."""
    assert await store.cancel_task(999) is None
    assert await store.retry_task(999) is None


async def test_retry_requeues_failed_subtasks_with_a_fresh_budget(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Failed → pending with retry_count 0 and no job id; the task runs again."""
    task_id = await submit(engine, n=2, pool="lumina")
    bad, good = await claim_rows(store, "lumina", 2, "r1", 60.0)
    await store.set_external_id(bad.id, bad.attempts, "r1", "job-1")
    await store.apply_outcomes([outcome(bad, "retry")])
    (bad,) = await claim_rows(store, "lumina", 1, "r1", 60.0)
    await store.apply_outcomes([outcome(bad, "failed"), outcome(good, "completed")])
    assert await counters(engine, task_id) == ("partial", 1, 1, 0)
    assert await store.retry_task(task_id) == {"task_id": task_id, "requeued": 1}
    stored = await subtask(engine, bad.id)
    assert (stored["status"], stored["retry_count"], stored["external_id"]) == ("pending", 0, None)
    assert await counters(engine, task_id) == ("running", 1, 0, 0)
    assert (await task(engine, task_id))["finished_at"] is None
    (again,) = await claim_rows(store, "lumina", 1, "r1", 60.0)
    assert again.id == bad.id


async def test_retry_with_nothing_failed_changes_nothing(
    engine: AsyncEngine, store: PgStore
) -> None:
    """A completed task is not reopened by a retry."""
    task_id = await submit(engine, n=1)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await store.apply_outcomes([outcome(row, "completed")])
    assert await store.retry_task(task_id) == {"task_id": task_id, "requeued": 0}
    assert await counters(engine, task_id) == ("completed", 1, 0, 0)


async def test_retry_of_a_canceled_task_is_refused(engine: AsyncEngine, store: PgStore) -> None:
    """Cancel, then retry: refused (TaskIsCanceled) and the task stays exactly as it was."""
    task_id = await submit(engine, n=3)
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await store.apply_outcomes([outcome(row, "failed", error="boom")])
    await store.cancel_task(task_id)
    before = await task(engine, task_id)
    with pytest.raises(TaskIsCanceled, match=f"task {task_id} is canceled"):
        await store.retry_task(task_id)
    assert await task(engine, task_id) == before
    assert (await subtask(engine, row.id))["status"] == "failed"
    assert await claim_rows(store, "standard", 10, "r1", 60.0) == []


async def test_list_and_get_task(engine: AsyncEngine, store: PgStore) -> None:
    """list_tasks is newest first (active only when asked); get_task counts by status."""
    old = await submit(engine, n=2)
    new = await submit(engine, n=1)
    (row,) = await claim_rows(
        store, "standard", 1, "r1", 60.0
    )  # from `old`: same priority, lower id
    await store.apply_outcomes([outcome(row, "failed", error="boom")])
    await store.cancel_task(new)
    assert [t["id"] for t in await store.list_tasks()] == [new, old]
    assert [t["id"] for t in await store.list_tasks(active_only=True)] == [old]
    detail = await store.get_task(old)
    assert detail is not None
    assert detail["counts"] == {"failed": 1, "pending": 1}
    assert [(f["id"], f["error"]) for f in detail["failed"]] == [(row.id, "boom")]
    assert await store.get_task(999) is None


# --- error aggregation ---


async def test_record_errors_merges_a_batch_and_reports_first_seen(store: PgStore) -> None:
    """Three of one fingerprint and one of another: two rows, counts 3 and 1, both new."""
    seen = await store.record_errors([error("a"), error("b"), error("a"), error("a", 7)])
    assert sorted(seen) == [("TransientError", "a"), ("TransientError", "b")]
    rows = {
        (e["error_message"], e["count"], e["last_subtask_id"]) for e in await store.top_errors()
    }
    assert rows == {("a", 3, 7), ("b", 1, 1)}


async def test_record_errors_adds_to_existing_rows_without_reporting_them_new(
    store: PgStore,
) -> None:
    """A fingerprint seen before is counted on, and is not 'first seen' again."""
    await store.record_errors([error("a")])
    assert await store.record_errors([error("a"), error("c")]) == [("TransientError", "c")]
    counts = {e["error_message"]: e["count"] for e in await store.top_errors()}
    assert counts == {"a": 2, "c": 1}


async def test_recovered_occurrences_count_in_both_totals(store: PgStore) -> None:
    """Absorbed occurrences add to count and recovered; a None subtask keeps the last one."""
    absorbed = ErrorRecord("TransientError", "a", None, "standard", "sim", None, recovered=True)
    assert await store.record_errors([absorbed, error("a", 7), absorbed]) == [
        ("TransientError", "a")
    ]
    assert await store.record_errors([absorbed]) == []  # not new again
    (row,) = await store.top_errors()
    assert (row["count"], row["recovered"], row["last_subtask_id"]) == (4, 3, 7)


async def test_same_message_of_another_type_is_another_error(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Uniqueness is (type, fingerprint): the same text under two types is two rows."""
    await store.record_errors([error("x"), error("x", error_type="PermanentError")])
    async with engine.connect() as connection:
        n = await connection.scalar(text("SELECT count(*) FROM error_logs"))
    assert n == 2


async def test_top_errors_most_frequent_first(store: PgStore) -> None:
    """Ordered by count, limited."""
    await store.record_errors([error("rare"), *[error("often")] * 3, *[error("mid")] * 2])
    assert [e["error_message"] for e in await store.top_errors(limit=2)] == ["often", "mid"]


# --- the runner's signals ---


async def test_pending_counts_only_due_rows_of_each_pool(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Claimable now: pending and due; waiting retries and held rows are not counted."""
    await submit(engine, n=4)
    await submit(engine, n=1, pool="lumina")
    waiting, held = await claim_rows(store, "standard", 2, "r1", 60.0)
    await store.apply_outcomes([outcome(waiting, "retry", delay=3600.0)])
    assert await store.pending_counts(["standard", "lumina"]) == {"standard": 2, "lumina": 1}
    assert held.id  # still processing: not pending


async def test_work_remains_until_everything_is_final(engine: AsyncEngine, store: PgStore) -> None:
    """Pending (even later) or processing is work; only final rows are not."""
    assert not await store.work_remains(["standard"])
    await submit(engine, n=1)
    assert await store.work_remains(["standard"]) and not await store.work_remains(["lumina"])
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    assert await store.work_remains(["standard"])
    await store.apply_outcomes([outcome(row, "retry", delay=3600.0)])
    assert await store.work_remains(["standard"])  # waiting for its backoff
    assert await claim_rows(store, "standard", 1, "r1", 60.0) == []
    async with engine.begin() as connection:  # make the waiting retry due now
        await connection.execute(text("UPDATE subtasks SET run_after = now()"))
    (row,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await store.apply_outcomes([outcome(row, "completed")])
    assert not await store.work_remains(["standard"])


async def test_canceled_among(engine: AsyncEngine, store: PgStore) -> None:
    """Only the canceled ones of the given ids."""
    a = await submit(engine, n=1)
    b = await submit(engine, n=1)
    await store.cancel_task(b)
    assert await store.canceled_among([a, b, 999]) == {b}
    assert await store.canceled_among([]) == set()
