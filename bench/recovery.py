"""Recovery: SIGKILL a runner holding work; seconds until a live runner has claimed all of it.

    .venv/bin/python -m bench.recovery [--runs 3] [--held 8] [--json]

Per run, on a private embedded PostgreSQL and the built-in sim (slow service, so work stays
in flight): a `victim` runner process claims `--held` subtasks; a `survivor` runner is up
and heartbeating; the victim is SIGKILLed. The figure is, from the database's own clock,
the time from the kill to the survivor's claim of the last subtask the victim held. The
runners use the default liveness settings ([runner] heartbeat_interval 1 s, stale_after
4 s). Bounded: every wait has a deadline; every process is stopped by its own handle.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import tempfile
from pathlib import Path
from typing import Any

import anyio
from anyio.abc import Process
from rich.console import Console
from rich.table import Table
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from bench.common import IMGRUN, embedded_server, fresh_database, queue_synthetic
from bench.runner import free_port, process, wait_for_port
from db.engine import open_engine

SERVICE_MS = 60_000  # the sim holds every request this long: the work stays in flight
DEADLINE = 120.0  # seconds any one wait may take before the run is abandoned


async def scalar(engine: AsyncEngine, sql: str, **params: Any) -> Any:
    """One value."""
    async with engine.connect() as connection:
        return await connection.scalar(text(sql), params)


async def until(engine: AsyncEngine, sql: str, **params: Any) -> None:
    """Poll `sql` (one boolean) every 20 ms until true; fail at DEADLINE."""
    with anyio.fail_after(DEADLINE):
        while not await scalar(engine, sql, **params):
            await anyio.sleep(0.02)


HOLDS = (
    "SELECT count(*) = :n FROM subtasks WHERE status = 'processing'"
    " AND executor_id LIKE :who || ':%'"
)


async def stop(runner: Process) -> None:
    """SIGTERM (no grace configured), then SIGKILL after 10 s."""
    if runner.returncode is None:
        runner.terminate()
        with anyio.move_on_after(10):
            await runner.wait()
    if runner.returncode is None:
        runner.kill()
        await runner.wait()


async def one_run(url: str, env: dict[str, str], held: int, run: int) -> float:
    """One kill and takeover; returns seconds from the kill to the last re-claim."""
    await queue_synthetic(url, f"recovery {run}", held)
    env = {**env, "IMGRUN_DATABASE_URL": url}
    victim_id, survivor_id = f"victim-{run}", f"survivor-{run}"
    quiet = ["--log-level", "WARNING"]
    async with open_engine(url, upgrade=False) as engine:
        victim = await anyio.open_process(
            [*IMGRUN, "run", *quiet, "--executor-id", victim_id], env=env
        )
        survivor: Process | None = None
        try:
            await until(engine, HOLDS, n=held, who=victim_id)
            survivor = await anyio.open_process(
                [*IMGRUN, "run", *quiet, "--executor-id", survivor_id], env=env
            )
            # Up for a while, as a fleet's runners are: heartbeating for longer than stale_after.
            await until(
                engine,
                "SELECT coalesce(bool_or(heartbeat_at > started_at + interval '5 s'), false)"
                " FROM executors WHERE id = :id AND state = 'running'",
                id=survivor_id,
            )
            victim.send_signal(signal.SIGKILL)
            await victim.wait()
            killed_at = await scalar(engine, "SELECT extract(epoch FROM now())")
            await until(engine, HOLDS, n=held, who=survivor_id)
            claimed_at = await scalar(
                engine,
                "SELECT extract(epoch FROM max(updated_at)) FROM subtasks"
                " WHERE executor_id LIKE :who || ':%'",
                who=survivor_id,
            )
            return float(claimed_at - killed_at)
        finally:
            await stop(victim)
            if survivor is not None:
                await stop(survivor)


def report(seconds: list[float], held: int, as_json: bool) -> None:
    """The table of runs, then the median and spread."""
    summary = {
        "held": held,
        "runs": [round(s, 2) for s in seconds],
        "median_s": round(statistics.median(seconds), 2),
        "min_s": round(min(seconds), 2),
        "max_s": round(max(seconds), 2),
    }
    if as_json:
        print(json.dumps(summary))
        return
    print(f"SIGKILLed runner holding {held} subtasks: seconds until a live runner claimed all")
    table = Table()
    table.add_column("run", justify="right")
    table.add_column("seconds", justify="right")
    for index, value in enumerate(seconds, 1):
        table.add_row(str(index), f"{value:.2f}")
    Console().print(table)
    print(
        f"recovery: median {summary['median_s']:.2f} s (min {summary['min_s']:.2f},"
        f" max {summary['max_s']:.2f}) over {len(seconds)} runs, {held} subtasks held"
    )


def main() -> None:
    """Run the kills and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3, choices=range(1, 21), metavar="1..20")
    parser.add_argument("--held", type=int, default=8, choices=range(1, 11), metavar="1..10")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    port = free_port()
    with embedded_server() as server_url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "imgrun.toml"
        config.write_text(
            f'[providers.sim]\ntype = "sim"\nbase_url = "http://127.0.0.1:{port}"\n'
            f'request_attempts = 1\n[runner]\nshutdown_grace = 0\noutput_dir = "{tmp}/out"\n'
        )
        env = {**os.environ, "IMGRUN_CONFIG": str(config), "IMGRUN_HOME": tmp}
        sim = [*IMGRUN, "sim", "--port", str(port), "--service-ms", str(SERVICE_MS)]
        sim += ["--capacity", "256", "--queue-limit", "1000"]
        seconds = []
        with process(sim, env):
            wait_for_port(port)
            for run in range(args.runs):
                url = anyio.run(fresh_database, server_url, f"bench_recovery_{run}")
                seconds.append(anyio.run(one_run, url, env, args.held, run))
                if not args.json:
                    print(f"run {run + 1}: {seconds[-1]:.2f} s")
    report(seconds, args.held, args.json)


if __name__ == "__main__":
    main()
