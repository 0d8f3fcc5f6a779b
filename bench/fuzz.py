"""Fuzz `imgrun submit` with 10,000 hostile and valid spec files; print what happened.

    .venv/bin/python -m bench.fuzz [--examples 10000] [--seed 0]

The suite's fuzz test (tests/cli/test_fuzz_submit.py) runs the same contract a few hundred
times; this runs it at length against a private embedded PostgreSQL. Each example either
submits and the database holds exactly its rows, or exits 2 with one line and writes
nothing (tests/fuzz_contract.py). The first violation stops the run with hypothesis'
shrunk example.
"""

from __future__ import annotations

import argparse
import collections
import os
import statistics
import tempfile
import time
from pathlib import Path

import anyio
from hypothesis import HealthCheck, given, seed, settings

from bench.common import embedded_server, fresh_database
from db.engine import open_engine
from tests.fuzz_contract import check, database, submit_in_process
from tests.spec_strategies import SpecCase, spec_cases


async def _migrated(server_url: str) -> str:
    url = await fresh_database(server_url, "bench_fuzz")
    async with open_engine(url):
        pass
    return url


def _table(kinds: collections.Counter[str], seconds: list[float], wall: float) -> str:
    total = sum(kinds.values())
    lines = [f"{'outcome':<44} {'examples':>9} {'share':>7}"]
    for kind, count in kinds.most_common():
        lines.append(f"{kind[:44]:<44} {count:>9,} {count / total:>7.1%}")
    ordered = sorted(seconds)
    lines += [
        "",
        f"examples: {total:,} in {wall:.0f} s; contract violations: 0",
        f"time per submit: median {statistics.median(ordered) * 1000:.0f} ms,"
        f" p99 {ordered[int(len(ordered) * 0.99) - 1] * 1000:.0f} ms,"
        f" max {ordered[-1] * 1000:.0f} ms",
    ]
    return "\n".join(lines)


def main() -> None:
    """Run the fuzzer and print the table."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--examples", type=int, default=10_000)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    kinds: collections.Counter[str] = collections.Counter()
    seconds: list[float] = []
    with embedded_server() as server_url, tempfile.TemporaryDirectory() as tmp:
        url = anyio.run(_migrated, server_url)
        # main() reads its environment like the real command does.
        os.environ |= {
            "IMGRUN_DATABASE_URL": url,
            "IMGRUN_HOME": tmp,
            "IMGRUN_CONFIG": str(Path(tmp) / "none.toml"),
        }
        with database(url) as db:

            @seed(args.seed)
            @settings(
                max_examples=args.examples,
                deadline=None,
                database=None,
                suppress_health_check=list(HealthCheck),
            )
            @given(case=spec_cases())
            def run(case: SpecCase) -> None:
                path = Path(tmp) / f"spec{len(seconds)}{case.suffix}"
                path.write_bytes(case.content)
                before = db.counts()
                outcome = submit_in_process(path)
                kinds[check(case, outcome, db, before)] += 1
                seconds.append(outcome.seconds)
                path.unlink()

            started = time.perf_counter()
            run()
            print(_table(kinds, seconds, time.perf_counter() - started))


if __name__ == "__main__":
    main()
