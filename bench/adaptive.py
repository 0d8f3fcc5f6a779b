"""Fleet-wide provider control against a moving sim, compared to the best fixed concurrency.

    .venv/bin/python -m bench.adaptive [--scenarios a,b,c,d,e] [--quick]

Real `imgrun sim` and `imgrun run --until-idle` processes on a private embedded PostgreSQL,
a fresh database and a fresh sim per run. Scenarios (the sim's queue holds a quarter of its
slots; past that it answers 429 + Retry-After):
  a  cold start: 1 runner, 40 slots at 400 ms (best 6,000 images/min), 6,000 images
  b  3 runners sharing 12 slots at 300 ms (best 2,400 images/min)
  c  40 slots at 400 ms, capacity 40 → 10 at 60 s and back to 40 at 120 s (from the start)
  d  rpm-limited: 1,200 requests/min (its burst already spent), unlimited slots, 400 ms
  e  the seed's `queue-depth` rule on a–c, for the record
Each scenario first sweeps `policy = "fixed"` (initial = max_concurrency = N) for a few N
around the capacity; the best of them is the yardstick for the same run. Printed per run:
images/min, the ratio to the best fixed, the 429 share of the sim's requests, subtasks
failed, seconds to converge (5-s throughput ≥ 90 % of the best fixed: after the start, and
after each capacity change in c) and the sim's max_in_flight against max_concurrency.
`--quick` runs smaller batches, one fixed point and c on a 30-s schedule (a few minutes).
Every run is bounded: runners still busy at its deadline are stopped and what they finished
counts (marked "stopped").
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import text

from bench.adaptive_figures import Row, Run, best, converge_after, markdown, steady_rate
from bench.common import IMGRUN, embedded_server, fresh_database, queue_synthetic
from bench.runner import free_port, process, wait_for_port
from db.engine import open_engine

ADAPTIVE_CAP = 50  # max_concurrency of the adaptive runs (the default)
POOL_MAX = 64  # what one runner may hold: never the binding limit here
RUN_TIMEOUT = 300.0  # seconds: no single run outlasts this


@dataclass(frozen=True)
class Scenario:
    """One provider shape and workload."""

    key: str
    title: str
    capacity: int
    service_ms: int
    images: int
    sweep: tuple[int, ...]  # fixed concurrencies tried
    runners: int = 1
    rpm: int = 0
    changes: tuple[tuple[float, int], ...] = ()  # (seconds after start, slots)

    @property
    def best_seconds(self) -> float:
        """A lower bound on the drain time, for the run's deadline."""
        rate = self.capacity / (self.service_ms / 1000)
        if self.rpm:
            rate = min(rate, self.rpm / 60)
        return self.images / rate


FULL = {
    "a": Scenario("a", "cold start, 40 slots × 400 ms", 40, 400, 6000, (40, 50)),
    "b": Scenario("b", "3 runners, 12 slots × 300 ms", 12, 300, 1800, (12, 15), runners=3),
    "c": Scenario(
        "c", "40 → 10 (60 s) → 40 (120 s)", 40, 400, 11500, (40,), changes=((60, 10), (120, 40))
    ),
    "d": Scenario("d", "1,200 rpm, unlimited slots", 10_000, 400, 1500, (6, 8, 10), rpm=1200),
}
QUICK = {
    "a": replace(FULL["a"], images=2000, sweep=(40,)),
    "b": replace(FULL["b"], images=900, sweep=(12,)),
    "c": replace(FULL["c"], images=5750, changes=((30, 10), (60, 40))),
    "d": replace(FULL["d"], images=600, sweep=(8,)),
}


def post_json(port: int, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """POST (with a JSON body) or GET the sim's admin routes."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}",
        data=data,
        method="POST" if data is not None else "GET",
        headers={"Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read() or b"{}"))


def config_text(port: int, output: Path, policy: str, fixed: int | None) -> str:
    """The runners' config: the sim as provider `sim` under `policy`."""
    cap = fixed or ADAPTIVE_CAP
    initial = f"initial = {fixed}\n" if fixed else ""
    return (
        f'[providers.sim]\ntype = "sim"\nbase_url = "http://127.0.0.1:{port}"\n'
        f'policy = "{policy}"\n{initial}max_concurrency = {cap}\n'
        f"[pools.standard]\nmax = {POOL_MAX}\n"
        f'[runner]\noutput_dir = "{output}"\n'
    )


def sim_command(port: int, s: Scenario) -> list[str]:
    """`imgrun sim` for scenario `s` (an rpm sim starts at 1 rpm: its burst is set below)."""
    return [
        *IMGRUN,
        "sim",
        "--port",
        str(port),
        "--capacity",
        str(s.capacity),
        "--service-ms",
        str(s.service_ms),
        "--queue-limit",
        str(max(1, s.capacity // 4)) if s.capacity < 10_000 else "0",
        "--rpm",
        "1" if s.rpm else "0",
        "--seed",
        "1",
    ]


async def db_figures(url: str) -> tuple[int, int, float, float, tuple[float, ...]]:
    """(completed, failed, first claim, last completion, completion times) in epoch seconds."""
    async with open_engine(url, upgrade=False) as engine, engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT count(*) FILTER (WHERE status = 'completed'),"
                    " count(*) FILTER (WHERE status = 'failed'),"
                    " extract(epoch FROM min(started_at)), extract(epoch FROM max(completed_at))"
                    " FROM subtasks"
                )
            )
        ).one()
        times = await connection.scalars(
            text(
                "SELECT extract(epoch FROM completed_at) FROM subtasks"
                " WHERE status = 'completed' ORDER BY completed_at"
            )
        )
        return (
            int(row[0]),
            int(row[1]),
            float(row[2] or 0),
            float(row[3] or 0),
            tuple(float(t) for t in times),
        )


async def decisions(url: str) -> list[str]:
    """The provider's recorded decisions, oldest first, as "t+seconds reason" lines."""
    async with open_engine(url, upgrade=False) as engine, engine.connect() as connection:
        row = await connection.scalar(text("SELECT decisions FROM providers WHERE name = 'sim'"))
        start = await connection.scalar(
            text("SELECT extract(epoch FROM min(started_at)) FROM subtasks")
        )
    entries = list(reversed(row or []))
    return [f"t+{d['at'] - float(start or 0):6.1f}s {d['reason']}" for d in entries]


@dataclass
class Bench:
    """The shared server, a scratch directory and a run counter."""

    server_url: str
    tmp: Path
    trace: bool = False  # print the adaptive runs' decisions
    runs: int = 0

    def run(self, s: Scenario, policy: str, fixed: int | None = None) -> tuple[Run, list[float]]:
        """Drain scenario `s` once under `policy`; returns the run and the change times."""
        self.runs += 1
        label = f"fixed {fixed}" if fixed else policy
        url = anyio.run(fresh_database, self.server_url, f"bench_adaptive_{self.runs}")
        anyio.run(functools.partial(queue_synthetic, url, f"adaptive {s.key}", s.images))
        port = free_port()
        config = self.tmp / f"run{self.runs}.toml"
        config.write_text(config_text(port, self.tmp / f"out{self.runs}", policy, fixed))
        env = {
            **os.environ,
            "IMGRUN_CONFIG": str(config),
            "IMGRUN_HOME": str(self.tmp),
            "IMGRUN_DATABASE_URL": url,
        }
        with process(sim_command(port, s), env):
            wait_for_port(port)
            if s.rpm:  # lowering the rate keeps the bucket's (empty) level: no minute of burst
                post_json(port, "/_sim/config", {"rpm": s.rpm})
            deadline = min(RUN_TIMEOUT, 3 * s.best_seconds + 30)
            changed, stopped = drive(s, port, env, deadline)
            stats = post_json(port, "/_sim/stats")
        done, failed, started, finished, times = anyio.run(db_figures, url)
        if self.trace and not fixed:
            for line in anyio.run(decisions, url):
                print(f"    {line}")
        cap = fixed or ADAPTIVE_CAP
        result = Run(
            label + (" (stopped)" if stopped else ""),
            done,
            failed,
            started,
            finished,
            times,
            int(stats["requests"]),
            int(stats["rate_limited"]),
            int(stats["max_in_flight"]),
            cap,
        )
        print(
            f"  {s.key} {result.label:>20}: {result.per_min:,.0f} images/min,"
            f" {result.share_429:.2%} 429, {failed} failed, max in flight"
            f" {result.max_in_flight}/{cap}, {finished - started:.0f} s",
            flush=True,
        )
        return result, changed


def drive(s: Scenario, port: int, env: dict[str, str], deadline: float) -> tuple[list[float], bool]:
    """Start the runners, move the sim's capacity on time, wait (bounded) for them to finish."""
    command = [*IMGRUN, "run", "--until-idle", "--log-level", "WARNING"]
    children = [
        subprocess.Popen(
            [*command, "--executor-id", f"bench-{i}"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        for i in range(s.runners)
    ]
    start = time.time()
    changes, changed = list(s.changes), []
    try:
        while any(c.poll() is None for c in children) and time.time() - start < deadline:
            if changes and time.time() - start >= changes[0][0]:
                post_json(port, "/_sim/config", {"capacity": changes.pop(0)[1]})
                changed.append(time.time())
            time.sleep(0.1)
    finally:
        stopped = any(c.poll() is None for c in children)
        for child in children:
            if child.poll() is None:
                child.terminate()
        for child in children:
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()
    return changed, stopped


def converge(
    run: Run, changed: Sequence[float], fixed: Run, fixed_changed: Sequence[float]
) -> tuple[float | None, ...]:
    """Seconds to 90 % of the best fixed run's rate after the start and each capacity change."""
    events = [run.started, *changed]
    fixed_events = [fixed.started, *fixed_changed]
    result = []
    for i, event in enumerate(events):
        if len(fixed_events) > i:
            # The yardstick for this phase: the fixed run's median rate in the same phase.
            lo = fixed_events[i] + 5
            hi = fixed_events[i + 1] if i + 1 < len(fixed_events) else fixed.finished - 5
            target = steady_rate(fixed, lo, hi)
        else:
            target = steady_rate(fixed)
        until = events[i + 1] if i + 1 < len(events) else run.finished
        result.append(converge_after(run.completions, event, target, until))
    return tuple(result)


def scenario_rows(bench: Bench, s: Scenario, policies: Sequence[str]) -> list[Row]:
    """Sweep fixed, then run each policy; one row per run."""
    print(f"{s.key}: {s.title}", flush=True)
    sweep = [bench.run(s, "fixed", n) for n in s.sweep]
    top_run, top_changed = max(sweep, key=lambda rc: rc[0].per_min)
    rows = [Row(s.key, r, top_run, converge(r, c, top_run, top_changed)) for r, c in sweep]
    for policy in policies:
        run, changed = bench.run(s, policy)
        rows.append(
            Row(
                s.key,
                run,
                best([r for r, _ in sweep]),
                converge(run, changed, top_run, top_changed),
            )
        )
    return rows


def main() -> None:
    """Run the chosen scenarios and print one table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--scenarios", default="a,b,c,d,e")
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--trace", action="store_true", help="print the adaptive decisions")
    args = parser.parse_args()
    chosen = [k.strip() for k in args.scenarios.split(",") if k.strip()]
    unknown = set(chosen) - {"a", "b", "c", "d", "e"}
    if unknown:
        parser.error(f"unknown scenario(s): {', '.join(sorted(unknown))}")
    # SIGTERM unwinds like Ctrl-C, so the sims, runners and server of the run in hand stop too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    table = QUICK if args.quick else FULL
    rows: list[Row] = []
    began = time.monotonic()
    with embedded_server() as server_url, tempfile.TemporaryDirectory() as tmp:
        bench = Bench(server_url, Path(tmp), args.trace)
        for key in ("a", "b", "c", "d"):
            if key not in chosen:
                continue
            policies = ["adaptive"] + (["queue-depth"] if "e" in chosen and key != "d" else [])
            rows += scenario_rows(bench, table[key], policies)
    print()
    print(markdown(rows))
    print(f"\n{bench.runs} runs in {time.monotonic() - began:.0f} s")


if __name__ == "__main__":
    main()
