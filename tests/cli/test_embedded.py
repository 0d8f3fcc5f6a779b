"""The embedded PostgreSQL default: shared by concurrent imgrun processes, stopped by the last."""

from __future__ import annotations

import json
from pathlib import Path

import anyio
import psutil
import pytest

from tests.conftest import IMGRUN

pytestmark = pytest.mark.anyio

SPEC = "name: shared {n}\nprompts: ['a {{thing}}']\nvariables: {{thing: [x, y, z]}}\n"


def server_pid(home: Path) -> int | None:
    """The postmaster's pid if the server under `home` is running."""
    pidfile = home / "pgdata" / "postmaster.pid"
    if not pidfile.exists():
        return None
    pid = int(pidfile.read_text().split()[0])
    return pid if psutil.pid_exists(pid) else None


async def test_concurrent_processes_share_one_server_and_leave_none(
    cli_env: dict[str, str], tmp_path: Path
) -> None:
    """Four submits at once on a fresh home: one server, four tasks, stopped at the end."""
    home = Path(cli_env["IMGRUN_HOME"])
    specs = []
    for n in range(4):
        spec = tmp_path / f"s{n}.yaml"
        spec.write_text(SPEC.format(n=n))
        specs.append(spec)
    results: list[anyio.abc.Process | int] = []

    async def submit(spec: Path) -> None:
        done = await anyio.run_process([*IMGRUN, "submit", str(spec)], env=cli_env, check=False)
        assert done.returncode == 0, done.stderr.decode()
        results.append(done.returncode)

    async with anyio.create_task_group() as group:
        for spec in specs:
            group.start_soon(submit, spec)
    assert results == [0, 0, 0, 0]
    done = await anyio.run_process([*IMGRUN, "tasks", "--json"], env=cli_env)
    names = sorted(t["name"] for t in json.loads(done.stdout))
    assert names == [f"shared {n}" for n in range(4)]
    assert {t["total_subtasks"] for t in json.loads(done.stdout)} == {3}
    assert server_pid(home) is None, "a clean exit must not leave the embedded server running"


async def test_server_held_by_one_process_survives_anothers_exit(cli_env: dict[str, str]) -> None:
    """`db url` from a second process while the first holds the server does not stop it."""
    from db.embedded import EmbeddedPostgres

    home = Path(cli_env["IMGRUN_HOME"])
    holder = EmbeddedPostgres(home)
    url = holder.start()
    try:
        pid = server_pid(home)
        assert pid is not None
        done = await anyio.run_process([*IMGRUN, "db", "url"], env=cli_env)
        assert done.stdout.decode().strip() == url
        assert server_pid(home) == pid
    finally:
        holder.release()
    assert server_pid(home) is None
