"""Stopping while the database hangs: finished work goes to the journal, the next start records it.

The database is hung for real (a trigger sleeps in every transaction that completes a
subtask, as in test_backlog.py); the runners are `imgrun run` processes; the provider is the
sim, whose stats show which attempts reached it.
"""

from __future__ import annotations

import hashlib
import json
import logging
import signal
import stat
from pathlib import Path
from typing import Any

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.loop.journal import Journal
from runner.loop.pool import UNRECORDED_LIMITS
from runner.loop.service import serve
from tests.runner.conftest import (
    assert_counters_consistent,
    make_config,
    process_env,
    runner_command,
    runner_settings,
    sim_stats,
    status_counts,
    submit,
    wait_until,
)
from tests.runner.slowdb import flush_hung, slow_down_flushes, terminate_other_backends
from workers.sim.app import RunningSim

pytestmark = pytest.mark.anyio

LIMIT = 5  # the standard pool, pinned
# What the runner holds once the flush hangs: LIMIT finished and waiting to be recorded, and
# as many more run meanwhile (a pool claims again while its outcomes wait, up to a bound).
HELD = (1 + UNRECORDED_LIMITS) * LIMIT
N = 12  # subtasks: more than HELD


def settings(sim_url: str, grace: float) -> dict[str, Any]:
    """The sim, a pinned pool, and a lease long enough that nothing is reaped in the test."""
    return runner_settings(
        sim_url,
        {
            "runner": {"shutdown_grace": grace, "lease": 120.0, "heartbeat_interval": 0.3},
            "pools": {"standard": {"initial": LIMIT, "max": LIMIT}},
        },
    )


async def test_outcomes_unrecorded_at_shutdown_are_journaled_and_replayed(
    engine: AsyncEngine,
    sim: RunningSim,
    tmp_path: Path,
    database_url: str,
    cli_env: dict[str, str],
) -> None:
    """SIGTERM with the database hung: exit in time, journal; the next start records it all."""
    await submit(engine, n=N)
    await slow_down_flushes(engine, 600)
    grace = 1.0
    env = process_env(cli_env, tmp_path, database_url, settings(sim.url, grace))
    home = Path(cli_env["IMGRUN_HOME"])
    runner = await anyio.open_process(runner_command("--executor-id", "stuck"), env=env)
    try:

        async def pool_done_and_stuck() -> bool:
            return (await sim_stats(sim))["completed"] == HELD and await flush_hung(engine)

        await wait_until(pool_done_and_stuck, timeout=30)
        runner.send_signal(signal.SIGTERM)
        with anyio.fail_after(grace + 10):
            code = await runner.wait()
    finally:
        if runner.returncode is None:
            runner.kill()
            await runner.wait()
    assert code == 0
    assert runner.stderr is not None
    log = (await runner.stderr.receive()).decode()
    assert "for the next start" in log

    (path,) = (home / "journal").iterdir()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    journaled = Journal(home, "stuck", 0).load(path)
    assert journaled is not None and len(journaled) == HELD
    assert {o.kind for o in journaled} == {"completed"}
    # Held under this process's holder: the id and its incarnation.
    assert {o.executor_id.split(":")[0] for o in journaled} == {"stuck"}
    # Nothing was recorded: those rows are still the dead runner's, leased for two minutes.
    assert (await status_counts(engine)).get("processing") == HELD

    # The database recovers; the next runner started on this home replays the journal first.
    await terminate_other_backends(engine)
    async with engine.begin() as connection:
        await connection.execute(text("DROP TRIGGER slow_flush ON subtasks"))
    second = await anyio.run_process(
        runner_command("--executor-id", "next", "--until-idle"), env=env, check=False
    )
    assert second.returncode == 0, second.stderr.decode()[-2000:]
    assert f"replayed: {HELD} outcomes recorded, 0 dropped" in second.stderr.decode()
    assert list((home / "journal").iterdir()) == []

    assert await status_counts(engine) == {"completed": N}
    await assert_counters_consistent(engine)
    async with engine.connect() as connection:
        rows = (
            await connection.execute(text("SELECT id, attempts, result FROM subtasks"))
        ).mappings()
        recorded = {row["id"]: dict(row) for row in rows}
    for outcome in journaled:
        row = recorded[outcome.subtask_id]
        # The very result the first runner produced: attempt 1, its file, its sha256.
        assert (row["attempts"], row["result"]) == (1, outcome.result)
        (image,) = row["result"]["images"]
        assert hashlib.sha256(Path(image["path"]).read_bytes()).hexdigest() == image["sha256"]
    # Not redone: each subtask reached the provider once, with attempt 1.
    by_key = (await sim_stats(sim))["by_key"]
    assert by_key == {f"imgrun-{sub}-1": 1 for sub in recorded}
    assert "stuck" not in json.dumps(by_key)


async def test_a_stale_journal_is_dropped_by_the_fence_and_its_images_removed(
    engine: AsyncEngine,
    sim: RunningSim,
    tmp_path: Path,
    database_url: str,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A journal whose rows were meanwhile redone changes nothing; its attempt's files go."""
    await submit(engine, n=2)
    config, env = make_config(tmp_path, database_url, settings(sim.url, 1.0))
    with anyio.fail_after(60):
        await serve(engine, config, env, until_idle=True)
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT id, task_id, result FROM subtasks"))
        done = {row.id: (row.task_id, row.result) for row in rows}
    # A runner long gone had attempt 1 of the first subtask "completed" differently.
    sub, (task_id, result) = min(done.items())
    orphan = tmp_path / "out" / str(task_id) / f"{sub}-1-0.png"
    assert Path(result["images"][0]["path"]) == orphan  # the recorded file has this name...
    stale_file = tmp_path / "out" / str(task_id) / f"{sub}-9-0.png"  # ...the stale one this
    stale_file.write_bytes(b"late")
    stale = {"images": [{"path": str(stale_file), "sha256": "00"}], "provider_ms": 1.0}
    from db.records import Outcome

    Journal(env.home, "gone", 7).write([Outcome(sub, 9, "completed", "gone", result=stale)])
    (env.home / "journal" / "junk-8.jsonl").write_text("{}\n")
    with caplog.at_level(logging.INFO), anyio.fail_after(60):
        await serve(engine, config, env, until_idle=True)
    assert "replayed: 0 outcomes recorded, 1 dropped" in caplog.text
    assert "junk-8.jsonl skipped" in caplog.text
    async with engine.connect() as connection:
        rows = await connection.execute(text("SELECT id, task_id, result FROM subtasks"))
        assert {row.id: (row.task_id, row.result) for row in rows} == done
    assert not stale_file.exists()
    assert orphan.exists()
    assert sorted(p.name for p in (env.home / "journal").iterdir()) == ["junk-8.jsonl.bad"]


async def test_a_second_signal_exits_at_once_and_still_journals(
    engine: AsyncEngine,
    sim: RunningSim,
    tmp_path: Path,
    database_url: str,
    cli_env: dict[str, str],
) -> None:
    """A second SIGTERM while draining (database hung) exits promptly, the journal written."""
    await submit(engine, n=N)
    await slow_down_flushes(engine, 600)
    env = process_env(cli_env, tmp_path, database_url, settings(sim.url, 60.0))
    home = Path(cli_env["IMGRUN_HOME"])
    runner = await anyio.open_process(runner_command("--executor-id", "twice"), env=env)
    assert runner.stderr is not None
    try:

        async def pool_done_and_stuck() -> bool:
            return (await sim_stats(sim))["completed"] == HELD and await flush_hung(engine)

        await wait_until(pool_done_and_stuck, timeout=30)
        runner.send_signal(signal.SIGTERM)
        seen = b""
        with anyio.fail_after(10):
            while b"stopping: waiting up to" not in seen:
                seen += await runner.stderr.receive()
        runner.send_signal(signal.SIGTERM)
        with anyio.fail_after(5):  # the grace period is 60 s: only the abort is this quick
            code = await runner.wait()
    finally:
        if runner.returncode is None:
            runner.kill()
            await runner.wait()
    assert code == 0
    (path,) = (home / "journal").iterdir()
    journaled = Journal(home, "twice", 0).load(path)
    assert journaled is not None and len(journaled) == HELD
    assert {o.kind for o in journaled} == {"completed"}
    await terminate_other_backends(engine)
