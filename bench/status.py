"""`imgrun status` refresh latency at 1,000,000 subtasks: idle, and while subtasks complete.

    .venv/bin/python -m bench.status [--runs 3] [--subtasks 1000000] [--refreshes 30]
                                     [--load replay|runners] [--rate 5000] [--runners 2]
                                     [--limit 200] [--load-seconds 10] [--explain]

Builds a fresh database on a throwaway embedded server with a realistic mix, entirely
server-side (INSERT … SELECT generate_series): 20 tasks of equal size — 4 finished long ago
(2% failed), 4 running (20% done, 25 in flight each), 12 untouched — so ~76% of the subtasks
are pending; consistent task counters; four executors (two live, one stale, one stopped) whose
heartbeats carry full scaling histories and full completion rollups; 50 aggregated errors.
Then ANALYZE (fresh rows, no VACUUM: the least favourable state for index-only scans).

1. Idle: `--runs` rounds of `--refreshes` timed `load_status` calls (what `imgrun status` does).
2. Under load: one more task on the `null` provider is drained while `--runs` rounds of
   `--load-seconds` each refresh status 4 times a second. The completion rate achieved in
   each round comes from the task's own counter, whatever was asked. The load is either
   - `replay` (default): the runners' database traffic, replayed at `--rate` completions/s by
     one driver process (bench/replay.py) playing `--runners` runners that each hold
     `--limit` rows — the same claim, fenced outcome, heartbeat-with-rollup, reaper, fleet
     report and pending-count statements a runner issues, without the runners' Python. On a
     2-core machine shared with other work, real runners cannot hold a chosen rate while
     status is timed beside them (their Python needs the same cores), so this is the way
     to put the database under that rate, and to say which rate it was; or
   - `runners`: `--runners` real `imgrun run` processes routed to the task's pool and
     provider, the standard pool pinned at `--limit`: end to end, at whatever rate they
     reach (3,100–4,800/s per round here on 2026-11-25, with the machine's other load).

Prints each round, then a table: per mode the achieved completions/s and status p50, p95
and max ms, each the median over the rounds with their spread. Target: ≤ 100 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any, BinaryIO

import anyio
import psutil
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import IMGRUN, embedded_server, fresh_database, queue_synthetic, server_cpu
from bench.status_figures import Rounds, table
from db.engine import open_engine
from db.snapshots import BUCKET_SECONDS, BUCKETS_KEPT, Completions
from db.status_queries import (
    LATENCY_PER_REPORT,
    LATENCY_REPORTS,
    PROVIDER_WINDOW,
    PROVIDERS_SHOWN,
    QUERIES,
    STOPPED_SHOWN_FOR,
)
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
INSERT INTO subtasks (task_id, ordinal, pool, provider, priority, prompt, params, status,
                      attempts, executor_id, lease_expires_at, started_at, completed_at, result,
                      error)
SELECT t.id, g, t.pool, t.provider, t.priority, 'a v' || g, jsonb_build_object('seed', g),
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


def completions(now: float, tasks: range, per_bucket: int) -> dict[str, Any]:
    """A full completion rollup: every kept bucket busy, for each of `tasks`."""
    first = now - now % BUCKET_SECONDS - (BUCKETS_KEPT - 1) * BUCKET_SECONDS
    n = per_bucket * len(tasks)
    return Completions(
        at=now,
        since=now - 7200,
        first=first,
        subtasks=(n,) * BUCKETS_KEPT,
        images=(2 * n,) * BUCKETS_KEPT,
        tasks=tuple((task, (per_bucket,) * BUCKETS_KEPT) for task in tasks),
    ).to_json()


def executor_pools(now: float) -> dict[str, Any]:
    """A runner's heartbeat snapshot of both pools, each with its completion rollup."""
    pools: dict[str, Any] = {
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
    # Tasks 5-8 are the running ones; 8 is the lumina one (every 4th task is).
    pools["standard"]["completions"] = completions(now, range(5, 8), 30)
    pools["lumina"]["completions"] = completions(now, range(8, 9), 10)
    return pools


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
            "stopped_since": now - timedelta(seconds=STOPPED_SHOWN_FOR),
            "ids": list(range(1, TASKS + 1)),
            "tasks": 20,
            "recent": 5,
            "errors": 5,
            # The providers query's (see db.status_queries.provider_rows).
            "since": now - timedelta(seconds=PROVIDER_WINDOW),
            "providers": PROVIDERS_SHOWN,
            "latency_reports": LATENCY_REPORTS,
            "per_report": LATENCY_PER_REPORT,
        }
        for name, sql in QUERIES.items():
            used = {k: v for k, v in params.items() if f":{k}" in sql}
            plan = await connection.execute(
                text(f"EXPLAIN (ANALYZE, BUFFERS, COSTS OFF) {sql}"), used
            )
            print(f"--- {name}")
            print("\n".join(row[0] for row in plan.all()))


async def time_refreshes(engine: AsyncEngine, n: int, *, every: float = 0.0) -> list[float]:
    """Milliseconds per `load_status` for `n` refreshes, sorted; `every`: seconds apart."""
    timings = []
    for _ in range(n):
        started = time.perf_counter()
        await load_status(PgStore(engine))
        took = time.perf_counter() - started
        timings.append(took * 1000)
        await anyio.sleep(max(0.0, every - took))
    return sorted(timings)


async def build_database(server_url: str, subtasks: int) -> str:
    """The 1M-row database, analyzed, with its executors and errors; returns its URL."""
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
        await maintenance(engine, "ANALYZE")
        await seed_runners(engine)
    return url


async def idle(url: str, runs: int, refreshes: int, show_plans: bool) -> Rounds:
    """Timed refreshes with no runner working."""
    rounds = Rounds("idle")
    async with open_engine(url, upgrade=False) as engine:
        if show_plans:
            await explain(engine)
        await time_refreshes(engine, 3)  # warm-up: connections, plans, caches
        for run in range(runs):
            print(rounds.add(f"idle round {run + 1}", await time_refreshes(engine, refreshes)))
        snapshot = await load_status(PgStore(engine))
    t = snapshot.throughput
    print(
        f"idle snapshot: {snapshot.active_tasks} active tasks,"
        f" pending {', '.join(f'{p.name} {p.pending:,}' for p in snapshot.pools)},"
        f" {t.images_per_min_5m:,.0f} img/min (5m, from the seeded rollups),"
        f" {len(snapshot.executors)} executors ({sum(e.stale for e in snapshot.executors)} stale)"
    )
    return rounds


async def forget_seeded_runners(url: str) -> None:
    """Remove the seeded executors rows."""
    async with open_engine(url, upgrade=False) as engine, engine.begin() as connection:
        await connection.execute(text("DELETE FROM executors WHERE id LIKE 'bench-%'"))


async def completed_of(engine: AsyncEngine, task_id: int) -> int:
    """The task's maintained completion counter."""
    async with engine.connect() as connection:
        value = await connection.scalar(
            text("SELECT completed_subtasks FROM tasks WHERE id = :id"), {"id": task_id}
        )
    return int(value or 0)


@dataclass(frozen=True)
class Load:
    """What drains the null task while status is timed, and how to tell it is up to speed."""

    mode: str  # "runners" or "replay"
    label: str  # the table's mode column
    target: float | None  # completions/s asked (replay), None for real runners
    warm: int  # completions before the first round
    task_id: int
    total: int


def cpu_seconds(pids: Sequence[int]) -> float:
    """CPU seconds the processes `pids` have used so far (0 for one that has exited)."""
    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.NoSuchProcess):
            times = psutil.Process(pid).cpu_times()
            total += times.user + times.system
    return total


async def loaded(url: str, load: Load, args: argparse.Namespace, pids: Sequence[int]) -> Rounds:
    """Timed refreshes, 4 a second, while the load drains the null task."""
    rounds = Rounds(load.label, load.target)
    async with open_engine(url, upgrade=False) as engine:
        # Wait (bounded) for the load to start and reach speed.
        with anyio.fail_after(120):
            while await completed_of(engine, load.task_id) < load.warm:
                await anyio.sleep(0.2)
        for run in range(args.runs):
            cpu = await server_cpu(url), cpu_seconds(pids), time.process_time()
            before, started = await completed_of(engine, load.task_id), time.perf_counter()
            timings = await time_refreshes(engine, int(args.load_seconds * 4), every=0.25)
            after, ended = await completed_of(engine, load.task_id), time.perf_counter()
            own = (time.process_time() - cpu[2]) / len(timings)
            server, driver = await server_cpu(url) - cpu[0], cpu_seconds(pids) - cpu[1]
            if after >= load.total:
                print(f"load round {run + 1}: the queue ran dry (raise the task's size)")
            rate = (after - before) / (ended - started)
            print(rounds.add(f"{load.mode} round {run + 1}", timings, rate))
            done = max(1, after - before)
            print(rounds.add_cpu(1e6 * server / done, 1e6 * driver / done, 1e3 * own))
        if args.explain:
            print(f"plans under load ({load.label}):")
            await explain(engine)
        snapshot = await load_status(PgStore(engine))
        actual = await recent_rate(engine, load.task_id)
    t = snapshot.throughput
    print(
        f"exactness: the status view's 1-minute rate (from the runners' rollups)"
        f" {t.subtasks_per_min_1m / 60:,.0f} subtasks/s; the database's completed_at over"
        f" the same minute {actual:,.0f} subtasks/s"
        f" ({sum(not e.stale and e.state == 'running' for e in snapshot.executors)} live runners)"
    )
    return rounds


async def recent_rate(engine: AsyncEngine, task_id: int) -> float:
    """The task's completions per second over the last minute (or its life, if shorter)."""
    async with engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT (SELECT count(*) FROM subtasks WHERE task_id = :id"
                    "        AND status = 'completed' AND completed_at > now() - interval '60 s'),"
                    " least(60, extract(epoch FROM now() - started_at)) FROM tasks WHERE id = :id"
                ),
                {"id": task_id},
            )
        ).one()
    return int(row[0]) / max(1.0, float(row[1]))


def queue_load(url: str, args: argparse.Namespace) -> Load:
    """Forget the seeded runners and queue the null task the load will drain."""
    # Enough for the warm-up and every round at the asked rate (real runners: up to 8,000/s)
    # with a fifth to spare, so the queue never runs dry.
    rate = max(8_000.0, args.rate) if args.load == "runners" else args.rate
    total = int(1.2 * rate * (args.runs * args.load_seconds + 15)) + 20_000
    # The seeded runners are not running: without them, the status view's rate is the
    # load's alone, and the exactness line compares like with like.
    anyio.run(forget_seeded_runners, url)
    # Above every seeded task's priority, so the load claims only it (the seeded pending
    # subtasks name the sim, which is not running here).
    task_id = anyio.run(
        functools.partial(
            queue_synthetic, url, "bench status load", total, provider="null", priority=100
        )
    )
    if args.load == "runners":
        label = f"{args.runners} `imgrun run` processes, null provider, pool {args.limit}"
        return Load("runners", label, None, 20_000, task_id, total)
    label = f"replayed traffic of {args.runners} runners at {args.rate:,.0f}/s"
    return Load("replay", label, args.rate, int(3 * args.rate), task_id, total)


def load_commands(args: argparse.Namespace) -> list[list[str]]:
    """The processes that make the load: real runners, or one replay driver."""
    if args.load == "runners":
        # Routed to the null task's pool and provider, as the replay is: the seeded lumina
        # subtasks name the sim, which is not running here.
        route = ["--pool", "standard", "--provider", "null"]
        return [[*IMGRUN, "run", *route, "--log-level", "WARNING"]] * args.runners
    # A bound on the driver's life, whatever happens to this process: the warm-up's bound,
    # every round, and a margin.
    seconds = 120 + args.runs * (args.load_seconds + 5) + 60
    replay = [sys.executable, "-m", "bench.replay", "--rate", str(args.rate)]
    return [
        [
            *replay,
            "--runners",
            str(args.runners),
            "--hold",
            str(args.limit),
            "--seconds",
            str(seconds),
        ]
    ]


def run_load(url: str, args: argparse.Namespace) -> Rounds:
    """Queue the null task, start the load, time refreshes under it, stop it."""
    load = queue_load(url, args)
    with tempfile.TemporaryDirectory(prefix="imgrun-bench-status-") as tmp:
        config = Path(tmp) / "imgrun.toml"
        config.write_text(
            f'[runner]\noutput_dir = "{tmp}/out"\n'
            f"[pools.standard]\ninitial = {args.limit}\nmax = {args.limit}\n"
        )
        env = {
            **os.environ,
            "IMGRUN_CONFIG": str(config),
            "IMGRUN_HOME": tmp,
            "IMGRUN_DATABASE_URL": url,
        }
        logs = [Path(tmp) / f"{load.mode}-{n}.log" for n in range(len(load_commands(args)))]
        try:
            with contextlib.ExitStack() as stack:
                pids = []
                for command, path in zip(load_commands(args), logs, strict=True):
                    log = stack.enter_context(path.open("wb"))
                    pids.append(stack.enter_context(load_process(command, env, log)).pid)
                return anyio.run(loaded, url, load, args, pids)
        finally:
            # After the processes stopped: the replay driver's summary, a runner's errors.
            for path in logs:
                print(f"{path.name}: {path.read_text(errors='replace')[-2000:].strip()}")


@contextlib.contextmanager
def load_process(
    command: list[str], env: dict[str, str], log: BinaryIO
) -> Iterator[subprocess.Popen[bytes]]:
    """A load process logging to `log`; terminated (then killed) on exit."""
    child = subprocess.Popen(command, env=env, stdout=log, stderr=log)
    try:
        yield child
    finally:
        child.terminate()
        try:
            child.wait(30)
        except subprocess.TimeoutExpired:
            child.kill()
            child.wait()


def parse_args() -> argparse.Namespace:
    """The flags, bounded."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--subtasks", type=int, default=1_000_000)
    parser.add_argument("--refreshes", type=int, default=30, help="per idle round")
    parser.add_argument("--load", choices=("replay", "runners"), default="replay")
    parser.add_argument("--rate", type=float, default=5_000.0, help="replay: completions/s")
    parser.add_argument("--runners", type=int, default=2, help="real or replayed runners")
    parser.add_argument("--limit", type=int, default=200, help="each runner's pool, pinned")
    parser.add_argument("--load-seconds", type=float, default=10.0, help="per loaded round")
    parser.add_argument("--explain", action="store_true", help="print each query's plan")
    args = parser.parse_args()
    if not 3 <= args.runs <= 20:
        parser.error("--runs must be 3 to 20 (a median with its spread, bounded)")
    if not (1_000 <= args.subtasks <= 5_000_000 and 1 <= args.refreshes <= 1_000):
        parser.error("--subtasks must be 1,000 to 5,000,000 and --refreshes 1 to 1,000")
    if not (100 <= args.rate <= 50_000 and 1 <= args.runners <= 8 and 1 <= args.limit <= 1_000):
        parser.error("--rate must be 100 to 50,000, --runners 1 to 8 and --limit 1 to 1,000")
    if not 1 <= args.load_seconds <= 120:
        parser.error("--load-seconds must be 1 to 120")
    return args


def main() -> None:
    """Run the benchmark and print the figures."""
    args = parse_args()
    with embedded_server() as server_url:
        url = anyio.run(build_database, server_url, args.subtasks)
        quiet = anyio.run(idle, url, args.runs, args.refreshes, args.explain)
        busy = run_load(url, args)
    quiet.mode = f"idle, {args.subtasks:,} subtasks"
    print(table([quiet, busy]))
    print(busy.cpu_summary())


if __name__ == "__main__":
    main()
