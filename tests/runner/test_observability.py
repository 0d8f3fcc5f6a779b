"""What an operator sees of a running runner: Prometheus metrics, health, and quiet logs."""

from __future__ import annotations

import json
import re
import socket
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.runner.conftest import (
    process_env,
    runner_command,
    runner_settings,
    status_counts,
    submit,
)

pytestmark = pytest.mark.anyio


def free_port() -> int:
    """A free loopback port."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def sample(exposition: str, name: str, **labels: str) -> float:
    """One sample's value from Prometheus text format (0 if absent)."""
    wanted = ",".join(f'{k}="{v}"' for k, v in labels.items())
    for line in exposition.splitlines():
        match = re.fullmatch(rf"{name}\{{(.*)\}} (\S+)", line)
        if match and all(part in match.group(1) for part in wanted.split(",")):
            return float(match.group(2))
    return 0.0


async def test_metrics_move_during_a_run_and_logs_stay_quiet(
    engine: AsyncEngine, start_sim: Any, tmp_path: Path, database_url: str, cli_env: dict[str, str]
) -> None:
    """2,000 subtasks: /metrics moves, /healthz answers, fewer than 50 log lines at INFO."""
    port = free_port()
    async with start_sim(service_ms=20.0, capacity=64, queue_limit=1000) as sim:
        await submit(engine, n=2000)
        settings = runner_settings(sim.url, {"runner": {"metrics_port": port}})
        env = process_env(cli_env, tmp_path, database_url, settings)
        scrapes: list[str] = []
        async with await anyio.open_process(runner_command("--until-idle"), env=env) as runner:
            async with aiohttp.ClientSession() as http:
                with anyio.fail_after(60):
                    while runner.returncode is None:
                        try:
                            async with http.get(f"http://127.0.0.1:{port}/metrics") as response:
                                scrapes.append(await response.text())
                            async with http.get(f"http://127.0.0.1:{port}/healthz") as response:
                                health = await response.json()
                        except aiohttp.ClientConnectionError:
                            pass  # not listening yet, or already gone
                        await anyio.sleep(0.2)
            assert runner.stderr is not None
            output = b"".join([chunk async for chunk in runner.stderr])
            assert await runner.wait() == 0

    assert await status_counts(engine) == {"completed": 2000}
    assert health["executor_id"] and len(scrapes) >= 3
    running = [sample(s, "imgrun_pool_running", pool="standard") for s in scrapes]
    limits = [sample(s, "imgrun_pool_limit", pool="standard") for s in scrapes]
    completions = [
        sample(s, "imgrun_completions_total", pool="standard", provider="sim") for s in scrapes
    ]
    assert max(running) > 0 and max(limits) >= 10
    assert completions == sorted(completions) and completions[-1] > completions[0]
    assert sample(scrapes[-1], "imgrun_request_seconds_count", pool="standard", provider="sim") > 0

    lines = [json.loads(line) for line in output.decode().splitlines() if line.strip()]
    assert 2 <= len(lines) < 50, [line["message"] for line in lines]
    assert {line["level"] for line in lines} <= {"info", "warning"}
