"""Chaos soak: runners killed and restarted, PostgreSQL restarted, a faulty provider.

    .venv/bin/python -m bench.chaos [--subtasks 3000] [--runners 3] [--seconds 60] [--seed 1]

Three runner processes work through standard and lumina subtasks against a sim that
injects 500s, 429s, malformed bodies and failed jobs. For `--seconds`, every few seconds
a random runner is SIGKILLed or SIGTERMed and replaced, and once PostgreSQL itself is
restarted. Then one runner finishes with --until-idle, and the script checks that nothing
was lost or left in flight and that every task's counters match its subtasks. Bounded in
count and time; everything listens on loopback and is stopped by its own pid.
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import anyio
from sqlalchemy import text

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


async def queue(url: str, subtasks: int) -> None:
    """A standard task and a lumina task (a tenth of the subtasks)."""
    lumina = subtasks // 10
    await queue_synthetic(url, "chaos standard", subtasks - lumina, max_retries=8)
    await queue_synthetic(url, "chaos lumina", lumina, pool="lumina", max_retries=8)


async def verify(url: str) -> dict[str, int]:
    """Counts by status; raises if anything is in flight or a task's counters disagree."""
    async with open_engine(url, upgrade=False) as engine, engine.connect() as connection:
        counts = dict(
            (
                await connection.execute(
                    text("SELECT status, count(*) FROM subtasks GROUP BY status")
                )
            ).all()
        )
        assert not counts.get("processing") and not counts.get("pending"), counts
        mismatched = (
            await connection.execute(
                text(
                    "SELECT t.id FROM tasks t JOIN subtasks s ON s.task_id = t.id GROUP BY t.id"
                    " HAVING max(t.completed_subtasks)"
                    " <> count(*) FILTER (WHERE s.status = 'completed')"
                    " OR max(t.failed_subtasks) <> count(*) FILTER (WHERE s.status = 'failed')"
                    " OR max(t.canceled_subtasks)"
                    " <> count(*) FILTER (WHERE s.status = 'canceled')"
                )
            )
        ).all()
        assert not mismatched, f"task counters disagree with subtasks: {mismatched}"
        return {str(k): int(v) for k, v in counts.items()}


def main() -> None:
    """Run the soak and print what happened."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--subtasks", type=int, default=3000)
    parser.add_argument("--runners", type=int, default=3)
    parser.add_argument("--seconds", type=float, default=60.0)
    parser.add_argument("--seed", type=int, default=1)
    args = parser.parse_args()
    rng = random.Random(args.seed)
    port = free_port()
    with tempfile.TemporaryDirectory(prefix="imgrun-chaos-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "home")
        server_url = server.start()
        try:
            config = Path(tmp) / "imgrun.toml"
            config.write_text(CONFIG.format(port=port, output=Path(tmp) / "out"))
            url = anyio.run(fresh_database, server_url, "chaos")
            anyio.run(queue, url, args.subtasks)
            env = {
                **os.environ,
                "IMGRUN_CONFIG": str(config),
                "IMGRUN_HOME": tmp,
                "IMGRUN_DATABASE_URL": url,
            }
            sim = [
                *IMGRUN,
                "sim",
                "--port",
                str(port),
                "--service-ms",
                "20",
                "--capacity",
                "32",
                "--queue-limit",
                "256",
                "--error-rate",
                "0.05",
                "--rate-limit-rate",
                "0.05",
                "--malformed-rate",
                "0.02",
                "--lumina-fail-rate",
                "0.1",
                "--seed",
                str(args.seed),
            ]
            events = {"kill": 0, "term": 0, "db_restart": 0}
            started = time.monotonic()
            with process(sim, env):
                wait_for_port(port)
                run = [*IMGRUN, "run", "--log-level", "WARNING"]
                runners = [
                    subprocess.Popen(run, env=env, stderr=subprocess.DEVNULL)
                    for _ in range(args.runners)
                ]
                restart_at = started + args.seconds / 2
                try:
                    while time.monotonic() - started < args.seconds:
                        time.sleep(rng.uniform(1.0, 4.0))
                        victim = rng.randrange(len(runners))
                        kind = rng.choice(("kill", "term"))
                        runners[victim].send_signal(
                            signal.SIGKILL if kind == "kill" else signal.SIGTERM
                        )
                        runners[victim].wait(timeout=30)
                        events[kind] += 1
                        runners[victim] = subprocess.Popen(run, env=env, stderr=subprocess.DEVNULL)
                        if restart_at and time.monotonic() > restart_at:
                            server.release()  # the only holder: this stops PostgreSQL
                            time.sleep(2)
                            server.start()
                            events["db_restart"] += 1
                            restart_at = 0
                finally:
                    for runner in runners:
                        runner.terminate()
                    for runner in runners:
                        try:
                            runner.wait(timeout=30)
                        except subprocess.TimeoutExpired:
                            runner.kill()
                subprocess.run([*run, "--until-idle"], env=env, check=True, timeout=600)
            counts = anyio.run(verify, url)
        finally:
            server.release()
    elapsed = time.monotonic() - started
    print(
        f"chaos: {args.subtasks:,} subtasks, {args.runners} runners, {elapsed:.0f} s;"
        f" {events['kill']} SIGKILLs, {events['term']} SIGTERMs,"
        f" {events['db_restart']} PostgreSQL restart(s)"
    )
    print(f"final: {counts}; nothing pending or in flight; every task's counters match")


if __name__ == "__main__":
    main()
