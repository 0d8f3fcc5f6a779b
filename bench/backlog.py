"""A large backlog drains at a steady rate with bounded memory (the backlog-stall issue).

    .venv/bin/python -m bench.backlog [--tasks 50] [--per-task 20000] [--runners 1,3]

For each runner count: a fresh database with TASKS × PER_TASK subtasks on the in-process
`null` provider (no HTTP, no image: only the runner and the database work), the standard
pool pinned at 100, and that many `imgrun run --until-idle` processes. While they drain it
samples, every 100 ms, completions, rows held in `processing`, the longest active statement
of the runners (`pg_stat_activity`) and every runner's RSS. It prints the rate of each tenth
of the run, the longest statement seen, RSS at 10 % and at the end, and the most rows held.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import anyio
import psutil
from sqlalchemy import text

from bench.common import IMGRUN, embedded_server, fresh_database, queue_synthetic
from db.engine import open_engine

POOL_LIMIT = 100
SAMPLE_EVERY = 0.1  # seconds
DEADLINE = 3600.0  # seconds: a drain that takes longer is reported as stalled

SAMPLE_SQL = text(
    """
    SELECT (SELECT coalesce(sum(completed_subtasks), 0) FROM tasks) AS completed,
           (SELECT count(*) FROM subtasks WHERE status = 'processing') AS processing,
           a.longest, a.query
    FROM (SELECT 1) AS one LEFT JOIN LATERAL (
        SELECT extract(epoch FROM clock_timestamp() - query_start) AS longest,
               left(regexp_replace(query, '[[:space:]]+', ' ', 'g'), 60) AS query
        FROM pg_stat_activity
        WHERE state = 'active' AND pid <> pg_backend_pid()
          AND backend_type = 'client backend' AND datname = current_database()
          AND query NOT LIKE 'LISTEN%'
        ORDER BY query_start LIMIT 1
    ) AS a ON true
    """
)


@dataclass
class Drain:
    """What one drain looked like."""

    total: int
    started: float = 0.0
    progress: list[tuple[float, int]] = field(default_factory=list)  # (seconds, completed)
    most_held: int = 0
    longest_statement: float = 0.0
    longest_query: str = ""
    rss_at_tenth: int | None = None  # bytes, summed over runners
    last_rss: dict[int, int] = field(default_factory=dict)  # pid -> bytes, last seen alive

    @property
    def rss_at_end(self) -> int:
        """Each runner's last RSS before it exited, summed."""
        return sum(self.last_rss.values())

    def tenths(self) -> list[float]:
        """Subtasks/s within each tenth of the run (by completions)."""
        rates = []
        for k in range(10):
            low, high = self.total * k // 10, self.total * (k + 1) // 10
            # The first tenth starts at the first completion, not at process start-up.
            t0 = next(t for t, done in self.progress if done >= max(low, 1))
            t1 = next(t for t, done in self.progress if done >= high)
            rates.append((high - low) / max(t1 - t0, SAMPLE_EVERY))
        return rates


def rss(pids: list[int]) -> dict[int, int]:
    """Resident memory of each live runner, in bytes."""
    sizes = {}
    for pid in pids:
        try:
            size = psutil.Process(pid).memory_info().rss
        except psutil.NoSuchProcess:
            continue
        if size:  # an exited runner not yet reaped (a zombie) reports 0
            sizes[pid] = size
    return sizes


async def watch(url: str, drain: Drain, runners: list[subprocess.Popen[bytes]]) -> None:
    """Sample the database and the runners until every runner has exited."""
    pids = [r.pid for r in runners]
    async with open_engine(url, upgrade=False) as engine, engine.connect() as connection:
        with anyio.fail_after(DEADLINE):
            while any(r.poll() is None for r in runners):
                row = (await connection.execute(SAMPLE_SQL)).one()
                await connection.commit()
                now = time.monotonic() - drain.started
                drain.progress.append((now, int(row.completed)))
                drain.most_held = max(drain.most_held, int(row.processing))
                if row.longest is not None and row.longest > drain.longest_statement:
                    drain.longest_statement, drain.longest_query = float(row.longest), row.query
                memory = rss(pids)
                if drain.rss_at_tenth is None and row.completed >= drain.total // 10:
                    drain.rss_at_tenth = sum(memory.values())
                drain.last_rss.update(memory)
                await anyio.sleep(SAMPLE_EVERY)
        final = await connection.scalar(text("SELECT sum(completed_subtasks) FROM tasks"))
        drain.progress.append((time.monotonic() - drain.started, int(final or 0)))


def run_drain(server_url: str, env: dict[str, str], args: argparse.Namespace, n: int) -> Drain:
    """Queue the backlog, start `n` runners, watch them drain it."""
    url = anyio.run(fresh_database, server_url, f"bench_backlog_{n}")
    for i in range(args.tasks):
        anyio.run(
            functools.partial(queue_synthetic, url, f"backlog {i}", args.per_task, provider="null")
        )
    drain = Drain(total=args.tasks * args.per_task)
    env = {**env, "IMGRUN_DATABASE_URL": url}
    command = [*IMGRUN, "run", "--until-idle", "--log-level", "WARNING"]
    drain.started = time.monotonic()
    runners = [subprocess.Popen(command, env=env, stderr=subprocess.DEVNULL) for _ in range(n)]
    try:
        anyio.run(watch, url, drain, runners)
    finally:
        for runner in runners:
            if runner.poll() is None:
                runner.kill()
            runner.wait()
    if any(r.returncode for r in runners):
        raise SystemExit(f"a runner failed: {[r.returncode for r in runners]}")
    return drain


def report(n: int, drain: Drain) -> None:
    """Print one drain's figures."""
    rates = drain.tenths()
    mb = 1024 * 1024
    elapsed = drain.progress[-1][0]
    print(f"\n{n} runner(s), {drain.total:,} subtasks in {elapsed:.1f} s")
    print("  rate per tenth (subtasks/s): " + " ".join(f"{r:,.0f}" for r in rates))
    print(f"  last tenth / first tenth: {rates[-1] / rates[0]:.2f}")
    print(
        f"  longest statement seen: {drain.longest_statement * 1000:.0f} ms"
        f" ({drain.longest_query.strip()}…)"
    )
    print(
        f"  runners' RSS: {(drain.rss_at_tenth or 0) / mb:.1f} MB at 10 %,"
        f" {drain.rss_at_end / mb:.1f} MB at the end"
        f" (growth {(drain.rss_at_end - (drain.rss_at_tenth or 0)) / mb:+.1f} MB)"
    )
    print(f"  most rows held in processing: {drain.most_held} (limit {POOL_LIMIT} per runner)")


def main() -> None:
    """Drain the backlog with each runner count and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--tasks", type=int, default=50)
    parser.add_argument("--per-task", type=int, default=20_000)
    parser.add_argument("--runners", default="1,3", help="comma-separated runner counts")
    args = parser.parse_args()
    with embedded_server() as server_url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "imgrun.toml"
        config.write_text(f"[pools.standard]\ninitial = {POOL_LIMIT}\nmax = {POOL_LIMIT}\n")
        env = {**os.environ, "IMGRUN_CONFIG": str(config), "IMGRUN_HOME": tmp}
        for n in (int(x) for x in args.runners.split(",")):
            report(n, run_drain(server_url, env, args, n))


if __name__ == "__main__":
    main()
