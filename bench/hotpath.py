"""Where a subtask's time goes: statements, round trips and runner CPU on a `null` drain.

    .venv/bin/python -m bench.hotpath [--subtasks 20000]
    .venv/bin/py-spy record -r 250 -f raw -o /tmp/hot.txt -- .venv/bin/python -m bench.hotpath
    .venv/bin/python -m bench.hotpath --summarise /tmp/hot.txt     # CPU by function

Runs the runner in this process (`serve`, as `imgrun run --until-idle` does, standard pool
pinned at 100) against a fresh database on a private embedded server, with SQLAlchemy event
hooks counting and timing every statement (client-observed: server time plus the round
trip), connection checkouts (each one a pre-ping round trip) and transactions. Prints a
table per statement kind, per subtask.
"""

from __future__ import annotations

import argparse
import collections
import functools
import os
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import event

from bench.common import embedded_server, fresh_database, queue_synthetic
from bench.runner import drain_rate
from bench.throughput import CONFIG, IN_FLIGHT


class StatementClock:
    """Counts and times statements by kind, and counts checkouts and transactions."""

    def __init__(self) -> None:
        self.count: collections.Counter[str] = collections.Counter()
        self.seconds: collections.Counter[str] = collections.Counter()

    def attach(self, sync_engine: Any) -> None:
        """Listen on an engine's events."""

        def before(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            conn.info["t0"] = time.perf_counter()

        def after(conn: Any, cursor: Any, statement: str, *args: Any) -> None:
            kind = kind_of(statement)
            self.count[kind] += 1
            self.seconds[kind] += time.perf_counter() - conn.info.pop("t0")

        event.listen(sync_engine, "before_cursor_execute", before)
        event.listen(sync_engine, "after_cursor_execute", after)
        event.listen(sync_engine, "begin", lambda conn: self.count.update(["(begin, logical)"]))
        event.listen(sync_engine, "commit", lambda conn: self.count.update(["(COMMIT)"]))
        event.listen(sync_engine.pool, "checkout", lambda *a: self.count.update(["(checkout)"]))

    def rows(self, n: int) -> Iterator[tuple[str, int, float, float]]:
        """(kind, count, mean ms, count per subtask), most frequent first."""
        for kind, count in self.count.most_common():
            mean = 1000 * self.seconds[kind] / count if kind in self.seconds else float("nan")
            yield kind, count, mean, count / n


KINDS = (
    ("WITH picked", "claim"),
    ("WITH input", "apply_outcomes"),
    ("pg_notify", "notify"),
    ("UPDATE subtasks SET lease", "heartbeat leases"),
    ("UPDATE executors", "heartbeat"),
    ("FOR UPDATE SKIP LOCKED", "reap/other lock"),
)


def kind_of(statement: str) -> str:
    """A short name for a statement."""
    flat = " ".join(statement.split())
    for marker, name in KINDS:
        if marker in flat:
            return name
    return flat[:40]


async def drain(url: str, env: dict[str, str], clock: StatementClock) -> float:
    """Run the runner in-process until idle; wall seconds."""
    from db.engine import open_engine
    from runner.config import Environment, load_config
    from runner.loop.service import serve

    environment = Environment.from_environ(env)
    config = load_config(environment)
    async with open_engine(url, upgrade=False) as engine:
        clock.attach(engine.sync_engine)
        start = time.perf_counter()
        await serve(engine, config, environment, until_idle=True)
        return time.perf_counter() - start


def run_drain(url: str, env: dict[str, str], clock: StatementClock) -> float:
    """`drain` on its own event loop: the frame `summarise` keeps samples under."""
    return anyio.run(drain, url, env, clock)


async def transactions(url: str) -> int:
    """Committed transactions on this database so far (the server's own count)."""
    import asyncpg

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://"))
    try:
        await connection.execute("SELECT pg_stat_clear_snapshot()")
        value = await connection.fetchval(
            "SELECT xact_commit FROM pg_stat_database WHERE datname = current_database()"
        )
    finally:
        await connection.close()
    return int(value)


def measure(n: int) -> None:
    """One in-process drain of `n` null subtasks; print the table."""
    clock = StatementClock()
    with embedded_server() as server_url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "imgrun.toml"
        config.write_text(CONFIG.format(output=Path(tmp) / "out", in_flight=IN_FLIGHT))
        env = {**os.environ, "IMGRUN_CONFIG": str(config), "IMGRUN_HOME": tmp}
        url = anyio.run(fresh_database, server_url, "bench_hotpath")
        anyio.run(functools.partial(queue_synthetic, url, "bench", n, provider="null"))
        env["IMGRUN_DATABASE_URL"] = url
        before = anyio.run(transactions, url)
        wall = run_drain(url, env, clock)
        commits = anyio.run(transactions, url) - before
        rate, done = anyio.run(drain_rate, url)
    assert done == n, f"only {done} of {n} completed"
    print(f"{n:,} null subtasks in {wall:.2f} s wall; {rate:,.0f}/s first start to last completion")
    print(f"server-counted transactions: {commits:,} ({commits / n:.3f} per subtask)")
    print(f"{'statement':<24}{'count':>8}{'mean ms':>9}{'per subtask':>12}")
    for kind, count, mean, per in clock.rows(n):
        print(f"{kind:<24}{count:>8,}{mean:>9.2f}{per:>12.3f}")


def summarise(path: Path, top: int = 25, within: str = "run_drain ") -> None:
    """CPU by function from a py-spy raw (collapsed) profile, runner samples only."""
    own: collections.Counter[str] = collections.Counter()
    inclusive: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text().splitlines():
        stack, _, samples = line.rpartition(" ")
        if not stack:
            continue
        count = int(samples)
        frames = [f.split(" (")[0] + " " + f.split("/")[-1].rstrip(")") for f in stack.split(";")]
        if not any(within in frame for frame in frames):
            continue  # start-up, imports, the bench's own set-up
        total += count
        own[frames[-1]] += count
        for frame in set(frames):
            inclusive[frame] += count
    print(f"{total:,} samples in the runner\n{'self %':>7}  function")
    for frame, count in own.most_common(top):
        print(f"{100 * count / total:>7.1f}  {frame}")
    print(f"\n{'incl %':>7}  function")
    for frame, count in inclusive.most_common(top * 2):
        print(f"{100 * count / total:>7.1f}  {frame}")


def main() -> None:
    """Measure, or summarise a py-spy profile."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=20_000)
    parser.add_argument("--summarise", type=Path, help="a py-spy raw profile to summarise")
    args = parser.parse_args()
    if args.summarise:
        summarise(args.summarise)
    else:
        measure(args.subtasks)


if __name__ == "__main__":
    main()
