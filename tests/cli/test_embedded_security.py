"""The embedded server is locked down: no other local user gets in, whatever IMGRUN_HOME is."""

from __future__ import annotations

import os
import pwd
import shutil
import stat
import subprocess
from collections.abc import Iterator
from pathlib import Path

import psutil
import pytest

from db.embedded import EmbeddedPostgres
from db.pgcluster import psql_command
from db.pgconf import socket_path_fits

# Long enough that <home>/pgdata/.s.PGSQL.5432 exceeds the 107 bytes a socket path may have.
LONG = "deep-" * 24
MARK = "ok-from-the-inside"


def other_user() -> list[str]:
    """A command prefix that runs as `nobody`, or skip when this machine cannot do that."""
    if os.geteuid() != 0:
        pytest.skip("acting as another local user needs root")
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        pytest.skip("setpriv (util-linux) is not installed")
    try:
        nobody = pwd.getpwnam("nobody")
    except KeyError:
        pytest.skip("there is no `nobody` user")
    return [setpriv, f"--reuid={nobody.pw_uid}", f"--regid={nobody.pw_gid}", "--clear-groups"]


def psql(
    host: str, *, prefix: list[str] | None = None, sql: str = f"SELECT '{MARK}'"
) -> subprocess.CompletedProcess[str]:
    """psql as the database superuser on `host` (a socket directory) running `sql`; never hangs."""
    command = [*(prefix or []), psql_command(), "-X", "-At", "-h", host, "-U", "postgres"]
    command += ["-d", "postgres", "-c", sql]
    env = {"PATH": "/usr/bin:/bin", "PGCONNECT_TIMEOUT": "5"}
    return subprocess.run(command, capture_output=True, text=True, timeout=30, env=env, check=False)


def postmaster(home: Path) -> psutil.Process:
    """The server's main process, from its pid file."""
    return psutil.Process(int((home / "pgdata" / "postmaster.pid").read_text().split()[0]))


def listening_sockets(process: psutil.Process) -> list[Path]:
    """Every unix socket the postmaster listens on, as an absolute path."""
    paths = [Path(c.laddr) for c in process.net_connections(kind="unix") if c.laddr]
    return [p if p.is_absolute() else Path(process.cwd()) / p for p in paths]


@pytest.fixture
def long_home(imgrun_base: Path) -> Iterator[tuple[Path, str]]:
    """A running embedded server under a long IMGRUN_HOME: (home, its URL's socket host)."""
    home = imgrun_base / LONG / "home"
    server = EmbeddedPostgres(home)
    url = server.start()
    try:
        yield home, url.split("?host=", 1)[1]
    finally:
        server.release()


def test_another_user_cannot_connect_with_a_long_home(
    long_home: tuple[Path, str], imgrun_base: Path
) -> None:
    """Socket in a 0700 folder under the home, 0700 itself, no TCP; `nobody` fails every route."""
    nobody = other_user()
    home, host = long_home
    server = postmaster(home)
    sockets = listening_sockets(server)
    assert sockets, "the server listens on no unix socket"
    # An attacker's short name for the folder (a long path cannot be connected to directly).
    attacker = imgrun_base / "attacker"  # a folder `nobody` can reach
    attacker.mkdir()
    (attacker / "s").symlink_to(sockets[0].parent)
    routes = {host, str(attacker / "s"), *(str(p.parent) for p in sockets)}
    # Controls: psql runs as nobody, and root gets in through the short routes, so each
    # refusal below is the lock-down at work, not a broken command or a dead route.
    version = [*nobody, psql_command(), "--version"]
    assert subprocess.run(version, capture_output=True, check=False).returncode == 0
    for route in (host, str(attacker / "s")):
        assert socket_path_fits(Path(route)) and psql(route).stdout.strip() == MARK, route
    for route in sorted(routes):
        refused = psql(route, prefix=nobody)
        assert refused.returncode != 0 and MARK not in refused.stdout, f"nobody got in: {route}"
    assert server.net_connections(kind="inet") == [], "the server listens on TCP"
    for path in sockets:
        assert path.resolve().is_relative_to(home.resolve()), f"socket outside the home: {path}"
        folder = path.parent.stat()
        assert stat.S_IMODE(folder.st_mode) == 0o700 and folder.st_uid == server.uids().real
        assert stat.S_IMODE(path.stat().st_mode) == 0o700


def test_peer_auth_refuses_another_user_even_through_an_open_socket(
    long_home: tuple[Path, str], imgrun_base: Path
) -> None:
    """With the folder and socket opened up by mistake, authentication still keeps `nobody` out."""
    nobody = other_user()
    home, host = long_home
    pgdata = home / "pgdata"
    socket_path = pgdata / ".s.PGSQL.5432"
    (imgrun_base / "s").symlink_to(pgdata)
    rules = psql(host, sql="SELECT DISTINCT type || ' ' || auth_method FROM pg_hba_file_rules")
    assert rules.stdout.split() == ["local", "peer"]  # one rule kind only: socket + peer
    pgdata.chmod(0o711)
    socket_path.chmod(0o777)
    try:
        refused = psql(str(imgrun_base / "s"), prefix=nobody)
    finally:
        pgdata.chmod(0o700)
        socket_path.chmod(0o700)
    assert refused.returncode != 0 and MARK not in refused.stdout
    assert 'Peer authentication failed for user "postgres"' in refused.stderr


def test_server_runs_as_a_dedicated_account_without_our_environment(
    imgrun_base: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """As root: a system account (not root, not nobody); never: this process's variables."""
    monkeypatch.setenv("IMGRUN_SENTINEL_API_KEY", "sk-must-not-leak")
    server = EmbeddedPostgres(imgrun_base / "home")
    server.start()
    try:
        process = postmaster(imgrun_base / "home")
        if os.geteuid() == 0:
            assert process.username() == "imgrun-pg"
        else:
            assert process.uids().real == os.getuid()
        assert "IMGRUN_SENTINEL_API_KEY" not in process.environ()
    finally:
        server.release()


def test_an_older_trust_cluster_is_locked_down_at_next_start(imgrun_base: Path) -> None:
    """A data dir left with `trust` (older imgrun) gets peer auth back when it is started."""
    server = EmbeddedPostgres(imgrun_base / "home")
    server.start()
    server.release()
    hba = imgrun_base / "home" / "pgdata" / "pg_hba.conf"
    hba.write_text("local all all trust\nhost all all 127.0.0.1/32 trust\n")
    url = server.start()
    try:
        assert "trust" not in hba.read_text() and "peer map=imgrun" in hba.read_text()
        assert psql(url.split("?host=", 1)[1]).stdout.strip() == MARK
    finally:
        server.release()
