"""Time one `imgrun status` refresh (`load_status`) against 1,000,000 subtasks.

    .venv/bin/python -m bench.status_refresh [--subtasks 1000000] [--runs 30] [--explain]

Builds a fresh database on a throwaway embedded server with a realistic mix, entirely
server-side (INSERT … SELECT generate_series): 20 tasks of equal size — 4 finished long ago
(2% failed), 4 running (20% done, the completions spread over the last 10 minutes so the
5-minute throughput window holds ~20k rows, 25 in flight each), 12 untouched — so ~76% of
the subtasks are pending; consistent task counters; four executors (two live with full
scaling histories, one stale, one stopped); 50 aggregated errors. Then VACUUM ANALYZE
(what autovacuum does after a bulk load), a warm-up, and `--runs` timed refreshes.
Target: median ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from datetime import timedelta
from typing import Any

import anyio
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import embedded_server, fresh_database
from db.engine import open_engine
from db.status_queries import QUERIES, RATE_WINDOWS, STOPPED_SHOWN_FOR
from db.store import PgStore
from runner.status_read import load_status

TASKS = 20

SEED_TASKS = """
INSERT INTO tasks (id, name, user_id, pool, provider, priority, prompts, variables, ratio,
                   seed, batch_size, max_retries, total_subtasks, total_images, status,
                   created_at, started_at, finished_at)
SELECT i, 'bench task ' || i, 'bench', CASE WHEN i % 4 = 0 THEN 'lumina' ELSE 'standard' END,
       'sim', 1 + i % 5, '["a {x}"]', '{"x": ["v"]}', '1:1', i, 1 + i % 3, 3, :per_task,
       :per_task * (1 + i % 3),
       CASE WHEN i <= 4 THEN 'partial' WHEN i <= 8 THEN 'running' ELSE 'pending' END,
       now() - interval '4 hours',
       CASE WHEN i <= 8 THEN now() - interval '3 hours' END,
       CASE WHEN i <= 4 THEN now() - interval '1 hour' + i * interval '1 minute' END
FROM generate_series(1, :tasks) AS i
"""

# Per task i and ordinal g: finished tasks (i ≤ 4) are done, running ones (5–8) have done
# their first 20% (completions spread evenly over the last 10 minutes) and hold 25 leases.
SEED_SUBTASKS = """
INSERT INTO subtasks (task_id, ordinal, pool, priority, prompt, params, status, attempts,
                      executor_id, lease_expires_at, started_at, completed_at, result, error)
SELECT t.id, g, t.pool, t.priority, 'a v' || g, jsonb_build_object('seed', g),
       x.status, CASE WHEN x.status = 'pending' THEN 0 ELSE 1 END,
       CASE WHEN x.status = 'processing' THEN 'bench-' || (g % 2) END,
       CASE WHEN x.status = 'processing' THEN now() + interval '60 seconds' END,
       CASE WHEN x.status <> 'pending' THEN now() - interval '3 hours' END,
       CASE WHEN x.status IN ('completed', 'failed') THEN
            CASE WHEN t.id <= 4 THEN now() - interval '3 hours' + g * interval '100 ms'
                 ELSE now() - (:done - g) * (interval '600 seconds' / :done) END END,
       CASE WHEN x.status = 'completed'
            THEN jsonb_build_object('images', jsonb_build_array(jsonb_build_object(
                 'path', t.id || '/' || g || '-0.png', 'sha256', md5(g::text)))) END,
       CASE WHEN x.status = 'failed' THEN 'HTTP 500 from provider' END
FROM tasks t
CROSS JOIN generate_series(0, :per_task - 1) AS g
CROSS JOIN LATERAL (SELECT CASE
    WHEN t.id <= 4 THEN CASE WHEN g % 50 = 0 THEN 'failed' ELSE 'completed' END
    WHEN t.id <= 8 AND g < :done THEN CASE WHEN g % 100 = 7 THEN 'failed' ELSE 'completed' END
    WHEN t.id <= 8 AND g < :done + 25 THEN 'processing'
    ELSE 'pending' END AS status) AS x
WHERE (t.id BETWEEN 5 AND 8 AND g < :done) = :recent
ORDER BY t.id, g
"""

SEED_COUNTERS = """
UPDATE tasks t SET completed_subtasks = c.completed, failed_subtasks = c.failed
FROM (SELECT task_id, count(*) FILTER (WHERE status = 'completed') AS completed,
             count(*) FILTER (WHERE status = 'failed') AS failed
      FROM subtasks GROUP BY task_id) c
WHERE t.id = c.task_id
"""


def history(now: float, start_limit: int, step: int) -> list[dict[str, Any]]:
    """A full (20-entry) scaling history: a ramp with one 429 cut in the middle."""
    entries, limit = [], start_limit
    for n in range(20):
        if n == 10:
            old, limit = limit, max(1, limit // 2)
            reason = f"rate_limited: {old} → {limit} (×0.5), paused 5s"
        else:
            old, limit = limit, limit + step
            reason = f"pending {10 * old} > 2×limit {old}, latency ok: {old} → {limit}"
        entries.append({"at": now - (20 - n) * 25.0, "limit": limit, "reason": reason})
    return entries


def executor_pools(now: float) -> dict[str, Any]:
    """A runner's heartbeat snapshot of both pools."""
    return {
        "standard": {
            "limit": 40,
            "max": 50,
            "running": 37,
            "pending": 600_000,
            "policy": "adaptive",
            "paused_for": 0,
            "history": history(now, 10, 5),
        },
        "lumina": {
            "limit": 12,
            "max": 20,
            "running": 12,
            "pending": 150_000,
            "policy": "adaptive",
            "paused_for": 0,
            "history": history(now, 2, 2),
        },
    }


async def build(engine: AsyncEngine, subtasks: int) -> None:
    """Seed the mix described in the module docstring."""
    per_task = subtasks // TASKS
    done = per_task // 5
    async with engine.begin() as connection:
        await connection.execute(text(SEED_TASKS), {"tasks": TASKS, "per_task": per_task})
        await connection.execute(text("SELECT setval('tasks_id_seq', :n)"), {"n": TASKS})
        params = {"per_task": per_task, "done": done}
        await connection.execute(text(SEED_SUBTASKS), {**params, "recent": False})
    # The recent completions last, in their own short transaction: now() is the start of
    # the transaction, so this keeps the throughput window anchored close to the timing.
    async with engine.begin() as connection:
        await connection.execute(text(SEED_SUBTASKS), {**params, "recent": True})
        await connection.execute(text(SEED_COUNTERS))


async def seed_runners(engine: AsyncEngine) -> None:
    """Executors (heartbeats as of now) and aggregated errors."""
    now = time.time()
    async with engine.begin() as connection:
        await connection.execute(text("DELETE FROM executors"))
        await connection.execute(text("DELETE FROM error_logs"))
        for name, age, state in (
            ("bench-0", 1, "running"),
            ("bench-1", 2, "running"),
            ("bench-stale", 120, "running"),
            ("bench-stopped", 60, "stopped"),
        ):
            await connection.execute(
                text(
                    'INSERT INTO executors (id, "group", host, pid, version, state, started_at,'
                    " heartbeat_at, pools) VALUES (:id, 'default', 'bench-host', 4242, '0.1.0',"
                    " :state, now() - interval '2 hours', now() - make_interval(secs => :age),"
                    " CAST(:pools AS jsonb))"
                ),
                {"id": name, "state": state, "age": age, "pools": json.dumps(executor_pools(now))},
            )
        await connection.execute(
            text(
                "INSERT INTO error_logs (error_type, error_message, pool, provider, count,"
                " first_occurred_at, last_occurred_at, last_subtask_id)"
                " SELECT 'ProviderError', 'HTTP 5' || lpad(i::text, 2, '0') || ' from <url>',"
                " 'standard', 'sim', 1000 - i * 7, now() - interval '3 hours',"
                " now() - i * interval '10 seconds', i FROM generate_series(1, 50) AS i"
            )
        )


async def maintenance(engine: AsyncEngine, command: str) -> None:
    """ANALYZE or VACUUM ANALYZE (neither can run inside a transaction)."""
    async with engine.connect() as connection:
        connection = await connection.execution_options(isolation_level="AUTOCOMMIT")
        await connection.execute(text(command))


async def explain(engine: AsyncEngine) -> None:
    """EXPLAIN ANALYZE each status query (to check the plans stay index-bound)."""
    async with engine.connect() as connection:
        now = (await connection.execute(text("SELECT now()"))).scalar_one()
        params = {
            "now": now,
            "short_since": now - timedelta(seconds=RATE_WINDOWS[0]),
            "long_since": now - timedelta(seconds=RATE_WINDOWS[1]),
            "stopped_since": now - timedelta(seconds=STOPPED_SHOWN_FOR),
            "tasks": 20,
            "recent": 5,
            "errors": 5,
        }
        for name, sql in QUERIES.items():
            used = {k: v for k, v in params.items() if f":{k}" in sql}
            plan = await connection.execute(
                text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}"), used
            )
            print(f"--- {name}")
            print("\n".join(row[0] for row in plan.all()))


async def bench(server_url: str, subtasks: int, runs: int, show_plans: bool) -> None:
    """Build the database, then time refreshes."""
    url = await fresh_database(server_url, "bench_status")
    async with open_engine(url) as engine:
        started = time.perf_counter()
        await build(engine, subtasks)
        async with engine.connect() as connection:
            counts: dict[str, int] = dict(
                (
                    await connection.execute(
                        text("SELECT status, count(*) FROM subtasks GROUP BY status")
                    )
                ).all()
            )
        print(
            f"built {sum(counts.values()):,} subtasks in {time.perf_counter() - started:.1f} s:"
            f" {', '.join(f'{k} {v:,}' for k, v in sorted(counts.items()))}"
        )
        # Fresh rows first: no visibility map yet, so index-only scans still visit the
        # heap (the state of a busy table between autovacuums), then the settled state.
        await maintenance(engine, "ANALYZE")
        await seed_runners(engine)
        fresh = await time_refreshes(engine, runs)
        await maintenance(engine, "VACUUM ANALYZE")
        await seed_runners(engine)
        if show_plans:
            await explain(engine)
        settled = await time_refreshes(engine, runs)
        snapshot = await load_status(PgStore(engine))
    t = snapshot.throughput
    print(
        f"snapshot: {snapshot.active_tasks} active tasks,"
        f" pending {', '.join(f'{p.name} {p.pending:,}' for p in snapshot.pools)},"
        f" {t.images_per_min_1m:,.0f} img/min (1m), {t.images_per_min_5m:,.0f} img/min (5m),"
        f" {len(snapshot.executors)} executors"
        f" ({sum(e.stale for e in snapshot.executors)} stale)"
    )
    for label, timings in (("after ANALYZE only", fresh), ("after VACUUM ANALYZE", settled)):
        p95 = timings[min(len(timings) - 1, round(0.95 * (len(timings) - 1)))]
        print(
            f"load_status over {subtasks:,} subtasks, {label}:"
            f" median {statistics.median(timings):.1f} ms, p95 {p95:.1f} ms,"
            f" min {timings[0]:.1f} ms, max {timings[-1]:.1f} ms"
            f" ({runs} refreshes after 3 warm-ups; target ≤ 100 ms median)"
        )


async def time_refreshes(engine: AsyncEngine, runs: int) -> list[float]:
    """Milliseconds per `load_status`, sorted, after a warm-up."""
    for _ in range(3):
        await load_status(PgStore(engine))
    timings = []
    for _ in range(runs):
        started = time.perf_counter()
        await load_status(PgStore(engine))
        timings.append((time.perf_counter() - started) * 1000)
    return sorted(timings)


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=1_000_000)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--explain", action="store_true", help="print each query's plan")
    args = parser.parse_args()
    with embedded_server() as server_url:
        anyio.run(bench, server_url, args.subtasks, args.runs, args.explain)


if __name__ == "__main__":
    main()
