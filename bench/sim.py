"""Benchmark the simulated backend: throughput at service_ms=0, then latency vs concurrency.

Run: .venv/bin/python -m bench.sim [--runs 5] [--requests 4000] [--service-ms 50]
The sim runs in a subprocess (one core), the load generator here (the other core).
Loopback only; every run is bounded in request count and in time.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import multiprocessing as mp
import os
import statistics
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp

from workers.sim import SimConfig, run

PROMPTS = [f"bench prompt {i}" for i in range(16)]  # a small set: the sim caches renders
RUN_TIMEOUT = 60.0  # seconds, per run


def _serve(config: SimConfig, ports: Any) -> None:
    run(config, ready=ports.put)


def cpu_seconds(pid: int) -> float | None:
    """User + system CPU time of a process (Linux /proc; None elsewhere)."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return None
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@contextmanager
def sim_process(config: SimConfig) -> Iterator[tuple[str, int]]:
    """Start the sim in a subprocess; yield its base URL and pid; stop it."""
    ctx = mp.get_context("spawn")
    ports = ctx.Queue()
    proc = ctx.Process(target=_serve, args=(config, ports), daemon=True)
    proc.start()
    try:
        port = ports.get(timeout=30)
        yield f"http://{config.host}:{port}", proc.pid or 0
    finally:
        proc.terminate()
        proc.join(10)


@dataclass
class Outcome:
    """What one load run saw."""

    seconds: float
    latencies: list[float]  # of 200s, in seconds
    statuses: dict[int, int]

    @property
    def total(self) -> int:
        return sum(self.statuses.values())

    def share(self, status: int) -> float:
        return self.statuses.get(status, 0) / max(1, self.total)

    def percentile(self, q: float) -> float:
        if not self.latencies:
            return float("nan")
        ordered = sorted(self.latencies)
        return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def load(url: str, *, requests: int, concurrency: int) -> Outcome:
    """Closed loop: `concurrency` clients send `requests` generations in all (no backoff)."""
    connector = aiohttp.TCPConnector(limit=concurrency)
    remaining = requests
    latencies: list[float] = []
    statuses: dict[int, int] = {}

    # Bodies encoded once: the load generator's CPU is the scarce resource on 2 cores.
    bodies = [
        json.dumps({"prompt": p, "response_format": "b64_json", "seed": 1}).encode()
        for p in PROMPTS
    ]
    headers = {"Content-Type": "application/json"}
    target = f"{url}/v1/images/generations"

    async def client(session: aiohttp.ClientSession, worker: int) -> None:
        nonlocal remaining
        i = worker
        while remaining > 0:
            remaining -= 1
            body = bodies[i % len(bodies)]
            i += concurrency
            started = time.perf_counter()
            async with session.post(target, data=body, headers=headers) as resp:
                await resp.read()
                statuses[resp.status] = statuses.get(resp.status, 0) + 1
                if resp.status == 200:
                    latencies.append(time.perf_counter() - started)

    async with aiohttp.ClientSession(connector=connector) as session:
        started = time.perf_counter()
        async with asyncio.timeout(RUN_TIMEOUT):
            await asyncio.gather(*(client(session, w) for w in range(concurrency)))
        return Outcome(time.perf_counter() - started, latencies, statuses)


def _client_process(url: str, requests: int, concurrency: int, start: Any, results: Any) -> None:
    start.wait()
    outcome = asyncio.run(load(url, requests=requests, concurrency=concurrency))
    results.put((outcome.total, outcome.statuses, time.time() - outcome.seconds, time.time()))


def parallel_load(url: str, *, requests: int, concurrency: int, processes: int) -> float:
    """Split the load over several client processes (one aiohttp client saturates a core
    before the sim does); return the combined requests/s."""
    ctx = mp.get_context("spawn")
    start, results = ctx.Event(), ctx.Queue()
    procs = [
        ctx.Process(
            target=_client_process,
            args=(url, requests // processes, concurrency // processes, start, results),
        )
        for _ in range(processes)
    ]
    for proc in procs:
        proc.start()
    time.sleep(1.0)  # let the clients import before the clock starts
    start.set()
    got = [results.get(timeout=RUN_TIMEOUT) for _ in procs]
    for proc in procs:
        proc.join(10)
    total = sum(n for n, statuses, _, _ in got)
    assert all(set(statuses) == {200} for _, statuses, _, _ in got), got
    return total / (max(end for *_, end in got) - min(begin for _, _, begin, _ in got))


async def throughput(args: argparse.Namespace) -> None:
    """Requests per second with service_ms=0, median of several runs."""
    config = SimConfig(port=0, service_ms=0, capacity=args.capacity, queue_limit=1024)
    with sim_process(config) as (url, pid):
        await load(url, requests=500, concurrency=args.concurrency)  # warm up the render cache
        rates, cpu_per_request = [], []
        for _ in range(args.runs):
            cpu_before = cpu_seconds(pid)
            rates.append(
                parallel_load(
                    url,
                    requests=args.requests,
                    concurrency=args.concurrency,
                    processes=args.client_processes,
                )
            )
            cpu_after = cpu_seconds(pid)
            if cpu_before is not None and cpu_after is not None:
                cpu_per_request.append((cpu_after - cpu_before) / args.requests)
    print(
        f"throughput, service_ms=0: {args.requests} requests/run over {args.client_processes} "
        f"client process(es), {args.concurrency} connections in all"
    )
    print("  runs: " + ", ".join(f"{r:,.0f}" for r in rates) + " req/s")
    print(f"  median: {statistics.median(rates):,.0f} req/s")
    if cpu_per_request:
        # The load generator shares the 2 cores; the sim's own CPU per request shows its
        # ceiling on one core independently of how busy the clients (or neighbours) are.
        per_request = statistics.median(cpu_per_request)
        print(
            f"  sim CPU per request: {per_request * 1e6:,.0f} µs "
            f"→ one-core ceiling ≈ {1 / per_request:,.0f} req/s"
        )


async def latency_table(args: argparse.Namespace) -> None:
    """p50/p95 latency and the 429 share at 1, cap/2, cap, 2×cap and 4×cap clients."""
    cap = args.capacity
    config = SimConfig(
        port=0, service_ms=args.service_ms, capacity=cap, queue_limit=args.queue_limit
    )
    print(
        f"\nlatency vs concurrency: capacity {cap}, queue_limit {args.queue_limit}, "
        f"service_ms {args.service_ms} (lognormal), closed loop without backoff"
    )
    print(f"{'clients':>8} {'requests':>9} {'ok/s':>7} {'p50 ms':>8} {'p95 ms':>8} {'429 %':>6}")
    with sim_process(config) as (url, _):
        for clients in (1, max(1, cap // 2), cap, 2 * cap, 4 * cap):
            count = max(args.latency_requests, clients * 10)
            out = await load(url, requests=count, concurrency=clients)
            ok_rate = out.statuses.get(200, 0) / out.seconds
            print(
                f"{clients:>8} {out.total:>9} {ok_rate:>7.1f} {out.percentile(0.5) * 1000:>8.1f} "
                f"{out.percentile(0.95) * 1000:>8.1f} {out.share(429) * 100:>6.1f}"
            )


def main() -> None:
    """Parse flags and run both benchmarks."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=5)
    parser.add_argument("--requests", type=int, default=4000)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--client-processes", type=int, default=2)
    parser.add_argument("--capacity", type=int, default=8)
    parser.add_argument("--service-ms", type=float, default=50.0)
    parser.add_argument("--queue-limit", type=int, default=8)
    parser.add_argument("--latency-requests", type=int, default=200)
    args = parser.parse_args()
    asyncio.run(throughput(args))
    asyncio.run(latency_table(args))


if __name__ == "__main__":
    main()
