"""Runner overhead beside pgqueuer: the same no-op work on the same server, in the same run.

    .venv/bin/pip install -e '.[bench]'     # pgqueuer, py-spy
    .venv/bin/python -m bench.throughput [--runs 3] [--subtasks 20000] [--batch-sizes 10,25,50]

imgrun: one `imgrun run --until-idle` process drains N subtasks on the in-process `null`
provider (no HTTP, no image), standard pool pinned at 100; rate = N / (last completed_at -
first started_at). pgqueuer: one worker on one connection, 100 jobs in flight, a no-op
handler, drain mode, for each batch size; rate = N / (last 'successful' - first 'picked') in
its log table. Both from the server's clock. Each run measures every configuration in turn on
fresh databases; the table shows medians over runs with the min-max spread, and the ratio of
imgrun to pgqueuer's best batch size.
"""

from __future__ import annotations

import argparse
import functools
import os
import subprocess
import tempfile
from pathlib import Path

import anyio

from bench import pgq
from bench.common import IMGRUN, embedded_server, fresh_database, median, queue_synthetic
from bench.runner import drain_rate

IN_FLIGHT = 100  # imgrun's pinned standard pool and pgqueuer's max_concurrent_tasks

CONFIG = """\
[providers.null]
type = "null"
# TODO(lead): once fleet-wide provider limits are in main, un-comment so that the provider
# limit never binds and only the pool (pinned below) does:
# policy = "fixed"
# initial = 1000
# max_concurrency = 1000
[runner]
output_dir = "{output}"
[pools.standard]
initial = {in_flight}
max = {in_flight}
"""


def imgrun_run(server_url: str, env: dict[str, str], n: int, run: int) -> float:
    """One drain of `n` null subtasks by one `imgrun run --until-idle`; subtasks/s."""
    url = anyio.run(fresh_database, server_url, f"bench_tp_imgrun_{run}")
    anyio.run(functools.partial(queue_synthetic, url, "bench", n, provider="null"))
    subprocess.run(
        [*IMGRUN, "run", "--until-idle", "--log-level", "WARNING"],
        env={**env, "IMGRUN_DATABASE_URL": url},
        check=True,
        timeout=600,
    )
    rate, done = anyio.run(drain_rate, url)
    assert done == n, f"imgrun: only {done} of {n} completed"
    return rate


def pgqueuer_run(server_url: str, n: int, batch_size: int, run: int) -> float:
    """One drain of `n` no-op jobs by one pgqueuer worker; jobs/s."""
    url = anyio.run(fresh_database, server_url, f"bench_tp_pgq_{batch_size}_{run}")
    return anyio.run(pgq.throughput, url, n, batch_size, IN_FLIGHT)


def spread(values: list[float]) -> str:
    """median (min-max)."""
    return f"{median(values):>9,.0f}  ({min(values):,.0f}-{max(values):,.0f})"


def report(rates: dict[str, list[float]], ratios: list[float], runs: int, n: int) -> None:
    """Print the table."""
    print(f"\n{n:,} no-op subtasks/jobs, {IN_FLIGHT} in flight, one worker; {runs} runs")
    print(f"{'configuration':<28}{'median /s':>10}  (min-max)")
    for name, values in rates.items():
        print(f"{name:<28}{spread(values)}")
    best = max((k for k in rates if k.startswith("pgqueuer")), key=lambda k: median(rates[k]))
    ratio = median(rates["imgrun null"]) / median(rates[best])
    print(
        f"\nimgrun / pgqueuer best ({best}): {ratio:.2f}x of medians;"
        f" per run {median(ratios):.2f}x ({min(ratios):.2f}-{max(ratios):.2f})"
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
    rates: dict[str, list[float]] = {"imgrun null": []}
    rates.update({f"pgqueuer batch {b}": [] for b in batch_sizes})
    ratios: list[float] = []
    with embedded_server() as server_url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "imgrun.toml"
        config.write_text(CONFIG.format(output=Path(tmp) / "out", in_flight=IN_FLIGHT))
        env = {**os.environ, "IMGRUN_CONFIG": str(config), "IMGRUN_HOME": tmp}
        for run in range(args.runs):
            rates["imgrun null"].append(imgrun_run(server_url, env, args.subtasks, run))
            for b in batch_sizes:
                rates[f"pgqueuer batch {b}"].append(pgqueuer_run(server_url, args.subtasks, b, run))
            this_run = {k: v[-1] for k, v in rates.items()}
            best = max(v for k, v in this_run.items() if k.startswith("pgqueuer"))
            ratios.append(this_run["imgrun null"] / best)
            print(
                f"run {run + 1}: "
                + ", ".join(f"{k} {v:,.0f}/s" for k, v in this_run.items())
                + f"; ratio {ratios[-1]:.2f}x",
                flush=True,
            )
    report(rates, ratios, args.runs, args.subtasks)


if __name__ == "__main__":
    main()
