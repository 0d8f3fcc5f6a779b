"""Pure rules of the embedded server: socket paths, short alias, auth files, pid file, psql env."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.pgconf import (
    SOCKET_NAME,
    client_host,
    database_url,
    hba_conf,
    ident_conf,
    libpq_env,
    parse_pidfile,
    socket_path_fits,
)


def folder_of_length(n: int) -> Path:
    """A folder whose socket path is exactly n bytes long."""
    return Path("/" + "d" * (n - len(SOCKET_NAME) - 2))


def test_socket_path_limit_is_exact() -> None:
    """107 bytes fit (108 with the NUL), 108 do not; bytes, not characters, are counted."""
    assert socket_path_fits(folder_of_length(107), limit=107)
    assert not socket_path_fits(folder_of_length(108), limit=107)
    assert not socket_path_fits(Path("/" + "é" * 50), limit=107)  # 100 bytes + the name


def test_client_host_uses_the_path_when_it_fits_else_the_descriptor() -> None:
    """A long folder is named through /proc/PID/fd/FD; a short one by its own path."""
    assert client_host(Path("/srv/imgrun/pgdata"), pid=42, dir_fd=7) == "/srv/imgrun/pgdata"
    assert client_host(folder_of_length(200), pid=42, dir_fd=7) == "/proc/42/fd/7"


def test_database_url_is_readable_and_escaped() -> None:
    """No password (peer auth); the folder's slashes stay, odd characters are escaped."""
    assert database_url("/a b/pgdata", "imgrun") == (
        "postgresql+asyncpg://postgres@/imgrun?host=/a%20b/pgdata"
    )


def test_auth_files_allow_only_the_named_os_users_by_peer() -> None:
    """One socket rule (peer, mapped); each OS user quoted once in the map."""
    rules = [line for line in hba_conf().splitlines() if line and not line.startswith("#")]
    assert rules == ["local all all peer map=imgrun"]
    idents = [line for line in ident_conf(["root", "ana", "root"]).splitlines() if line[:1] != "#"]
    assert idents == ['imgrun "ana" postgres', 'imgrun "root" postgres']


@pytest.mark.parametrize(
    ("text", "ours", "pid"),
    [
        ("123\n/d\n1700000000\n5432\n.\n\n  1 2\nready   \n", True, 123),
        ("99\n/d\n1700000000\n5432\n/tmp/ab12\n\n  1 2\nready   \n", False, 99),
        ("99\n/d\n1700000000\n5432\n.\nlocalhost\n  1 2\nready   \n", False, 99),
    ],
)
def test_pidfile_tells_our_server_from_an_older_one(text: str, ours: bool, pid: int) -> None:
    """Ours: socket dir "." and no TCP listener; anything else gets restarted."""
    parsed = parse_pidfile(text)
    assert parsed is not None and (parsed.pid, parsed.ours, parsed.status) == (pid, ours, "ready")


@pytest.mark.parametrize("text", ["", "12\n", "not-a-pid\n/d\n1\n5432\n.\n\n"])
def test_partial_or_foreign_pidfile_is_none(text: str) -> None:
    """A pid file being written (or garbage) is not a running server."""
    assert parse_pidfile(text) is None


def test_libpq_env_carries_the_password_outside_argv() -> None:
    """psql gets host, port, user, password, database and ssl mode as PG* variables."""
    env = libpq_env("postgresql+asyncpg://ana:s%40cret@db.example:6432/imgrun?ssl=require")
    assert env == {
        "PGHOST": "db.example",
        "PGPORT": "6432",
        "PGUSER": "ana",
        "PGPASSWORD": "s@cret",
        "PGDATABASE": "imgrun",
        "PGSSLMODE": "require",
    }
    socket_env = libpq_env("postgresql+asyncpg://postgres@/imgrun?host=/proc/1/fd/3")
    assert socket_env == {"PGHOST": "/proc/1/fd/3", "PGUSER": "postgres", "PGDATABASE": "imgrun"}
