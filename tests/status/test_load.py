"""load_status reads exact numbers from a seeded database, cheaply and consistently."""

from __future__ import annotations

import json
from datetime import timedelta

import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from runner.status_read import load_status
from tests.status.conftest import Seeded

pytestmark = pytest.mark.anyio


async def test_pools_are_summed_over_live_runners_with_pending_from_counters(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    """Limits/running from live heartbeats only; pending = counters' remaining − in flight."""
    snapshot = await load_status(PgStore(engine), now=seeded.now)
    pools = {p.name: p for p in snapshot.pools}
    standard, lumina = pools["standard"], pools["lumina"]

    # runner-live + runner-two; the stale runner's 99s are ignored.
    assert (standard.limit, standard.max, standard.running) == (25, 100, 3)
    assert (lumina.limit, lumina.max, lumina.running) == (6, 40, 0)
    assert standard.executors == lumina.executors == 2
    # alpha 5 remaining + waiting 5, minus alpha's 2 in flight; the canceled task's
    # in-flight subtask is not part of any active task's remaining.
    assert standard.pending == 8
    assert standard.processing == 3
    assert lumina.pending == 4
    assert lumina.processing == 0
    assert standard.claimable == 8  # from the freshest runner's own count
    assert standard.policy == "adaptive/queue-depth"
    assert (standard.paused_for, lumina.paused_for) == (0, 3.5)


async def test_scaling_decisions_merged_newest_first_and_limit_history(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    """Every live runner's history, newest first with its executor id; Σ limit over time."""
    snapshot = await load_status(PgStore(engine), now=seeded.now)
    pools = {p.name: p for p in snapshot.pools}
    lumina = pools["lumina"]
    assert [(d.executor_id, d.limit) for d in lumina.decisions] == [
        ("runner-live", 4),
        ("runner-live", 2),
    ]
    assert lumina.decisions[1].reason.startswith("rate_limited: 4 → 2")
    assert lumina.decisions[0].at == seeded.now - timedelta(seconds=30)

    # 30 samples over 10 minutes. standard: 10 + 10 until runner-live's scale-up 300 s ago.
    standard = pools["standard"].limit_history
    assert len(standard) == 30
    assert standard[:15] == (20,) * 15
    assert standard[15:] == (25,) * 15
    # lumina: 4 + 2, except between the cut (60 s ago) and the recovery (30 s ago).
    assert lumina.limit_history == (6,) * 27 + (4,) + (6,) * 2


async def test_throughput_and_eta_from_the_completion_rollups(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    """Only rollup buckets inside each window count; each pool over its own work's span."""
    t = (await load_status(PgStore(engine), now=seeded.now)).throughput
    # runner-live speaks for [now - 62 s, now - 2 s]: alpha's 30 s (2 images) + lumina's 10 s.
    assert t.images_per_min_1m == 3.0
    assert t.subtasks_per_min_1m == 2.0
    # 5 min: alpha 30/90/200 s = 3 subtasks, 6 images over 300 s; lumina 10/100 s = 2 over
    # the 118 s between its start (120 s ago) and the runner's snapshot (2 s ago).
    lumina = 2 * 60 / 118
    assert t.images_per_min_5m == round(1.2 + lumina, 1) == 2.2
    assert t.subtasks_per_min_5m == round(0.6 + lumina, 1) == 1.6
    # alpha 5 × 2 + lumina 4 × 1 + waiting 5 × 1 images still to make.
    assert t.remaining_images == 19
    assert t.eta_seconds == pytest.approx(19 * 60 / (1.2 + lumina), abs=0.05)


async def test_tasks_by_priority_with_rates_and_recent_ones(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    """Active tasks by priority desc then id with per-task rate and ETA; then the finished."""
    snapshot = await load_status(PgStore(engine), now=seeded.now)
    assert snapshot.active_tasks == 3
    assert [t.name for t in snapshot.tasks] == ["lumina posters", "alpha portraits", "waiting task"]
    lumina, alpha, waiting = snapshot.tasks
    assert (alpha.completed, alpha.failed, alpha.canceled, alpha.total) == (4, 1, 0, 10)
    assert alpha.rate_per_min == 0.6  # 3 in the 5-minute window
    assert alpha.eta_seconds == pytest.approx(5 * 60 / 0.6)
    # lumina started 2 minutes ago: its 2 completions are over 118 s (to the runner's last
    # snapshot), not 300 s.
    assert lumina.rate_per_min == 1.0
    assert lumina.eta_seconds == pytest.approx(4 * 118 / 2, abs=0.05)
    assert waiting.rate_per_min == 0.0
    assert waiting.eta_seconds is None
    assert [(t.name, t.status) for t in snapshot.recent] == [
        ("canceled job", "canceled"),
        ("finished batch", "completed"),
    ]
    assert snapshot.recent[1].eta_seconds is None


async def test_errors_and_executors_with_the_stale_one_flagged(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    """Top errors by count; running-but-silent executors flagged; old stopped ones hidden."""
    snapshot = await load_status(PgStore(engine), now=seeded.now)
    assert [(e.error_type, e.count) for e in snapshot.errors] == [
        ("TimeoutError", 12),
        ("ProviderError", 7),
        ("ContentPolicy", 1),
    ]
    assert snapshot.errors[1].last_seen == seeded.now - timedelta(seconds=10)
    executors = {e.id: e for e in snapshot.executors}
    assert set(executors) == {"runner-live", "runner-two", "runner-stale", "runner-old"}
    assert {e.id for e in snapshot.executors if e.stale} == {"runner-stale"}
    assert executors["runner-live"].heartbeat_age == 2.0
    assert executors["runner-stale"].heartbeat_age == 60.0
    assert not executors["runner-old"].stale  # stopped cleanly: not stale, just stopped
    assert executors["runner-live"].host == "host-runner-live"


async def test_a_stale_threshold_can_be_tightened(engine: AsyncEngine, seeded: Seeded) -> None:
    """With a 2.5 s threshold runner-two (3 s) is stale too and drops out of the sums."""
    snapshot = await load_status(PgStore(engine), now=seeded.now, stale_after=2.5)
    assert {e.id for e in snapshot.executors if e.stale} == {"runner-two", "runner-stale"}
    standard = next(p for p in snapshot.pools if p.name == "standard")
    assert (standard.limit, standard.executors) == (15, 1)


async def test_snapshot_is_json_and_defaults_to_the_database_clock(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    """to_json() survives json.dumps; without `now` the database's clock is used."""
    snapshot = await load_status(PgStore(engine))
    assert snapshot.at >= seeded.now
    data = json.loads(json.dumps(snapshot.to_json()))
    assert data["tasks"][0]["name"] == "lumina posters"
    assert {p["name"] for p in data["pools"]} == {"standard", "lumina"}
    assert data["at"] == snapshot.at.isoformat()


async def test_empty_database(engine: AsyncEngine) -> None:
    """No tasks, no runners: zeros and no ETA, nothing raises."""
    snapshot = await load_status(PgStore(engine))
    assert snapshot.active_tasks == 0
    assert (snapshot.tasks, snapshot.recent, snapshot.errors, snapshot.executors) == ((),) * 4
    assert all(p.limit == 0 and p.pending == 0 and p.claimable is None for p in snapshot.pools)
    assert snapshot.throughput.eta_seconds == 0.0


async def test_no_status_query_reads_completed_subtasks(engine: AsyncEngine) -> None:
    """Only in-flight counts read subtasks, through a partial index over processing rows."""
    from db.status_queries import QUERIES

    assert [
        name for name, sql in QUERIES.items() if "subtasks s" in sql or "FROM subtasks" in sql
    ] == ["processing", "providers"]  # each counts in-flight rows only
    async with engine.connect() as connection:
        await connection.execute(text("SET enable_seqscan = off"))
        plan = "\n".join(
            row[0] for row in await connection.execute(text(f"EXPLAIN {QUERIES['processing']}"))
        )
    # Any of the partial indexes over in-flight rows (status = 'processing') will do.
    assert any(
        index in plan
        for index in ("ix_subtasks_in_flight", "ix_subtasks_holder", "ix_subtasks_lease")
    ), plan
    assert "ix_subtasks_completed_at" not in plan


async def test_a_damaged_rollup_never_breaks_the_read(engine: AsyncEngine, seeded: Seeded) -> None:
    """Garbage in an executors row's rollup is dropped; the live runner's rates still stand."""
    hostile = {
        "standard": {
            "completions": {
                "at": 1,
                "since": 0,
                "bucket": 10,
                "first": 0,
                "subtasks": [[0, "x"], None, True, -5, 1.5, 10**30],
                "tasks": {str(2**63): [[0, 1]], "12345678901234567890123": [], "x": 1},
            }
        },
        "lumina": {"completions": {"at": "soon", "bucket": -1}},
    }
    async with engine.begin() as connection:
        await connection.execute(
            text(
                'INSERT INTO executors (id, "group", host, pid, version, state, started_at,'
                " heartbeat_at, pools) VALUES ('runner-odd', 'default', 'h', 1, '0', 'running',"
                " :now, :now, CAST(:pools AS jsonb))"
            ),
            {"now": seeded.now, "pools": json.dumps(hostile)},
        )
    t = (await load_status(PgStore(engine), now=seeded.now)).throughput
    assert (t.images_per_min_1m, t.subtasks_per_min_1m) == (3.0, 2.0)
