"""Pure rules of the embedded server: where its socket is, who may connect, how clients reach it."""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import quote

from sqlalchemy.engine import make_url

SOCKET_NAME = ".s.PGSQL.5432"
DATABASE_USER = "postgres"  # the cluster's superuser, reached only through the ident map
IDENT_MAP = "imgrun"
# sun_path is 108 bytes on Linux and 104 on the BSDs and macOS, the terminating NUL included.
MAX_SOCKET_PATH = 107 if sys.platform.startswith("linux") else 103

# What the postmaster is started with. No TCP at all; the socket goes in the data directory
# (0700, owned by the server's user), named relative to it: the postmaster runs from there,
# so however long IMGRUN_HOME is the path it binds stays short. The socket itself is 0700 too.
# autovacuum_naptime: a queue table churns; check every 2 s, not every minute (see 0008).
SERVER_OPTIONS = "-h '' -k . -c unix_socket_permissions=0700 -c autovacuum_naptime=2"
SOCKET_DIR_MARK = "."  # what postmaster.pid then records as the socket directory


def socket_path_fits(directory: Path, limit: int = MAX_SOCKET_PATH) -> bool:
    """Whether a client can connect to the socket in `directory` by its absolute path."""
    return len(os.fsencode(str(directory / SOCKET_NAME))) <= limit


def client_host(socket_dir: Path, *, pid: int, dir_fd: int | None) -> str:
    """The libpq/asyncpg `host` for the socket: its directory, or a short alias when too long.

    /proc/PID/fd/FD names the directory through a descriptor this process holds open, so it
    works for this process, its children and other processes of the same OS user while this
    one lives (and for nobody else: /proc/PID/fd is private to the process's user).
    """
    if socket_path_fits(socket_dir) or dir_fd is None:
        return str(socket_dir)
    return f"/proc/{pid}/fd/{dir_fd}"


def database_url(host: str, database: str) -> str:
    """The asyncpg URL of `database` on the embedded server (peer auth: no password)."""
    # Written out rather than rendered by SQLAlchemy, which would escape every "/" of the path.
    return f"postgresql+asyncpg://{DATABASE_USER}@/{quote(database)}?host={quote(host, safe='/')}"


def hba_conf() -> str:
    """pg_hba.conf: the unix socket only, peer authentication through the ident map."""
    return (
        "# Written by imgrun at every start. Only the OS users in pg_ident.conf may connect,\n"
        "# as the database superuser; there is no TCP listener and no password.\n"
        f"local all all peer map={IDENT_MAP}\n"
    )


def ident_conf(os_users: list[str]) -> str:
    """pg_ident.conf: each of `os_users` may connect as the database superuser."""
    lines = [f'{IDENT_MAP} "{user}" {DATABASE_USER}\n' for user in sorted(set(os_users))]
    return "# Written by imgrun at every start: OS user -> database user.\n" + "".join(lines)


@dataclass(frozen=True)
class PidFile:
    """The fields of postmaster.pid that tell whether a running server is set up our way."""

    pid: int
    socket_dir: str
    listen: str
    status: str

    @property
    def ours(self) -> bool:
        """Started with SERVER_OPTIONS: socket in the data dir, no TCP listener."""
        return self.socket_dir == SOCKET_DIR_MARK and self.listen == ""


def parse_pidfile(text: str) -> PidFile | None:
    """postmaster.pid's lines (pid, datadir, start, port, socket dir, listen, shmem, status)."""
    lines = text.splitlines()
    if len(lines) < 6 or not lines[0].strip().isdigit():
        return None  # being written, or not a pid file at all
    status = lines[7].strip() if len(lines) > 7 else ""
    return PidFile(int(lines[0]), lines[4].strip(), lines[5].strip(), status)


def libpq_env(url: str) -> dict[str, str]:
    """PG* variables for psql from a URL: the password travels in the environment, not argv."""
    parsed = make_url(url)
    query = {k: v if isinstance(v, str) else v[-1] for k, v in parsed.query.items()}
    values = {
        "PGHOST": query.get("host") or parsed.host,
        "PGPORT": str(parsed.port) if parsed.port else query.get("port"),
        "PGUSER": parsed.username or query.get("user"),
        "PGPASSWORD": parsed.password or query.get("password"),
        "PGDATABASE": parsed.database or query.get("database"),
        "PGSSLMODE": query.get("sslmode") or query.get("ssl"),
    }
    return {key: str(value) for key, value in values.items() if value}
