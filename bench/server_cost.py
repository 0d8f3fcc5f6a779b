"""PostgreSQL's CPU per subtask on the hot path: the claim and outcome statements alone.

    .venv/bin/python -m bench.server_cost [--subtasks 20000] [--runs 3] [--revisions 0006,head]
        [--claim 25] [--batch 25] [--in-flight 100]

A revision may end in `+async-commit` (e.g. `--revisions head,head+async-commit`): the same
drain with synchronous_commit off, to see what the WAL flush at each commit costs
(measurement only; imgrun never turns it off).

On a private embedded server, for each schema revision (alternating, `--runs` times each),
a fresh database gets one task of `null` subtasks and one provider row (limit `--in-flight`);
then one asyncpg connection drains it in the runner's shapes: claims of `--claim` rows
(`imgrun_claim`, as `db.queries.claim` calls it) while fewer than `--in-flight` are held,
and the oldest `--batch` held rows recorded as completed (`APPLY_OUTCOMES_RAW`, as
`db.queries.apply_outcomes` runs it). Prints the server's CPU µs per subtask (postmaster and
all its children, autovacuum included) and the client's wall µs, per run and as medians.
No runner, no Python work beyond the statements: the server's share in isolation.
"""

from __future__ import annotations

import argparse
import json
import time
from collections import deque
from dataclasses import dataclass

import anyio
import asyncpg
import psutil

from bench.common import embedded_server, fresh_database, median, queue_synthetic, server_cpu

PROVIDER = "null"
POOL = "standard"
LEASE = 60.0  # seconds
HOLDER = "bench:1"
RESULT = json.dumps({"images": [], "provider_ms": 0.1})  # what a `null` completion records


@dataclass(frozen=True)
class Shape:
    """How the drain calls the statements."""

    subtasks: int
    claim: int
    batch: int
    in_flight: int


@dataclass(frozen=True)
class Cost:
    """One drain's figures."""

    revision: str
    server_us: float  # server CPU µs per subtask (every server process)
    backend_us: float  # of which the drain's own backend (the statements themselves)
    claim_us: float  # the backend's CPU in the claim calls
    outcome_us: float  # the backend's CPU in the outcome statements
    wall_us: float  # client wall µs per subtask
    claims: int
    flushes: int


async def prepare(server_url: str, name: str, revision: str, shape: Shape) -> str:
    """A fresh database at `revision` with the provider row and the queued task; its DSN."""
    from db.engine import open_engine
    from db.migrate import migrate
    from db.provider_queries import register_providers
    from db.records import ProviderBounds

    url = await fresh_database(server_url, name)
    async with open_engine(url, upgrade=False) as engine:
        await migrate(engine, revision)
        limit = shape.in_flight
        bounds = ProviderBounds(PROVIDER, "fixed", limit, limit, None, {"limit": limit})
        await register_providers(engine, [bounds])
    # queue_synthetic migrates to head first: only when head is the revision under test.
    if revision == "head":
        await queue_synthetic(url, name, shape.subtasks, provider=PROVIDER)
    else:
        await _queue_at(url, name, shape.subtasks)
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn)
    try:
        await connection.execute("VACUUM ANALYZE subtasks")  # both revisions start alike
    finally:
        await connection.close()
    return url


async def _queue_at(url: str, name: str, n: int) -> None:
    """queue_synthetic's task without migrating (the schema stays at its revision)."""
    await queue_synthetic(url, name, n, pool=POOL, provider=PROVIDER, upgrade=False)


async def _drop(server_url: str, name: str) -> None:
    """Drop a database measured already."""
    from sqlalchemy.engine import make_url

    admin_url = make_url(server_url).set(drivername="postgresql", database="postgres")
    admin = await asyncpg.connect(admin_url.render_as_string(hide_password=False))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
    finally:
        await admin.close()


class Clock:
    """A backend's time on CPU in ns (Linux /proc/PID/sched), split by statement kind."""

    def __init__(self, pid: int) -> None:
        self.path = f"/proc/{pid}/sched"
        self.ns = {"claim": 0, "outcome": 0}

    def now(self) -> int:
        """The backend's CPU ns so far (it is idle between statements, so deltas are ours)."""
        with open(self.path) as f:
            for line in f:
                if line.startswith("se.sum_exec_runtime"):
                    return int(float(line.split(":")[1]) * 1e6)  # ms, to µs precision
        raise RuntimeError(f"no se.sum_exec_runtime in {self.path}")


async def drain(
    connection: asyncpg.Connection, shape: Shape, clock: Clock | None = None
) -> tuple[int, int]:
    """Claim and record every subtask in the runner's shapes; (claims, flushes)."""
    from db.queries import APPLY_OUTCOMES_RAW, CLAIM_CALL

    held: deque[tuple[int, int]] = deque()
    done = claims = flushes = 0
    ns = {"claim": 0, "outcome": 0} if clock is None else clock.ns
    deadline = time.monotonic() + 600  # bounded: a broken variant must not spin forever
    while done < shape.subtasks and time.monotonic() < deadline:
        got = 0
        if len(held) + shape.claim <= shape.in_flight:
            t0 = clock.now() if clock else 0
            rows = await connection.fetch(CLAIM_CALL, POOL, PROVIDER, shape.claim, HOLDER, LEASE)
            ns["claim"] += clock.now() - t0 if clock else 0
            claims += 1
            for row in rows:
                if row["id"] is not None:
                    held.append((row["id"], row["attempts"]))
                    got += 1
        if held and (got == 0 or len(held) + shape.claim > shape.in_flight):
            batch = [held.popleft() for _ in range(min(shape.batch, len(held)))]
            n = len(batch)
            t0 = clock.now() if clock else 0
            recorded = await connection.fetch(
                APPLY_OUTCOMES_RAW,
                [i for i, _ in batch],
                [a for _, a in batch],
                ["completed"] * n,
                [HOLDER] * n,
                [RESULT] * n,
                [None] * n,
                [0.0] * n,
                [False] * n,
            )
            ns["outcome"] += clock.now() - t0 if clock else 0
            done += sum(len(r["ids"]) for r in recorded)
            flushes += 1
        elif not held and got == 0:
            break  # nothing claimable and nothing held: the queue is drained (or stuck)
    if done != shape.subtasks:
        raise RuntimeError(f"drained {done} of {shape.subtasks}")
    return claims, flushes


async def measure(server_url: str, variant: str, run: int, shape: Shape) -> Cost:
    """One fresh database at the variant's revision, drained; its figures."""
    revision, _, option = variant.partition("+")
    if option not in ("", "async-commit"):
        raise SystemExit(f"unknown option {option!r} in {variant!r} (known: async-commit)")
    async_commit = option == "async-commit"
    label = "".join(c if c.isalnum() else "_" for c in variant)
    url = await prepare(server_url, f"cost_{label}_{run}", revision, shape)
    dsn = url.replace("postgresql+asyncpg://", "postgresql://", 1)
    connection = await asyncpg.connect(dsn)
    try:
        if async_commit:  # measurement only: what the WAL flush at each commit costs
            await connection.execute("SET synchronous_commit = off")
        backend = psutil.Process(await connection.fetchval("SELECT pg_backend_pid()"))
        cpu0, own0, t0 = await server_cpu(url), _cpu(backend), time.perf_counter()
        clock = Clock(backend.pid)
        claims, flushes = await drain(connection, shape, clock)
        wall = time.perf_counter() - t0
        cpu, own = await server_cpu(url) - cpu0, _cpu(backend) - own0
    finally:
        await connection.close()
        await _drop(server_url, f"cost_{label}_{run}")  # no autovacuum of it in later runs
    per = 1e6 / shape.subtasks
    claim, outcome = (clock.ns[kind] / 1e3 * per / 1e6 for kind in ("claim", "outcome"))
    return Cost(variant, cpu * per, own * per, claim, outcome, wall * per, claims, flushes)


def _cpu(process: psutil.Process) -> float:
    """User + system CPU seconds of one process."""
    times = process.cpu_times()
    return float(times.user + times.system)


async def main(revisions: list[str], runs: int, shape: Shape) -> None:
    """Alternate the revisions `runs` times on one server; print each run and the medians."""
    costs: list[Cost] = []
    with embedded_server() as server_url:
        for run in range(runs):
            for revision in revisions:
                cost = await measure(server_url, revision, run, shape)
                costs.append(cost)
                print(
                    f"run {run + 1} {revision:>6}: server {cost.server_us:6.1f} µs/subtask"
                    f" (backend {cost.backend_us:5.1f}: claim {cost.claim_us:5.1f},"
                    f" outcome {cost.outcome_us:5.1f}),"
                    f" wall {cost.wall_us:6.1f} µs, {cost.claims} claims, {cost.flushes} flushes",
                    flush=True,
                )
    print(f"\n{shape.subtasks} subtasks, claim {shape.claim}, outcome batch {shape.batch},")
    print(f"at most {shape.in_flight} held; medians of {runs} (min–max):\n")
    print("| revision | server CPU | its backend | in claims | in outcomes | client wall |")
    print("|---|---|---|---|---|---|")
    for revision in revisions:
        mine = [c for c in costs if c.revision == revision]
        cells = [_spread([getattr(c, field) for c in mine]) for field in COLUMNS]
        print(f"| {revision} | {' | '.join(cells)} |")
    print("\n(µs per subtask; CPU is the server processes' user + system time)")


COLUMNS = ("server_us", "backend_us", "claim_us", "outcome_us", "wall_us")


def _spread(values: list[float]) -> str:
    """Median (min–max)."""
    return f"{median(values):.1f} ({min(values):.1f}–{max(values):.1f})"


def cli() -> None:
    """Parse the flags and run."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--revisions", default="0006,head", help="comma-separated, alternated")
    parser.add_argument("--claim", type=int, default=25, help="rows per claim")
    parser.add_argument("--batch", type=int, default=25, help="outcomes per statement")
    parser.add_argument("--in-flight", type=int, default=100, help="the provider's limit")
    args = parser.parse_args()
    if not 1 <= args.subtasks <= 1_000_000 or not 1 <= args.runs <= 20:
        parser.error("--subtasks must be 1..1000000 and --runs 1..20")
    shape = Shape(args.subtasks, args.claim, args.batch, args.in_flight)
    anyio.run(main, args.revisions.split(","), args.runs, shape)


if __name__ == "__main__":
    cli()
