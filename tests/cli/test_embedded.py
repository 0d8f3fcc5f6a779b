"""The embedded PostgreSQL default: shared by concurrent imgrun processes, stopped by the last."""

from __future__ import annotations

import json
import signal
from pathlib import Path

import anyio
import asyncpg
import psutil
import pytest
from sqlalchemy.engine import make_url

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


async def can_connect(url: str) -> bool:
    """Whether asyncpg gets a session on `url` (within a few seconds)."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        connection = await asyncpg.connect(plain, timeout=5)
    except (OSError, asyncpg.PostgresError):
        return False
    await connection.close()
    return True


async def read_line(stream: anyio.abc.ByteReceiveStream) -> str:
    """The next line a process writes (chunks may split or join lines)."""
    data = b""
    while not data.endswith(b"\n"):
        data += await stream.receive(1)
    return data.decode().strip()


async def test_db_url_warns_that_its_url_dies_with_it(cli_env: dict[str, str]) -> None:
    """Alone, `db url` prints the URL and says on stderr that it stops working at exit."""
    done = await anyio.run_process([*IMGRUN, "db", "url"], env=cli_env)
    assert done.stdout.decode().startswith("postgresql+asyncpg://postgres@/imgrun?host=/")
    assert "warning: no other imgrun process holds the embedded server" in done.stderr.decode()
    assert "imgrun db url --hold" in done.stderr.decode()
    assert server_pid(Path(cli_env["IMGRUN_HOME"])) is None
    assert not await can_connect(done.stdout.decode().strip())


async def test_db_url_hold_keeps_the_url_working_until_a_signal(
    cli_env: dict[str, str], imgrun_base: Path
) -> None:
    """With a long IMGRUN_HOME too: the printed URL connects while held; SIGTERM ends it, exit 0."""
    home = imgrun_base / ("deep-" * 24) / "home"
    env = {**cli_env, "IMGRUN_HOME": str(home)}
    with anyio.fail_after(60):
        async with await anyio.open_process([*IMGRUN, "db", "url", "--hold"], env=env) as holder:
            assert holder.stdout is not None
            url = await read_line(holder.stdout)
            assert url.startswith("postgresql+asyncpg://postgres@/imgrun?host=/proc/")
            assert await can_connect(url)
            holder.send_signal(signal.SIGTERM)
            assert await holder.wait() == 0
    assert server_pid(home) is None
    assert not await can_connect(url)


async def test_db_shell_holds_the_server_while_psql_is_open(cli_env: dict[str, str]) -> None:
    """psql runs on the imgrun database; another process coming and going does not stop it."""
    home = Path(cli_env["IMGRUN_HOME"])
    with anyio.fail_after(60):
        shell = await anyio.open_process([*IMGRUN, "db", "shell", "-At"], env=cli_env)
        async with shell:
            assert shell.stdin is not None and shell.stdout is not None
            await shell.stdin.send(b"SELECT current_database() || ' as ' || current_user;\n")
            assert await read_line(shell.stdout) == "imgrun as postgres"
            done = await anyio.run_process([*IMGRUN, "db", "url"], env=cli_env)
            assert "warning" not in done.stderr.decode()  # the shell holds the server
            await shell.stdin.send(b"SELECT 'still ' || 'here';\n")
            assert await read_line(shell.stdout) == "still here"
            await shell.stdin.aclose()
            assert await shell.wait() == 0
    assert server_pid(home) is None


async def test_db_shell_on_a_configured_url(cli_env: dict[str, str], database_url: str) -> None:
    """With IMGRUN_DATABASE_URL, psql goes there; psql's own arguments pass through."""
    env = {**cli_env, "IMGRUN_DATABASE_URL": database_url}
    done = await anyio.run_process(
        [*IMGRUN, "db", "shell", "-At", "-c", "SELECT current_database()"], env=env
    )
    assert done.stdout.decode().strip() == make_url(database_url).database
    failed = await anyio.run_process(
        [*IMGRUN, "db", "shell", "-c", "SELEC 1"], env=env, check=False
    )
    assert failed.returncode != 0 and "syntax error" in failed.stderr.decode()
