"""Dispatch latency on an idle worker: imgrun submit->start beside pgqueuer enqueue->start.

    .venv/bin/pip install -e '.[bench]'
    .venv/bin/python -m bench.latency [--samples 50]

One private embedded server, both workers up and idle at once: an `imgrun run` process (null
provider) and a pgqueuer worker process (one connection, batch 50, 100 in flight). Samples
alternate between them, one at a time, each waiting for the previous to start, spaced by a
few tens of milliseconds. Latency = the claim's own timestamp (imgrun: the subtask's
`started_at`; pgqueuer: its 'picked' log row; both the claiming transaction's now()) minus the
commit time of the submit (enqueue) transaction, which the server records (this private
server runs with track_commit_timestamp = on; a bench-only trigger copies each new task or
job id into a row nobody updates, whose xmin is the submitting transaction): one clock, and
neither side's client-side overhead after its commit counts. Targets (issue 11): imgrun p50
<= 2 ms, p95 <= 10 ms, and below pgqueuer.

`--also CHECKOUT` (repeatable) adds a runner from another imgrun checkout (its own database,
migrated by its own code), sampled in the same rounds in a random order: an A/B of two
versions of the dispatch path on one server, in one run.
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import random
import statistics
import subprocess
import sys
import tempfile
from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import asyncpg

from bench import pgq
from bench.common import IMGRUN, embedded_server, fresh_database
from bench.runner import process
from bench.throughput import CONFIG, IN_FLIGHT
from db import pgconf
from db.engine import open_engine
from db.queries import NewTask, submit_task

WAIT = 10.0  # seconds one sample may take before the bench gives up
WARM_UP = 60.0  # seconds both workers may take to start
SPACING = (0.02, 0.06)  # seconds between samples, drawn uniformly


def one_task(i: int) -> NewTask:
    """A task of one null subtask."""
    return NewTask(
        name=f"latency {i}",
        user_id="bench",
        pool="standard",
        provider="null",
        priority=1,
        prompts=["latency"],
        variables={},
        ratio="1:1",
        seed=i,
        batch_size=1,
        polish=False,
        max_retries=0,
        total_subtasks=1,
        total_images=1,
    )


async def poll(fetch: Callable[[], Awaitable[float | None]], wait: float = WAIT) -> float:
    """Poll `fetch` until it returns a value (bounded by `wait` seconds)."""
    with anyio.fail_after(wait):
        while (value := await fetch()) is None:
            await anyio.sleep(0.005)
    return value


async def imgrun_sample(engine: object, watch: asyncpg.Connection, i: int) -> float:
    """Submit one subtask; seconds from the submit's commit to its claim."""
    task_id = await submit_task(engine, one_task(i), [(0, "latency", f'{{"seed": {i}}}')])  # type: ignore[arg-type]
    return await poll(
        lambda: watch.fetchval(
            "SELECT extract(epoch FROM s.started_at - pg_xact_commit_timestamp(m.xmin))"
            " FROM subtasks s JOIN bench_submits m ON m.id = s.task_id"
            " WHERE s.task_id = $1 AND s.started_at IS NOT NULL",
            task_id,
        )
    )


async def pgqueuer_sample(queries: object, watch: asyncpg.Connection) -> float:
    """Enqueue one job; seconds from the enqueue's commit to its pick."""
    (job_id,) = await queries.enqueue(pgq.ENTRYPOINT, None)  # type: ignore[attr-defined]
    return await poll(
        lambda: watch.fetchval(
            "SELECT extract(epoch FROM p.created - pg_xact_commit_timestamp(m.xmin))"
            " FROM pgqueuer_log p JOIN bench_submits m ON m.id = p.job_id"
            " WHERE p.job_id = $1 AND p.status = 'picked'",
            job_id,
        )
    )


async def sample(imgrun_urls: dict[str, str], pgq_url: str, n: int) -> dict[str, list[float]]:
    """`n` samples of each imgrun runner (by name) and of pgqueuer, a random order per round."""
    delays: dict[str, list[float]] = {name: [] for name in [*imgrun_urls, "pgqueuer"]}
    async with contextlib.AsyncExitStack() as stack:
        queries = await stack.enter_async_context(pgq.connected(pgq_url))
        samplers: dict[str, Callable[[int], Awaitable[float]]] = {}
        for name, url in imgrun_urls.items():
            engine = await stack.enter_async_context(open_engine(url, upgrade=False))
            watch = await asyncpg.connect(pgq.plain(url))
            stack.push_async_callback(watch.close)
            samplers[name] = functools.partial(imgrun_sample, engine, watch)
        pgq_watch = await asyncpg.connect(pgq.plain(pgq_url))
        stack.push_async_callback(pgq_watch.close)
        samplers["pgqueuer"] = lambda _i: pgqueuer_sample(queries, pgq_watch)
        # Warm-up, not counted: every worker up (start-up is bounded by WARM_UP), first
        # statements prepared; then a pause so all are idle again.
        for take in samplers.values():
            await poll(lambda take=take: _started(take(-1)), WARM_UP)  # type: ignore[misc]
        await anyio.sleep(2)
        for i in range(n):
            for name in random.sample(list(samplers), len(samplers)):
                delays[name].append(await samplers[name](i))
                await anyio.sleep(random.uniform(*SPACING))
    return delays


async def _started(sample: Awaitable[float]) -> float | None:
    """A warm-up sample's delay, or None if it timed out (the worker is still starting)."""
    try:
        return await sample
    except TimeoutError:
        return None


def percentile(values: list[float], p: float) -> float:
    """Nearest-rank percentile."""
    ordered = sorted(values)
    return ordered[max(0, min(len(ordered) - 1, round(p * len(ordered)) - 1))]


def main() -> None:
    """Start the workers, sample, print the table."""
    pgq.require()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=50)
    parser.add_argument("--also", action="append", default=[], metavar="CHECKOUT")
    args = parser.parse_args()
    checkouts = {"imgrun": None, **{f"imgrun@{Path(c).name}": c for c in args.also}}
    # This private server only: commit times recorded, so a delay starts at the commit.
    pgconf.SERVER_OPTIONS += " -c track_commit_timestamp=on"
    with (
        embedded_server() as server_url,
        tempfile.TemporaryDirectory() as tmp,
        contextlib.ExitStack() as workers,
    ):
        config = Path(tmp) / "imgrun.toml"
        config.write_text(CONFIG.format(output=Path(tmp) / "out", in_flight=IN_FLIGHT))
        env = {**os.environ, "IMGRUN_CONFIG": str(config)}
        urls: dict[str, str] = {}
        for i, (name, checkout) in enumerate(checkouts.items()):
            urls[name] = anyio.run(fresh_database, server_url, f"bench_latency_imgrun{i}")
            _migrate(urls[name], checkout)
            home = Path(tmp) / f"home{i}"
            home.mkdir()
            runner_env = {**env, "IMGRUN_HOME": str(home), "IMGRUN_DATABASE_URL": urls[name]}
            runner = [*IMGRUN, "run", "--log-level", "WARNING"]
            workers.enter_context(process(runner, runner_env, cwd=checkout))
        pgq_url = anyio.run(fresh_database, server_url, "bench_latency_pgq")
        anyio.run(_install, pgq_url)
        workers.enter_context(process([sys.executable, "-m", "bench.pgq", pgq_url], env))
        delays = anyio.run(sample, urls, pgq_url, args.samples)
    print(f"\nsubmit -> start on an idle worker, {args.samples} samples each, interleaved")
    print(f"{'':<24}{'p50 ms':>9}{'p95 ms':>9}{'max ms':>9}")
    for name, values in delays.items():
        ms = [1000 * v for v in values]
        p50, p95 = statistics.median(ms), percentile(ms, 0.95)
        print(f"{name:<24}{p50:>9.2f}{p95:>9.2f}{max(ms):>9.2f}")


def mark_submits(table: str) -> list[str]:
    """DDL: every row inserted into `table` leaves its id in bench_submits, in the same commit."""
    return [
        "CREATE TABLE bench_submits (id bigint PRIMARY KEY)",
        "CREATE FUNCTION bench_mark() RETURNS trigger LANGUAGE plpgsql AS"
        " $$BEGIN INSERT INTO bench_submits VALUES (NEW.id); RETURN NULL; END$$",
        f"CREATE TRIGGER bench_mark AFTER INSERT ON {table}"
        " FOR EACH ROW EXECUTE FUNCTION bench_mark()",
    ]


async def _prepare(url: str, table: str) -> None:
    connection = await asyncpg.connect(pgq.plain(url))
    try:
        for statement in mark_submits(table):
            await connection.execute(statement)
    finally:
        await connection.close()


def _migrate(url: str, checkout: str | None) -> None:
    """Bring the database to the schema of `checkout`'s code (None: this one), then mark it."""
    upgrade = (
        "import sys, anyio\nfrom db.engine import open_engine\n"
        "async def up(url):\n    async with open_engine(url):\n        pass\n"
        "anyio.run(up, sys.argv[1])"
    )
    subprocess.run([sys.executable, "-c", upgrade, url], cwd=checkout, check=True)
    anyio.run(_prepare, url, "tasks")


async def _install(url: str) -> None:
    async with pgq.connected(url):
        pass
    await _prepare(url, "pgqueuer")


if __name__ == "__main__":
    main()
