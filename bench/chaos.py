"""Chaos soak: runners killed and restarted, PostgreSQL restarted, a faulty provider, at once.

    .venv/bin/python -m bench.chaos [--subtasks 3000] [--runners 3] [--seconds 60]
                                    [--events 24] [--max-retries 8] [--seed 1] [--json]

Three runner processes work through standard and lumina subtasks against a sim that
injects 500s, 429s, hangs, malformed bodies and failed jobs, with a storm of 500s and 429s
switched on live (POST /_sim/config) for a stretch. Until both `--seconds` have passed and
`--events` signals were sent, a random runner is SIGKILLed or SIGTERMed and replaced every
0.5-2.5 s; half-way, PostgreSQL itself is restarted. Then one runner finishes with
--until-idle and bench/chaos_checks.py asserts: every subtask completed or failed with its
error recorded; every task's counters equal fresh counts; every stored sha256 matches its
file; the sim saw no attempt the database does not know, and generated a subtask under two
attempts only if a runner holding it was stopped (or the database restarted under it).
Bounded in count and time; everything listens on loopback and is stopped by its own pid.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import anyio
from sqlalchemy import text

from bench.chaos_checks import Findings, verify
from bench.common import IMGRUN, fresh_database, queue_synthetic
from bench.runner import free_port, process, wait_for_port
from db.embedded import EmbeddedPostgres
from db.engine import open_engine

CONFIG = """
[providers.sim]
type = "sim"
base_url = "http://127.0.0.1:{port}"
timeout = 5
request_attempts = 2
request_retry_wait = 0.1
[runner]
heartbeat_interval = 0.5
lease = 4
retry_base = 0.2
shutdown_grace = 2
output_dir = "{output}"
[pools.lumina]
polling_interval = 0.2
timeout = 30
"""

BASE_FAULTS = {"error_rate": 0.05, "rate_limit_rate": 0.05}
STORM_FAULTS = {"error_rate": 0.3, "rate_limit_rate": 0.2}  # a provider having a bad minute
MAX_RUN_FACTOR = 4  # the signal loop stops at this many times --seconds, events or not


def sim_command(port: int, seed: int) -> list[str]:
    """The faulty sim: 500s, 429s, hangs, malformed bodies and failed lumina jobs."""
    flags = {
        "--port": port,
        "--service-ms": 20,
        "--capacity": 32,
        "--queue-limit": 256,
        "--error-rate": BASE_FAULTS["error_rate"],
        "--rate-limit-rate": BASE_FAULTS["rate_limit_rate"],
        "--hang-rate": 0.01,
        "--malformed-rate": 0.02,
        "--lumina-fail-rate": 0.1,
        "--seed": seed,
    }
    return [*IMGRUN, "sim", *(str(part) for item in flags.items() for part in item)]


def sim_call(port: int, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
    """GET (or POST `body` to) one of the sim's own routes on loopback."""
    data = json.dumps(body).encode() if body is not None else None
    request = urllib.request.Request(
        f"http://127.0.0.1:{port}{path}", data=data, headers={"Content-Type": "application/json"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        return dict(json.loads(response.read()))


async def held(url: str, executor_id: str | None) -> set[int]:
    """Subtasks in flight now: one runner's (by executor id), or everyone's."""
    async with open_engine(url, upgrade=False) as engine, engine.connect() as connection:
        rows = await connection.execute(
            text(
                "SELECT id FROM subtasks WHERE status = 'processing'"
                # A process holds rows as `<executor id>:<incarnation>`.
                " AND (CAST(:e AS text) IS NULL"
                " OR left(executor_id, length(:e) + 1) = :e || ':')"
            ),
            {"e": executor_id},
        )
        return {int(r.id) for r in rows}


@dataclass
class Fleet:
    """The runner processes, each with a fresh executor id per start."""

    env: dict[str, str]
    url: str
    size: int
    started: int = 0
    procs: list[tuple[str, subprocess.Popen[bytes]]] = field(default_factory=list)
    interrupted: set[int] = field(default_factory=set)

    def spawn(self) -> tuple[str, subprocess.Popen[bytes]]:
        """Start one runner."""
        self.started += 1
        name = f"chaos-{self.started}"
        cmd = [*IMGRUN, "run", "--log-level", "WARNING", "--executor-id", name]
        return name, subprocess.Popen(cmd, env=self.env, stderr=subprocess.DEVNULL)

    def start(self) -> None:
        """Start the whole fleet."""
        self.procs = [self.spawn() for _ in range(self.size)]

    def hit(self, index: int, sig: signal.Signals) -> None:
        """Signal one runner, remember what it held, wait for it, replace it."""
        name, proc = self.procs[index]
        self.interrupted |= anyio.run(held, self.url, name)
        proc.send_signal(sig)
        proc.wait(timeout=30)
        self.procs[index] = self.spawn()

    def stop(self) -> None:
        """SIGTERM every runner; SIGKILL one that outlives 30 s."""
        for _, proc in self.procs:
            proc.terminate()
        for _, proc in self.procs:
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def due(plan: dict[str, float], step: str, now: float) -> bool:
    """True once for `step`, the first time `now` passes its time."""
    if step in plan and now > plan[step]:
        del plan[step]
        return True
    return False


def unleash(
    fleet: Fleet, server: EmbeddedPostgres, port: int, args: argparse.Namespace
) -> dict[str, int]:
    """Signals every 0.5-2.5 s, a fault storm, one PostgreSQL restart; returns the counts."""
    rng = random.Random(args.seed)
    events = {"kill": 0, "term": 0, "db_restart": 0, "storms": 0}
    started = time.monotonic()
    plan = {"storm": args.seconds / 4, "calm": args.seconds / 2, "restart": args.seconds / 2}

    def elapsed() -> float:
        return time.monotonic() - started

    while (elapsed() < args.seconds or events["kill"] + events["term"] < args.events) and (
        elapsed() < args.seconds * MAX_RUN_FACTOR
    ):
        time.sleep(rng.uniform(0.5, 2.5))
        kind = rng.choice(("kill", "term"))
        fleet.hit(rng.randrange(fleet.size), signal.SIGKILL if kind == "kill" else signal.SIGTERM)
        events[kind] += 1
        if due(plan, "storm", elapsed()):
            sim_call(port, "/_sim/config", STORM_FAULTS)
            events["storms"] += 1
        if due(plan, "calm", elapsed()):
            sim_call(port, "/_sim/config", BASE_FAULTS)
        if due(plan, "restart", elapsed()):
            fleet.interrupted |= anyio.run(held, fleet.url, None)
            server.release()  # the only holder: this stops PostgreSQL
            time.sleep(2)
            server.start()
            events["db_restart"] += 1
    return events


def soak(args: argparse.Namespace, tmp: Path) -> tuple[dict[str, Any], Findings]:
    """Run the whole soak in `tmp`; returns the events and the verdict."""
    port = free_port()
    server = EmbeddedPostgres(tmp / "home")
    server_url = server.start()
    try:
        config = tmp / "imgrun.toml"
        config.write_text(CONFIG.format(port=port, output=tmp / "out"))
        url = anyio.run(fresh_database, server_url, "chaos")
        anyio.run(queue, url, args.subtasks, args.max_retries)
        env = {
            **os.environ,
            "IMGRUN_CONFIG": str(config),
            "IMGRUN_HOME": str(tmp),
            "IMGRUN_DATABASE_URL": url,
        }
        started = time.monotonic()
        with process(sim_command(port, args.seed), env):
            wait_for_port(port)
            fleet = Fleet(env, url, args.runners)
            fleet.start()
            try:
                events: dict[str, Any] = unleash(fleet, server, port, args)
            finally:
                fleet.stop()
            finish = [*IMGRUN, "run", "--log-level", "WARNING", "--until-idle"]
            subprocess.run(finish, env=env, check=True, timeout=600)
            stats = sim_call(port, "/_sim/stats")
        events["seconds"] = round(time.monotonic() - started)
        events["sim_faults"] = stats["faults"]
        return events, anyio.run(verify, url, stats, fleet.interrupted)
    finally:
        server.release()


async def queue(url: str, subtasks: int, max_retries: int) -> None:
    """A standard task and a lumina task (a tenth of the subtasks)."""
    lumina = subtasks // 10
    await queue_synthetic(url, "chaos standard", subtasks - lumina, max_retries=max_retries)
    await queue_synthetic(url, "chaos lumina", lumina, pool="lumina", max_retries=max_retries)


def main() -> None:
    """Run the soak, print what happened; exit 1 on any violation."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=3000)
    parser.add_argument("--runners", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--events", type=int, default=24, help="SIGKILL/SIGTERMs, at least")
    parser.add_argument("--max-retries", type=int, default=8)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--json", action="store_true", help="One JSON document on stdout.")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="imgrun-chaos-") as tmp:
        events, found = soak(args, Path(tmp))
    if args.json:
        print(json.dumps({"events": events, "findings": asdict(found)}, sort_keys=True))
    else:
        report(args, events, found)
    raise SystemExit(1 if found.violations() else 0)


def report(args: argparse.Namespace, events: dict[str, Any], found: Findings) -> None:
    """The figures, in a few lines."""
    print(
        f"chaos: {args.subtasks:,} subtasks, {args.runners} runners, {events['seconds']} s;"
        f" {events['kill']} SIGKILLs, {events['term']} SIGTERMs,"
        f" {events['db_restart']} PostgreSQL restart(s), {events['storms']} fault storm(s)"
    )
    print(f"sim faults injected: {events['sim_faults']}")
    print(f"final: {found.by_status}; {found.images_checked:,} image checksums verified")
    print(
        f"paid twice: {found.paid_twice_after_kill} subtasks after a kill/term/restart,"
        f" {found.paid_twice_same_key} re-sent keys (a lost answer; same Idempotency-Key)"
    )
    problems = found.violations()
    print("violations: none" if not problems else f"VIOLATIONS: {problems}")


if __name__ == "__main__":
    main()
