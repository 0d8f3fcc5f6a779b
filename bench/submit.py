"""Submit a 100,000-subtask spec to a fresh database; print seconds and subtasks/s.

    .venv/bin/python -m bench.submit [--runs 5] [--subtasks 100000]

Times the whole `imgrun submit` process (start-up, validation, expansion, each subtask's
provider and first fair-share turn, COPY, commit) against a fresh, migrated database on an
embedded server. Prints each run, then the median with its spread. Target: ≤ 2 s.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import tempfile
import time
from pathlib import Path

import anyio

from bench.common import IMGRUN, embedded_server, fresh_database, median
from db.engine import open_engine


def write_spec(path: Path, subtasks: int) -> None:
    """A spec expanding to exactly `subtasks` subtasks: 1 prompt × a × b."""
    a = 100
    b = subtasks // a
    values_a = ", ".join(f"a{i}" for i in range(a))
    values_b = ", ".join(f"b{i}" for i in range(b))
    path.write_text(
        "name: bench submit\n"
        "prompts: ['a {x} in the style of {y}, highly detailed, studio light']\n"
        f"variables: {{x: [{values_a}], y: [{values_b}]}}\nseed: 1\nbatch_size: 2\n"
    )


async def migrated(server_url: str, name: str) -> str:
    """A fresh database at the newest schema."""
    url = await fresh_database(server_url, name)
    async with open_engine(url):
        pass
    return url


def main() -> None:
    """Run the benchmark and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--subtasks", type=int, default=100_000)
    args = parser.parse_args()
    if args.runs < 3:
        parser.error("--runs must be at least 3 (a median with its spread)")
    with embedded_server() as server_url, tempfile.TemporaryDirectory() as tmp:
        spec = Path(tmp) / "spec.yaml"
        write_spec(spec, args.subtasks)
        seconds = []
        for run in range(args.runs):
            url = anyio.run(migrated, server_url, f"bench_submit_{run}")
            env = {**os.environ, "IMGRUN_DATABASE_URL": url, "IMGRUN_HOME": tmp}
            started = time.perf_counter()
            subprocess.run(
                [*IMGRUN, "submit", str(spec), "--json"],
                env=env,
                check=True,
                stdout=subprocess.DEVNULL,
            )
            seconds.append(time.perf_counter() - started)
            print(f"run {run + 1}: {seconds[-1]:.2f} s")
    middle = median(seconds)
    print(
        f"submit {args.subtasks:,} subtasks: median {middle:.2f} s"
        f" (runs {min(seconds):.2f}–{max(seconds):.2f}) over {args.runs} runs"
        f" = {args.subtasks / middle:,.0f} subtasks/s (whole `imgrun submit` process;"
        " target ≤ 2 s)"
    )


if __name__ == "__main__":
    main()
