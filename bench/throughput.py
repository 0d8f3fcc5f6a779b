"""Runner overhead beside pgqueuer: the same no-op work on the same server, in the same run.

    .venv/bin/pip install -e '.[bench]'     # pgqueuer, py-spy
    .venv/bin/python -m bench.throughput [--runs 3] [--subtasks 20000] [--batch-sizes 10,25,50]

imgrun: one `imgrun run --until-idle` process drains N subtasks on the in-process `null`
provider (no HTTP, no image), standard pool pinned at 100; rate = N / (last completed_at -
first started_at). pgqueuer: one worker on one connection, 100 jobs in flight, a no-op
handler, drain mode, for each batch size; rate = N / (last 'successful' - first 'picked') in
its log table. Both from the server's clock. Each run measures every configuration in turn on
fresh databases; the table shows medians over runs with the min-max spread, and the ratio of
imgrun to pgqueuer's best batch size. On a shared machine the rates move with the load; the
CPU each side spends per subtask (the worker process's, less imgrun's start-up and exit
measured on an empty queue; and the server's: postmaster and backends, exited ones included)
moves far less.
"""

from __future__ import annotations

import argparse
import functools
import os
import resource
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import anyio

from bench import pgq
from bench.common import (
    IMGRUN,
    embedded_server,
    fresh_database,
    median,
    queue_synthetic,
    server_cpu,
)
from bench.runner import drain_rate

IN_FLIGHT = 100  # imgrun's pinned standard pool and pgqueuer's max_concurrent_tasks

CONFIG = """\
[providers.null]
type = "null"
# The provider's fleet-wide limit never binds (the null provider's default, said aloud);
# only the pool, pinned below, does.
policy = "fixed"
initial = 1000
max_concurrency = 1000
[runner]
output_dir = "{output}"
[pools.standard]
initial = {in_flight}
max = {in_flight}
"""


@dataclass(frozen=True)
class Sample:
    """One drain: rate, and CPU microseconds per subtask in the worker and in the server."""

    rate: float
    worker_us: float
    server_us: float


def children_cpu() -> float:
    """CPU seconds of this process's waited-for children."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def run_until_idle(env: dict[str, str], url: str) -> float:
    """One `imgrun run --until-idle` on `url`; the CPU seconds it used."""
    before = children_cpu()
    subprocess.run(
        [*IMGRUN, "run", "--until-idle", "--log-level", "WARNING"],
        env={**env, "IMGRUN_DATABASE_URL": url},
        check=True,
        timeout=600,
    )
    return children_cpu() - before


def imgrun_startup(server_url: str, env: dict[str, str]) -> float:
    """CPU seconds of an `imgrun run --until-idle` with nothing to do (start-up and exit)."""
    url = anyio.run(fresh_database, server_url, "bench_tp_imgrun_empty")
    anyio.run(functools.partial(queue_synthetic, url, "empty", 0, provider="null"))
    return median([run_until_idle(env, url) for _ in range(3)])


def imgrun_run(server_url: str, env: dict[str, str], n: int, run: int, startup: float) -> Sample:
    """One drain of `n` null subtasks by one `imgrun run --until-idle`."""
    url = anyio.run(fresh_database, server_url, f"bench_tp_imgrun_{run}")
    anyio.run(functools.partial(queue_synthetic, url, "bench", n, provider="null"))
    server = anyio.run(server_cpu, url)
    worker = run_until_idle(env, url) - startup
    server = anyio.run(server_cpu, url) - server
    rate, done = anyio.run(drain_rate, url)
    assert done == n, f"imgrun: only {done} of {n} completed"
    return Sample(rate, 1e6 * worker / n, 1e6 * server / n)


def pgqueuer_run(server_url: str, n: int, batch_size: int, run: int) -> Sample:
    """One drain of `n` no-op jobs by one pgqueuer worker (in this process)."""
    url = anyio.run(fresh_database, server_url, f"bench_tp_pgq_{batch_size}_{run}")
    anyio.run(pgq.enqueue, url, n)
    worker, server = time.process_time(), anyio.run(server_cpu, url)
    anyio.run(pgq.drain, url, batch_size, IN_FLIGHT)
    worker, server = time.process_time() - worker, anyio.run(server_cpu, url) - server
    rate, done = anyio.run(pgq.rate, url)
    assert done == n, f"pgqueuer: only {done} of {n} succeeded"
    return Sample(rate, 1e6 * worker / n, 1e6 * server / n)


def spread(values: list[float], unit: str = ",.0f") -> str:
    """median (min-max)."""
    return f"{median(values):>9{unit}} ({min(values):{unit}}-{max(values):{unit}})"


def report(samples: dict[str, list[Sample]], ratios: list[float], runs: int, n: int) -> None:
    """Print the table."""
    print(f"\n{n:,} no-op subtasks/jobs, {IN_FLIGHT} in flight, one worker; {runs} runs")
    print(
        f"{'configuration':<20}{'per second (min-max)':>28}"
        f"{'worker CPU us/subtask':>28}{'server CPU us/subtask':>28}"
    )
    for name, values in samples.items():
        print(
            f"{name:<20}{spread([v.rate for v in values]):>28}"
            f"{spread([v.worker_us for v in values]):>28}"
            f"{spread([v.server_us for v in values]):>28}"
        )
    rates = {name: median([v.rate for v in values]) for name, values in samples.items()}
    best = max((k for k in rates if k.startswith("pgqueuer")), key=rates.__getitem__)
    print(
        f"\nimgrun / pgqueuer best ({best}): {rates['imgrun null'] / rates[best]:.2f}x of"
        f" medians; per run {median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
    )


def main() -> None:
    """Measure each configuration `--runs` times, alternating, and print the table."""
    pgq.require()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--batch-sizes", default="10,25,50", help="pgqueuer batch sizes")
    args = parser.parse_args()
    batch_sizes = [int(b) for b in args.batch_sizes.split(",")]
    samples: dict[str, list[Sample]] = {"imgrun null": []}
    samples.update({f"pgqueuer batch {b}": [] for b in batch_sizes})
    ratios: list[float] = []
    with embedded_server() as server_url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "imgrun.toml"
        config.write_text(CONFIG.format(output=Path(tmp) / "out", in_flight=IN_FLIGHT))
        env = {**os.environ, "IMGRUN_CONFIG": str(config), "IMGRUN_HOME": tmp}
        startup = imgrun_startup(server_url, env)
        print(f"imgrun run start-up and exit: {startup:.2f} s CPU (taken off its figure)")
        for run in range(args.runs):
            samples["imgrun null"].append(imgrun_run(server_url, env, args.subtasks, run, startup))
            for b in batch_sizes:
                samples[f"pgqueuer batch {b}"].append(
                    pgqueuer_run(server_url, args.subtasks, b, run)
                )
            this_run = {k: v[-1].rate for k, v in samples.items()}
            best = max(v for k, v in this_run.items() if k.startswith("pgqueuer"))
            ratios.append(this_run["imgrun null"] / best)
            print(
                f"run {run + 1}: "
                + ", ".join(f"{k} {v:,.0f}/s" for k, v in this_run.items())
                + f"; ratio {ratios[-1]:.2f}x",
                flush=True,
            )
    report(samples, ratios, args.runs, args.subtasks)


if __name__ == "__main__":
    main()
