"""`imgrun status` as the operator runs it: JSON, one-shot, live in a terminal, Ctrl-C."""

from __future__ import annotations

import fcntl
import json
import os
import re
import select
import signal
import struct
import subprocess
import termios
import time
from collections.abc import Callable
from io import StringIO
from pathlib import Path
from typing import Any

import anyio
import pytest
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from runner.cli import status_view as status_module
from runner.config import RunnerSettings
from runner.status_read import load_status
from runner.view.model import StatusSnapshot
from runner.view.projection import STALE_AFTER
from tests.conftest import IMGRUN
from tests.status.conftest import Seeded

pytestmark = pytest.mark.anyio

ANSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b\][^\x07]*\x07")


def command_env(cli_env: dict[str, str], database_url: str) -> dict[str, str]:
    """The test's private environment, pointed at this test's database."""
    return {**cli_env, "IMGRUN_DATABASE_URL": database_url}


async def test_json_returns_the_snapshot(
    seeded: Seeded, database_url: str, cli_env: dict[str, str]
) -> None:
    """`imgrun status --json` prints the snapshot as one JSON document."""
    result = await anyio.run_process(
        [*IMGRUN, "status", "--json"], env=command_env(cli_env, database_url), check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    assert [t["name"] for t in data["tasks"]] == [
        "lumina posters",
        "alpha portraits",
        "waiting task",
    ]
    pools = {p["name"]: p for p in data["pools"]}
    assert pools["standard"]["pending"] == 8
    assert pools["standard"]["limit"] == 25
    assert {e["id"] for e in data["executors"] if e["stale"]} >= {"runner-stale"}
    assert data["errors"][0]["error_type"] == "TimeoutError"


async def test_a_runner_is_stale_after_the_configured_stale_after(
    seeded: Seeded, database_url: str, cli_env: dict[str, str]
) -> None:
    """Status judges runners by `[runner] stale_after`, as the fleet does: at 100 s none is."""
    Path(cli_env["IMGRUN_CONFIG"]).write_text("[runner]\nstale_after = 100\n")
    result = await anyio.run_process(
        [*IMGRUN, "status", "--json"], env=command_env(cli_env, database_url), check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    executors = json.loads(result.stdout)["executors"]
    assert "runner-stale" in {e["id"] for e in executors}  # silent 60 s, yet within 100
    assert [e["id"] for e in executors if e["stale"]] == []


def test_status_calls_a_runner_stale_when_the_fleet_calls_it_dead() -> None:
    """The view's default threshold is the runners' own default stale_after."""
    assert RunnerSettings().stale_after == STALE_AFTER


async def test_one_shot_prints_the_view(
    seeded: Seeded, database_url: str, cli_env: dict[str, str]
) -> None:
    """Plain `imgrun status` prints the view once and exits 0."""
    result = await anyio.run_process(
        [*IMGRUN, "status"], env=command_env(cli_env, database_url), check=False
    )
    out = result.stdout.decode()
    assert result.returncode == 0, result.stderr.decode()
    assert "lumina posters" in out
    assert "STALE" in out


async def test_live_and_json_together_is_a_user_error(
    database_url: str, cli_env: dict[str, str]
) -> None:
    """A one-line error and exit 2, never a traceback."""
    result = await anyio.run_process(
        [*IMGRUN, "status", "--live", "--json"],
        env=command_env(cli_env, database_url),
        check=False,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr.decode()


def _read_until(fd: int, seen: bytearray, done: Callable[[str], bool], timeout: float) -> bool:
    """Read the pty into `seen` until `done(plain text)` or EOF or the deadline."""
    deadline = time.monotonic() + timeout
    while not done(ANSI.sub("", seen.decode(errors="replace"))):
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        ready, _, _ = select.select([fd], [], [], min(remaining, 0.2))
        if ready:
            try:
                chunk = os.read(fd, 65536)
            except OSError:  # EIO: the child closed the terminal
                return False
            if not chunk:
                return False
            seen.extend(chunk)
    return True


async def test_live_view_in_a_terminal_exits_cleanly_on_ctrl_c(
    seeded: Seeded, database_url: str, cli_env: dict[str, str]
) -> None:
    """In a real pty: the view appears, refreshes, and SIGINT ends it with status 0."""
    master, slave = os.openpty()
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 60, 140, 0, 0))
    env = {**command_env(cli_env, database_url), "COLUMNS": "140", "LINES": "60"}
    env["TERM"] = "xterm-256color"
    process = subprocess.Popen(
        [*IMGRUN, "status", "--live", "--refresh", "0.2"],
        stdin=slave,
        stdout=slave,
        stderr=slave,
        env=env,
        start_new_session=True,  # Ctrl-C in the test's own terminal must not reach it
    )
    os.close(slave)
    seen = bytearray()
    try:
        # Two frames with the task: the first render, then at least one refresh.
        shown = await anyio.to_thread.run_sync(
            _read_until, master, seen, lambda s: s.count("lumina posters") >= 2, 30.0
        )
        assert shown, ANSI.sub("", seen.decode(errors="replace"))[-2000:]
        process.send_signal(signal.SIGINT)
        await anyio.to_thread.run_sync(_read_until, master, seen, lambda s: False, 15.0)
        code = await anyio.to_thread.run_sync(lambda: process.wait(timeout=15))
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
        os.close(master)
    out = ANSI.sub("", seen.decode(errors="replace"))
    assert code == 0, out[-2000:]
    assert "Traceback" not in out
    assert "KeyboardInterrupt" not in out


async def test_live_loop_survives_a_failed_refresh(
    engine: AsyncEngine, seeded: Seeded, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A refresh that raises is shown in the view; the next one recovers."""
    real = load_status
    calls = 0

    async def flaky(store: PgStore, **kwargs: Any) -> StatusSnapshot:
        nonlocal calls
        calls += 1
        if calls == 2:
            raise ConnectionResetError("database went away")
        return await real(store, **kwargs)

    monkeypatch.setattr(status_module, "load_status", flaky)
    file = StringIO()
    console = Console(file=file, force_terminal=True, width=140, height=80)
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(status_module._live_loop, PgStore(engine), console, 0.01, STALE_AFTER)
            while calls < 4:
                await anyio.sleep(0.01)
            group.cancel_scope.cancel()
    out = ANSI.sub("", file.getvalue())
    assert "refresh failed (retrying): ConnectionResetError: database went away" in out
    # The failed frame keeps the last good snapshot on screen above the error line...
    error_at = out.index("refresh failed")
    failed_frame = out[out.rindex("Ctrl-C to quit", 0, error_at) : error_at]
    assert "lumina posters" in failed_frame
    # ...and a later frame, drawn after the last error line, is a normal one again.
    after = out[out.rindex("refresh failed") + len("refresh failed") :]
    assert "lumina posters" in after and "Ctrl-C to quit" in after


async def test_watch_returns_after_a_final_frame_once_told(
    engine: AsyncEngine, seeded: Seeded
) -> None:
    """`watch(until=event)` (the demo's view) draws one more frame after the event, then returns."""
    file = StringIO()
    console = Console(file=file, force_terminal=True, width=140, height=80)
    done = anyio.Event()
    with anyio.fail_after(20):
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: status_module.watch(PgStore(engine), console, until=done, refresh=60)
            )
            while "lumina posters" not in file.getvalue():
                await anyio.sleep(0.01)
            frames = file.getvalue().count("lumina posters")
            done.set()
    # Returned on its own (a 60 s refresh never came round), after drawing a final frame.
    assert file.getvalue().count("lumina posters") > frames


async def test_json_keys_are_the_documented_ones(
    seeded: Seeded, database_url: str, cli_env: dict[str, str]
) -> None:
    """The documented keys: the rollup changed where rates come from, not the shape."""
    result = await anyio.run_process(
        [*IMGRUN, "status", "--json"], env=command_env(cli_env, database_url), check=False
    )
    assert result.returncode == 0, result.stderr.decode()
    data = json.loads(result.stdout)
    assert set(data) == {
        "at",
        "stale_after",
        "pools",
        "throughput",
        "active_tasks",
        "tasks",
        "recent",
        "errors",
        "executors",
        "providers",
    }
    assert set(data["throughput"]) == {
        "images_per_min_1m",
        "images_per_min_5m",
        "subtasks_per_min_1m",
        "subtasks_per_min_5m",
        "remaining_images",
        "eta_seconds",
    }
    assert set(data["pools"][0]) == {
        "name",
        "limit",
        "max",
        "running",
        "pending",
        "processing",
        "claimable",
        "policy",
        "paused_for",
        "executors",
        "images_per_min",
        "decisions",
        "limit_history",
    }
    assert set(data["tasks"][0]) == {
        "id",
        "name",
        "pool",
        "provider",
        "priority",
        "status",
        "total",
        "completed",
        "failed",
        "canceled",
        "batch_size",
        "total_images",
        "rate_per_min",
        "eta_seconds",
        "created_at",
        "started_at",
        "finished_at",
    }
    live = next(e for e in data["executors"] if e["id"] == "runner-live")
    # The heartbeat's completion rollup is read for the rates, never echoed per executor.
    assert set(live["pools"]["standard"]) == {
        "limit",
        "max",
        "running",
        "pending",
        "policy",
        "paused_for",
        "history",
    }
    assert data["throughput"]["images_per_min_1m"] == 3.0  # from runner-live's rollup
