"""The status projection without a database: rows in, rates, ETAs, sparklines and staleness out."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from db.snapshots import Completions, LimitChange, PoolSnapshot, encode_pools
from db.status_queries import StatusRows
from runner.view.projection import (
    SPARKLINE_POINTS,
    SPARKLINE_SPAN,
    eta,
    limit_at,
    project,
)

NOW = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T = NOW.timestamp()
STEP = SPARKLINE_SPAN / (SPARKLINE_POINTS - 1)  # seconds between sparkline samples


def ago(seconds: float) -> datetime:
    return NOW - timedelta(seconds=seconds)


def executor_row(
    name: str, *, age: float, pools: dict[str, PoolSnapshot], state: str = "running"
) -> dict[str, Any]:
    return {
        "id": name,
        "group": "default",
        "host": "h",
        "pid": 1,
        "version": "0",
        "state": state,
        "started_at": ago(3600),
        "heartbeat_at": ago(age),
        "pools": encode_pools(pools),
        "age": age,
    }


AT = 10_000.0  # a runner's own wall clock at its last snapshot: any value, skew never matters


def rollup_row(
    name: str,
    *,
    age: float,
    pools: dict[str, Completions],
    state: str = "running",
) -> dict[str, Any]:
    """An executors row whose pools carry only completion rollups."""
    row = executor_row(name, age=age, pools={p: PoolSnapshot() for p in pools}, state=state)
    for pool, completions in pools.items():
        row["pools"][pool]["completions"] = completions.to_json()
    return row


Pairs = tuple[tuple[float, int], ...]  # (bucket start, count): easier to read than dense


def rollup(*tasks: tuple[int, int, Pairs], at: float = AT, since: float = 0.0) -> Completions:
    """A rollup from (task id, batch size, pairs) entries, in dense buckets like a runner's."""
    starts = sorted({start for _, _, pairs in tasks for start, _ in pairs})
    first = starts[0] if starts else at - at % 10
    size = int((starts[-1] - first) // 10) + 1 if starts else 0

    def dense(pairs: Pairs, weight: int = 1) -> list[int]:
        counts = [0] * size
        for start, n in pairs:
            counts[int((start - first) // 10)] += n * weight
        return counts

    def summed(weighted: bool) -> tuple[int, ...]:
        rows = [dense(pairs, batch if weighted else 1) for _, batch, pairs in tasks]
        return tuple(map(sum, zip(*rows, strict=True))) if rows else ()

    return Completions(
        at=at,
        since=since,
        first=first,
        subtasks=summed(False),
        images=summed(True),
        tasks=tuple((task, tuple(dense(pairs))) for task, _, pairs in tasks),
    )


def starts(**ages: float) -> tuple[dict[str, Any], ...]:
    """task_starts rows: task id (as t<N>) → started that many seconds before NOW."""
    return tuple({"id": int(k[1:]), "started_at": ago(v)} for k, v in ages.items())


def task_row(task_id: int, status: str, total: int, completed: int, batch: int = 1) -> Any:
    return {
        "id": task_id,
        "name": f"t{task_id}",
        "pool": "standard",
        "provider": "sim",
        "priority": 1,
        "status": status,
        "total_subtasks": total,
        "completed_subtasks": completed,
        "failed_subtasks": 0,
        "canceled_subtasks": 0,
        "batch_size": batch,
        "total_images": total * batch,
        "created_at": ago(3600),
        "started_at": ago(3600),
        "finished_at": None,
    }


def rows(**overrides: Any) -> StatusRows:
    base: dict[str, Any] = dict(
        now=NOW,
        queue=(),
        processing=(),
        task_starts=(),
        active=(),
        recent=(),
        errors=(),
        executors=(),
    )
    return StatusRows(**{**base, **overrides})


def test_throughput_over_the_windows_weighted_by_batch_size() -> None:
    """Batch-2 task: 20 in the last minute, 60 in the last 5: 20 and 12 subtasks/min."""
    # Live runner: its windows end at its snapshot (AT): 1 min = [9940, AT], 5 min = [9700, AT].
    series = ((9_600.0, 100), (9_800.0, 40), (9_950.0, 20))  # 9_600 is older than 5 min
    snapshot = project(
        rows(
            executors=(rollup_row("r", age=2, pools={"standard": rollup((1, 2, series))}),),
            task_starts=starts(t1=3600),
            queue=({"pool": "standard", "tasks": 1, "remaining": 30, "remaining_images": 60},),
        )
    )
    t = snapshot.throughput
    assert (t.subtasks_per_min_1m, t.subtasks_per_min_5m) == (20.0, 12.0)
    assert (t.images_per_min_1m, t.images_per_min_5m) == (40.0, 24.0)
    # 60 images left at 24 images/min.
    assert t.remaining_images == 60 and t.eta_seconds == 150.0
    pools = {p.name: p.images_per_min for p in snapshot.pools}
    assert pools == {"standard": 24.0, "lumina": 0.0}


def test_a_young_task_is_rated_over_its_own_age_not_the_whole_window() -> None:
    """Started 40 s ago with 20 done: 30/min, not 20 per 5 min; never below 10 s of span."""
    # Heartbeat 0 s ago: the task's start (NOW - 40 s) is 9_960 on the runner's clock.
    young = rollup((1, 1, ((9_960.0, 10), (9_990.0, 10))))
    snapshot = project(
        rows(
            executors=(rollup_row("r", age=0, pools={"standard": young}),),
            task_starts=starts(t1=40),
            active=(task_row(1, "running", total=100, completed=20),),
        )
    )
    assert snapshot.throughput.subtasks_per_min_5m == 30.0
    assert snapshot.tasks[0].rate_per_min == 30.0
    newborn = rollup((1, 1, ((9_990.0, 5),)))
    snapshot = project(
        rows(
            executors=(rollup_row("r", age=0, pools={"standard": newborn}),),
            task_starts=starts(t1=1),
        )
    )
    assert snapshot.throughput.subtasks_per_min_5m == 30.0  # 5 over MIN_RATE_SPAN (10 s)


def test_a_young_runner_is_rated_over_its_own_life() -> None:
    """A runner counting for 40 s (an old task): its 20 completions are 30/min."""
    completions = rollup((1, 1, ((9_960.0, 10), (9_990.0, 10))), since=9_960.0)
    snapshot = project(
        rows(
            executors=(rollup_row("r", age=1, pools={"standard": completions}),),
            task_starts=starts(t1=3600),
        )
    )
    assert snapshot.throughput.subtasks_per_min_5m == 30.0
    assert snapshot.throughput.subtasks_per_min_1m == 20.0 * 60 / 40


def test_runners_add_up_whatever_their_clocks() -> None:
    """Two runners 490,000 s apart on their own clocks, 30 and 45 in 5 min: 6 + 9 per min."""
    a = rollup((1, 1, ((9_800.0, 30),)))
    b = rollup((1, 1, ((499_800.0, 45),)), at=500_000.0)
    snapshot = project(
        rows(
            executors=(
                rollup_row("a", age=2, pools={"standard": a}),
                rollup_row("b", age=4, pools={"standard": b}),
            ),
            task_starts=starts(t1=3600),
            active=(task_row(1, "running", total=200, completed=75),),
        )
    )
    assert snapshot.throughput.subtasks_per_min_5m == 15.0
    assert snapshot.tasks[0].rate_per_min == 15.0
    assert snapshot.tasks[0].eta_seconds == 125 * 60 / 15.0


def test_a_stopped_runner_counts_until_its_completions_leave_the_window() -> None:
    """Stopped 100 s ago: its window ends at now (AT + 100), so its older buckets drop out."""
    # 5 min = [9_800, 10_100] on its clock; 1 min = [10_040, 10_100]: empty.
    done = rollup((1, 1, ((9_750.0, 99), (9_850.0, 30))))
    for state, age in (("stopped", 100.0), ("running", 100.0)):  # stopped, or stale
        snapshot = project(
            rows(
                executors=(rollup_row("r", age=age, pools={"standard": done}, state=state),),
                task_starts=starts(t1=3600),
            )
        )
        assert snapshot.throughput.subtasks_per_min_5m == 6.0, state
        assert snapshot.throughput.subtasks_per_min_1m == 0.0, state


def test_pools_are_rated_apart() -> None:
    """Lumina's images count for lumina, standard's for standard; the cluster sums both."""
    snapshot = project(
        rows(
            executors=(
                rollup_row(
                    "r",
                    age=0,
                    pools={
                        "standard": rollup((1, 3, ((9_900.0, 10),))),
                        "lumina": rollup((2, 1, ((9_900.0, 5),))),
                    },
                ),
            ),
            task_starts=starts(t1=3600, t2=3600),
        )
    )
    pools = {p.name: p.images_per_min for p in snapshot.pools}
    assert pools == {"standard": 6.0, "lumina": 1.0}  # 30 and 5 images per 5 min
    assert snapshot.throughput.images_per_min_5m == 7.0


@pytest.mark.parametrize(
    ("remaining", "per_min", "expected"),
    [(0, 0.0, 0.0), (-1, 5.0, 0.0), (10, 0.0, None), (10, 4.0, 150.0), (1, 3.0, 20.0)],
)
def test_eta(remaining: int, per_min: float, expected: float | None) -> None:
    """Nothing left: 0; nothing completing: unknown; else remaining over the rate."""
    assert eta(remaining, per_min) == expected


def test_task_eta_only_while_active() -> None:
    """An active task gets remaining / its own rate; a finished one none."""
    completions = rollup((1, 1, ((9_800.0, 25),)))  # 25 per 5 min: 5/min
    snapshot = project(
        rows(
            executors=(rollup_row("r", age=1, pools={"standard": completions}),),
            task_starts=starts(t1=3600),
            active=(task_row(1, "running", total=100, completed=50),),
            recent=(replace_status(task_row(1, "completed", total=100, completed=100)),),
        )
    )
    assert snapshot.tasks[0].rate_per_min == 5.0
    assert snapshot.tasks[0].eta_seconds == 50 * 60 / 5.0
    assert snapshot.recent[0].eta_seconds is None


def replace_status(row: dict[str, Any]) -> dict[str, Any]:
    return {**row, "finished_at": ago(10)}


def test_limit_at_uses_from_limit_before_the_oldest_change() -> None:
    """Before the first change the limit is its from_limit; after each, its to_limit."""
    history = (LimitChange(100.0, 10, 15, "x"), LimitChange(200.0, 15, 5, "y"))
    assert limit_at(history, current=5, at=50.0) == 10
    assert limit_at(history, current=5, at=100.0) == 15
    assert limit_at(history, current=5, at=199.0) == 15
    assert limit_at(history, current=5, at=250.0) == 5
    assert limit_at((), current=7, at=0.0) == 7


def test_sparkline_sums_live_runners_and_ignores_reason_wording() -> None:
    """Σ limit sampled over 10 min from LimitChange records; rewording reasons changes nothing."""
    up = PoolSnapshot(
        limit=15, max=50, history=(LimitChange(T - 300, 10, 15, "pending high: 10 → 15"),)
    )
    flat = PoolSnapshot(limit=10, max=50)
    executors = (
        executor_row("a", age=1, pools={"standard": up}),
        executor_row("b", age=2, pools={"standard": flat}),
    )
    pools = {p.name: p for p in project(rows(executors=executors)).pools}
    history = pools["standard"].limit_history
    assert len(history) == SPARKLINE_POINTS
    changed_at = SPARKLINE_POINTS - 1 - int(300 // STEP)  # first sample at or after T - 300
    assert history[:changed_at] == (20,) * changed_at
    assert history[changed_at:] == (25,) * (SPARKLINE_POINTS - changed_at)

    reworded = replace(up, history=(replace(up.history[0], reason="grew, queue deep"),))
    executors2 = (executors[0] | {"pools": encode_pools({"standard": reworded})}, executors[1])
    again = {p.name: p for p in project(rows(executors=executors2)).pools}
    assert again["standard"].limit_history == history
    assert [(d.from_limit, d.limit) for d in again["standard"].decisions] == [(10, 15)]


def test_stale_and_stopped_executors_are_left_out_of_the_pools() -> None:
    """A heartbeat older than stale_after marks the runner stale; its limits are not summed."""
    live = PoolSnapshot(limit=10, max=50, running=2, pending=7, policy="adaptive")
    ghost = PoolSnapshot(limit=99, max=99, running=99, pending=99, policy="fixed")
    executors = (
        executor_row("live", age=3, pools={"standard": live}),
        executor_row("stale", age=30, pools={"standard": ghost}),
        executor_row("gone", age=1, pools={"standard": ghost}, state="stopped"),
    )
    snapshot = project(rows(executors=executors), stale_after=15.0)
    assert [(e.id, e.stale) for e in snapshot.executors] == [
        ("live", False),
        ("stale", True),
        ("gone", False),
    ]
    standard = {p.name: p for p in snapshot.pools}["standard"]
    assert (standard.limit, standard.running, standard.executors) == (10, 2, 1)
    assert (standard.claimable, standard.policy) == (7, "adaptive")
    # With a looser threshold the 30-s-old runner counts again.
    looser = {p.name: p for p in project(rows(executors=executors), stale_after=60).pools}
    assert looser["standard"].limit == 109


def test_pending_is_counters_remaining_minus_active_in_flight() -> None:
    """In-flight rows of active tasks are not pending; a canceled task's ones never were."""
    snapshot = project(
        rows(
            queue=({"pool": "lumina", "tasks": 2, "remaining": 12, "remaining_images": 12},),
            processing=(
                {"pool": "lumina", "active": True, "n": 3},
                {"pool": "lumina", "active": False, "n": 1},
            ),
        )
    )
    lumina = {p.name: p for p in snapshot.pools}["lumina"]
    assert (lumina.pending, lumina.processing, lumina.claimable) == (9, 4, None)
    assert snapshot.active_tasks == 2
