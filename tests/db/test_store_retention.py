"""Retention against the real database: exactly the old finished work goes, in bounded batches."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.records import ErrorRecord, PrunedBatch
from db.store import PgStore
from runner.config import RetentionSettings
from runner.loop.duties import retention_loop, retention_once
from runner.retention import RETENTION_LOCK, prune
from tests.db.conftest import claim_rows, outcome
from tests.runner.conftest import submit, wait_until

pytestmark = pytest.mark.anyio

DAY = 86_400.0
MONTH = 30 * DAY


async def finish(
    engine: AsyncEngine,
    n: int,
    *,
    age_days: float,
    root: Path | None = None,
    kind: str = "completed",
) -> int:
    """A task of `n` subtasks run to `kind`, finished `age_days` ago; images written under root."""
    store = PgStore(engine)
    task_id = await submit(engine, n=n)
    rows = await claim_rows(store, "standard", n, "r1", 60.0)
    outcomes = []
    for row in rows:
        result = None
        if root is not None:
            image = root / str(task_id) / f"{row.id}-0.png"
            image.parent.mkdir(parents=True, exist_ok=True)
            image.write_bytes(b"png")
            result = {"images": [{"path": str(image), "sha256": "x"}]}
        error = "TransientError: boom" if kind == "failed" else None
        outcomes.append(outcome(row, kind, result=result, error=error))  # type: ignore[arg-type]
    assert await store.apply_outcomes(outcomes) == [row.id for row in rows]
    await age(engine, "tasks", "finished_at", task_id, age_days)
    return task_id


async def age(engine: AsyncEngine, table: str, column: str, row_id: Any, days: float) -> None:
    """Move one row's timestamp `days` into the past."""
    async with engine.begin() as connection:
        await connection.execute(
            text(f"UPDATE {table} SET {column} = now() - make_interval(days => :d) WHERE id = :id"),
            {"d": days, "id": row_id},
        )


async def rows(engine: AsyncEngine, sql: str) -> list[dict[str, Any]]:
    """Every row of a query, as dicts."""
    async with engine.connect() as connection:
        return [dict(r) for r in (await connection.execute(text(sql))).mappings()]


async def snapshot(engine: AsyncEngine) -> dict[str, list[dict[str, Any]]]:
    """Every row of the tables a prune touches."""
    return {
        table: await rows(engine, f"SELECT * FROM {table} ORDER BY id")
        for table in ("tasks", "subtasks", "error_logs", "outbox")
    }


async def add_event(engine: AsyncEngine, state: str, days: float) -> str:
    """An alert event in `state`, created `days` ago; returns its id."""
    async with engine.begin() as connection:
        event_id = await connection.scalar(
            text(
                "INSERT INTO outbox (event, payload, state, created_at)"
                " VALUES ('task.finished', '{}', :s, now() - make_interval(days => :d))"
                " RETURNING id"
            ),
            {"s": state, "d": days},
        )
    return str(event_id)


async def test_prune_removes_exactly_the_old_finished_work(engine: AsyncEngine) -> None:
    """Old completed/failed/canceled tasks go with their subtasks; running and recent ones stay."""
    store = PgStore(engine)
    old_done = await finish(engine, 3, age_days=40)
    old_failed = await finish(engine, 2, age_days=31, kind="failed")
    recent = await finish(engine, 2, age_days=29)
    running = await submit(engine, n=4)  # old, but still pending: never pruned
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE tasks SET created_at = now() - interval '90 days' WHERE id = :id"),
            {"id": running},
        )
    old_canceled = await submit(engine, n=2)
    await store.cancel_task(old_canceled)
    await age(engine, "tasks", "finished_at", old_canceled, 35)
    await store.record_errors([ErrorRecord("E", "old", None, "standard", "sim", 1)])
    await store.record_errors([ErrorRecord("E", "new", None, "standard", "sim", 1)])
    (old_error,) = [
        r["id"] for r in await rows(engine, "SELECT id FROM error_logs WHERE error_message = 'old'")
    ]
    await age(engine, "error_logs", "last_occurred_at", old_error, 31)
    old_delivered = await add_event(engine, "delivered", 40)
    old_failed_event = await add_event(engine, "failed", 40)
    old_pending = await add_event(engine, "pending", 40)
    new_delivered = await add_event(engine, "delivered", 1)
    kept_before = {
        r["id"]: r for r in (await snapshot(engine))["tasks"] if r["id"] in (recent, running)
    }

    report = await prune(store, MONTH)

    after = await snapshot(engine)
    assert {r["id"] for r in after["tasks"]} == {recent, running}
    assert {r["task_id"] for r in after["subtasks"]} == {recent, running}
    assert len(after["subtasks"]) == 2 + 4
    # The kept tasks are untouched: counters, status, every column.
    assert {r["id"]: r for r in after["tasks"]} == kept_before
    assert [r["error_message"] for r in after["error_logs"]] == ["new"]
    # (Finishing and erroring wrote recent pending events of their own: those stay too.)
    mine = {old_delivered, old_failed_event, old_pending, new_delivered}
    assert {str(r["id"]) for r in after["outbox"]} & mine == {old_pending, new_delivered}
    assert (report.tasks, report.subtasks, report.error_logs, report.outbox) == (3, 7, 1, 2)
    assert {old_done, old_failed, old_canceled}.isdisjoint(r["id"] for r in after["tasks"])


async def test_dry_run_counts_and_writes_nothing(engine: AsyncEngine, tmp_path: Path) -> None:
    """--dry-run reports what would go (images too) and leaves every row in place."""
    store = PgStore(engine)
    await finish(engine, 3, age_days=40, root=tmp_path)
    await finish(engine, 2, age_days=1, root=tmp_path)
    await add_event(engine, "delivered", 40)
    before = await snapshot(engine)

    report = await prune(store, MONTH, images_root=tmp_path, dry_run=True)

    assert (report.tasks, report.subtasks, report.images, report.outbox) == (1, 3, 3, 1)
    assert report.transactions == 0
    assert await snapshot(engine) == before
    assert len(list(tmp_path.rglob("*.png"))) == 5


class CountingStore(PgStore):
    """The real store, recording each prune transaction's size."""

    def __init__(self, engine: AsyncEngine) -> None:
        super().__init__(engine)
        self.batches: list[PrunedBatch] = []

    async def prune_subtasks(
        self, task_ids: Sequence[int], older_than: float, batch: int
    ) -> PrunedBatch:
        """Delegate, and remember what the transaction deleted."""
        done = await super().prune_subtasks(task_ids, older_than, batch)
        self.batches.append(done)
        return done


async def test_subtasks_go_in_bounded_batches(engine: AsyncEngine) -> None:
    """With a batch of 3, ten subtasks take four transactions, none deleting more than 3."""
    store = CountingStore(engine)
    task_id = await finish(engine, 10, age_days=40)

    report = await prune(store, MONTH, batch=3)

    assert [b.subtasks for b in store.batches] == [3, 3, 3, 1]
    # The task row goes only with its last subtask, in the last transaction.
    assert [b.tasks for b in store.batches] == [0, 0, 0, 1]
    assert report.subtasks == 10 and report.tasks == 1
    assert await rows(engine, f"SELECT id FROM tasks WHERE id = {task_id}") == []


async def test_error_rows_go_in_bounded_batches(engine: AsyncEngine) -> None:
    """Seven old error aggregates with a batch of 3: three delete transactions (3, 3, 1)."""
    store = PgStore(engine)
    await store.record_errors(
        [ErrorRecord("E", f"e{i}", None, "standard", "sim", i) for i in range(7)]
    )
    async with engine.begin() as connection:
        await connection.execute(
            text("UPDATE error_logs SET last_occurred_at = now() - interval '60 days'")
        )
    assert [await store.prune_error_logs(MONTH, 3) for _ in range(4)] == [3, 3, 1, 0]


async def test_images_are_deleted_only_with_images(engine: AsyncEngine, tmp_path: Path) -> None:
    """Without an images root the files stay; with it they go, and so does the emptied folder."""
    root = tmp_path / "out"
    first = await finish(engine, 2, age_days=40, root=root)
    await prune(PgStore(engine), MONTH)
    assert len(list((root / str(first)).glob("*.png"))) == 2  # rows gone, files kept

    second = await finish(engine, 2, age_days=40, root=root)
    report = await prune(PgStore(engine), MONTH, images_root=root)
    assert report.images == 2 and report.images_refused == 0
    assert not (root / str(second)).exists()
    assert (root / str(first)).is_dir()


async def test_image_paths_outside_the_output_dir_are_refused(
    engine: AsyncEngine, tmp_path: Path
) -> None:
    """A row naming a file outside the root, or a symlink inside it, deletes nothing there."""
    root = tmp_path / "out"
    victim = tmp_path / "victim.png"
    victim.write_bytes(b"keep me")
    (root / "9").mkdir(parents=True)
    (root / "9" / "link.png").symlink_to(victim)
    store = PgStore(engine)
    task_id = await submit(engine, n=3)
    claimed = await claim_rows(store, "standard", 3, "r1", 60.0)
    paths = [
        str(victim),
        str(root / "9" / ".." / ".." / "victim.png"),
        str(root / "9" / "link.png"),
    ]
    await store.apply_outcomes(
        [
            outcome(row, "completed", result={"images": [{"path": path}]})
            for row, path in zip(claimed, paths, strict=True)
        ]
    )
    await age(engine, "tasks", "finished_at", task_id, 40)

    report = await prune(store, MONTH, images_root=root)

    assert (report.subtasks, report.images, report.images_refused) == (3, 0, 3)
    assert victim.read_bytes() == b"keep me"
    assert (root / "9" / "link.png").is_symlink()


async def test_in_flight_rows_of_a_canceled_task_are_kept(engine: AsyncEngine) -> None:
    """A canceled task's attempt still running keeps its row and its task until it settles."""
    store = PgStore(engine)
    task_id = await submit(engine, n=3)
    (held,) = await claim_rows(store, "standard", 1, "r1", 60.0)
    await store.cancel_task(task_id)
    await age(engine, "tasks", "finished_at", task_id, 40)

    report = await prune(store, MONTH)

    assert report.subtasks == 2 and report.tasks == 0
    assert [r["id"] for r in await rows(engine, "SELECT id FROM subtasks")] == [held.id]
    await store.apply_outcomes([outcome(held, "canceled")])
    assert (await prune(store, MONTH)).tasks == 1
    assert await rows(engine, "SELECT id FROM tasks") == []


async def test_one_runner_prunes_at_a_time(engine: AsyncEngine) -> None:
    """While another process holds the retention lock, the duty skips; after, it prunes."""
    store = PgStore(engine)
    await finish(engine, 2, age_days=40)
    settings = RetentionSettings(older_than="30d")
    async with store.exclusive(RETENTION_LOCK) as mine:
        assert mine
        assert await retention_once(PgStore(engine), settings, Path("/nonexistent")) is None
    assert len(await rows(engine, "SELECT id FROM tasks")) == 1
    report = await retention_once(store, settings, Path("/nonexistent"))
    assert report is not None and report.tasks == 1


async def test_the_retention_duty_prunes_on_its_own(engine: AsyncEngine, tmp_path: Path) -> None:
    """The periodic duty, configured by [retention], removes old work and its images."""
    root = tmp_path / "out"
    task_id = await finish(engine, 2, age_days=10, root=root)
    kept = await finish(engine, 1, age_days=1, root=root)
    settings = RetentionSettings(older_than="7d", images=True, interval="1h")

    async def gone() -> bool:
        return not await rows(engine, f"SELECT id FROM tasks WHERE id = {task_id}")

    async with anyio.create_task_group() as group:
        group.start_soon(retention_loop, PgStore(engine), settings, root)
        await wait_until(gone, timeout=20)
        group.cancel_scope.cancel()
    assert not (root / str(task_id)).exists()
    assert [r["id"] for r in await rows(engine, "SELECT id FROM tasks")] == [kept]
