"""Runner throughput and wake-up latency against `imgrun sim --service-ms 0`.

    .venv/bin/python -m bench.runner [--subtasks 20000] [--runs 3] [--latency-samples 50]

1. Throughput: one `imgrun run --until-idle` process drains N standard subtasks from a fresh
   database; subtasks/s is N over (last completion - first claim), from database timestamps.
   The in-process `null` provider (no HTTP, no image) runs side by side: the runner's ceiling.
2. Latency: on an idle runner, submit one subtask at a time; submit->start is the claim
   transaction's timestamp minus the submit transaction's (both on the server's clock).
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import socket
import statistics
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import anyio
from sqlalchemy import text

from bench.common import IMGRUN, embedded_server, fresh_database, median, queue_synthetic
from db.engine import open_engine


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def process(
    args: list[str], env: dict[str, str], cwd: str | None = None
) -> Iterator[subprocess.Popen[bytes]]:
    """A child process (in `cwd`), terminated (then killed) on exit."""
    child = subprocess.Popen(
        args, env=env, cwd=cwd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE
    )
    try:
        yield child
    finally:
        if child.poll() is None:
            child.terminate()
            try:
                child.wait(30)
            except subprocess.TimeoutExpired:
                child.kill()
                child.wait()


def wait_for_port(port: int, deadline: float = 20.0) -> None:
    """Block until something listens on `port`."""
    end = time.monotonic() + deadline
    while time.monotonic() < end:
        with socket.socket() as sock:
            if sock.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.05)
    raise RuntimeError(f"nothing listening on port {port}")


def write_config(path: Path, sim_port: int, output: Path, pool: str = "") -> None:
    """Runner config: the sim on its port; images under `output`; extra [pools.standard]."""
    path.write_text(
        f'[providers.sim]\ntype = "sim"\nbase_url = "http://127.0.0.1:{sim_port}"\n'
        f'[runner]\noutput_dir = "{output}"\n[pools.standard]\n{pool}\n'
    )


async def migrated(url: str) -> None:
    """Bring a fresh database to the newest schema."""
    async with open_engine(url):
        pass


async def drain_rate(url: str) -> tuple[float, int]:
    """(subtasks/s between first claim and last completion, completed count)."""
    async with open_engine(url, upgrade=False) as engine, engine.connect() as connection:
        row = (
            await connection.execute(
                text(
                    "SELECT count(*), extract(epoch FROM max(completed_at) - min(started_at))"
                    " FROM subtasks WHERE status = 'completed'"
                )
            )
        ).one()
    return row[0] / float(row[1]), int(row[0])


def throughput(server_url: str, env: dict[str, str], n: int, provider: str, run: int) -> float:
    """One drain of `n` subtasks by one runner process; returns subtasks/s."""
    url = anyio.run(fresh_database, server_url, f"bench_runner_{provider}_{run}")
    anyio.run(functools.partial(queue_synthetic, url, "bench", n, provider=provider))
    env = {**env, "IMGRUN_DATABASE_URL": url}
    subprocess.run(
        [*IMGRUN, "run", "--until-idle", "--log-level", "WARNING"], env=env, check=True, timeout=600
    )
    rate, done = anyio.run(drain_rate, url)
    assert done == n, f"only {done} of {n} completed"
    return rate


async def latency_samples(url: str, samples: int) -> list[float]:
    """Submit one subtask at a time to an idle runner; submit->claim seconds for each."""
    delays = []
    async with open_engine(url, upgrade=False) as engine:
        for i in range(samples):
            task_id = await queue_synthetic(url, f"latency {i}", 1)
            with anyio.fail_after(10):
                while True:
                    async with engine.connect() as connection:
                        delay = await connection.scalar(
                            text(
                                "SELECT extract(epoch FROM s.started_at - t.created_at)"
                                " FROM subtasks s JOIN tasks t ON t.id = s.task_id"
                                " WHERE t.id = :id AND s.status = 'completed'"
                            ),
                            {"id": task_id},
                        )
                    if delay is not None:
                        break
                    await anyio.sleep(0.01)
            delays.append(float(delay))
    return delays


def main() -> None:
    """Run both measurements and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=20_000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--latency-samples", type=int, default=50)
    parser.add_argument(
        "--pool", default="", help='extra [pools.standard] TOML, e.g. "initial = 50"'
    )
    args = parser.parse_args()
    port = free_port()
    with embedded_server() as server_url, tempfile.TemporaryDirectory() as tmp:
        config = Path(tmp) / "imgrun.toml"
        write_config(config, port, Path(tmp) / "out", args.pool.replace(";", "\n"))
        env = {**os.environ, "IMGRUN_CONFIG": str(config), "IMGRUN_HOME": tmp}
        sim = [*IMGRUN, "sim", "--port", str(port), "--service-ms", "0", "--queue-limit", "10000"]
        with process(sim, env):
            wait_for_port(port)
            rates: dict[str, list[float]] = {"sim": [], "null": []}
            for run in range(args.runs):
                for provider in rates:  # side by side, alternating
                    rates[provider].append(
                        throughput(server_url, env, args.subtasks, provider, run)
                    )
                    print(f"run {run + 1} {provider:>4}: {rates[provider][-1]:,.0f} subtasks/s")
            url = anyio.run(fresh_database, server_url, "bench_latency")
            anyio.run(migrated, url)
            with process(
                [*IMGRUN, "run", "--log-level", "WARNING"], {**env, "IMGRUN_DATABASE_URL": url}
            ):
                time.sleep(3)  # let the runner start and go idle before the first sample
                delays = anyio.run(latency_samples, url, args.latency_samples)
    for provider, values in rates.items():
        print(
            f"throughput ({provider}): median {median(values):,.0f} subtasks/s over"
            f" {args.runs} runs of {args.subtasks:,} (one runner)"
        )
    ms = sorted(d * 1000 for d in delays)
    p95 = ms[min(len(ms) - 1, round(0.95 * len(ms)) - 1)]
    print(
        f"submit->start latency on an idle runner: p50 {statistics.median(ms):.1f} ms,"
        f" p95 {p95:.1f} ms ({len(ms)} samples)"
    )


if __name__ == "__main__":
    main()
