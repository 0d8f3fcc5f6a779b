"""The two scaling policies side by side against a provider with limited capacity.

    .venv/bin/python -m bench.policies [--subtasks 3000] [--runs 2]

The sim has 8 service slots, 100 ms per image and room for 8 more requests in its queue;
past that it answers 429 + Retry-After, like a rate-limited GPU service. One runner drains
the same task with each policy (`queue-depth`: the original rule; `adaptive`: the default).
Scaling intervals are compressed the same way for both (tick 1 s, up 6 s, down 18 s instead
of 10/60/180 s) so a run takes seconds, not hours. Printed per policy: images/min, how many
requests the provider turned away (429), subtasks that failed, and the final limit.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import text

from bench.common import IMGRUN, embedded_server, fresh_database, median, queue_synthetic
from bench.runner import free_port, process, wait_for_port
from db.engine import open_engine

CONFIG = """
[providers.sim]
type = "sim"
base_url = "http://127.0.0.1:{port}"
[pools.standard]
policy = "{policy}"
initial = 10
max = 50
step = 5
tick_interval = 1
scale_up_interval = 6
scale_down_interval = 18
[runner]
output_dir = "{output}"
heartbeat_interval = 1
"""


def sim_stats(port: int, reset: bool = False) -> dict[str, Any]:
    """GET (or reset) the sim's counters."""
    url = f"http://127.0.0.1:{port}/_sim/{'reset' if reset else 'stats'}"
    request = urllib.request.Request(url, method="POST" if reset else "GET")
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read() or b"{}"))


async def outcome(url: str) -> dict[str, Any]:
    """Images/min between first claim and last completion; failures; final limit."""
    async with open_engine(url, upgrade=False) as engine, engine.connect() as connection:
        done, seconds, failed = (
            await connection.execute(
                text(
                    "SELECT count(*) FILTER (WHERE status = 'completed'),"
                    " extract(epoch FROM max(completed_at) - min(started_at)),"
                    " count(*) FILTER (WHERE status = 'failed') FROM subtasks"
                )
            )
        ).one()
        pools = await connection.scalar(text("SELECT pools FROM executors LIMIT 1"))
    return {
        "per_min": 60 * done / float(seconds),
        "failed": int(failed),
        "limit": pools["standard"]["limit"] if pools else None,
    }


def one_run(server_url: str, tmp: str, port: int, policy: str, n: int, run: int) -> dict[str, Any]:
    """Drain `n` subtasks with `policy`; return the figures."""
    config = Path(tmp) / f"{policy}.toml"
    config.write_text(CONFIG.format(port=port, policy=policy, output=Path(tmp) / "out"))
    url = anyio.run(fresh_database, server_url, f"bench_policy_{policy.replace('-', '_')}_{run}")
    anyio.run(functools.partial(queue_synthetic, url, "policy", n))
    sim_stats(port, reset=True)
    env = {
        **os.environ,
        "IMGRUN_CONFIG": str(config),
        "IMGRUN_HOME": tmp,
        "IMGRUN_DATABASE_URL": url,
    }
    subprocess.run(
        [*IMGRUN, "run", "--until-idle", "--log-level", "WARNING"], env=env, check=True, timeout=900
    )
    stats = sim_stats(port)
    return {
        **anyio.run(outcome, url),
        "rejected": stats["rate_limited"],
        "requests": stats["requests"],
    }


def main() -> None:
    """Alternate the policies over several runs and print medians."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=3000)
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()
    port = free_port()
    results: dict[str, list[dict[str, Any]]] = {"queue-depth": [], "adaptive": []}
    with embedded_server() as server_url, tempfile.TemporaryDirectory() as tmp:
        sim = [
            *IMGRUN,
            "sim",
            "--port",
            str(port),
            "--capacity",
            "8",
            "--service-ms",
            "100",
            "--queue-limit",
            "8",
            "--seed",
            "1",
        ]
        with process(sim, {**os.environ, "IMGRUN_HOME": tmp}):
            wait_for_port(port)
            for run in range(args.runs):
                for policy in results:
                    started = time.monotonic()
                    figures = one_run(server_url, tmp, port, policy, args.subtasks, run)
                    results[policy].append(figures)
                    print(
                        f"run {run + 1} {policy:>11}: {figures['per_min']:,.0f} images/min,"
                        f" {figures['rejected']:,} of {figures['requests']:,} requests"
                        f" rejected (429), {figures['failed']} failed, final limit"
                        f" {figures['limit']} ({time.monotonic() - started:.0f} s)"
                    )
    for policy, runs in results.items():
        print(
            f"{policy:>11}: median {median([r['per_min'] for r in runs]):,.0f} images/min,"
            f" median {median([r['rejected'] for r in runs]):,.0f} requests rejected (429),"
            f" {sum(r['failed'] for r in runs)} failed in {len(runs)} runs"
            f" of {args.subtasks:,}"
        )


if __name__ == "__main__":
    main()
