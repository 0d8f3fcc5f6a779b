"""`imgrun db shell` and `db url --hold`: hold the database while an operator looks inside."""

from __future__ import annotations

import contextlib
import signal
import subprocess
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from db.pgcluster import psql_command

PSQL_STOP_WAIT = 5.0  # seconds psql gets to exit after SIGTERM before it is killed


@contextlib.contextmanager
def stop_signals_held() -> Iterator[Callable[[], object]]:
    """From here on SIGINT/SIGTERM wait in line; the yielded call returns when one arrives.

    Blocked before the caller prints anything, so a signal sent the moment the output
    appears is waited for, not raised mid-print (either is the normal way to end a hold).
    """
    stops = {signal.SIGINT, signal.SIGTERM}
    previous = signal.pthread_sigmask(signal.SIG_BLOCK, stops)
    try:
        yield lambda: signal.sigwait(stops)
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, previous)


@contextlib.contextmanager
def _sigint_to_child() -> Iterator[None]:
    # Ctrl-C reaches psql (same terminal process group) and cancels its query; here it
    # must do nothing, or the server would be released under an open shell. A handler,
    # not SIG_IGN: exec resets handlers, so psql still gets the default behaviour.
    def ignore(signum: int, frame: Any) -> None:
        return None

    previous = signal.signal(signal.SIGINT, ignore)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)


def run_psql(environ: Mapping[str, str], connection: Mapping[str, str], args: Sequence[str]) -> int:
    """Run psql with the user's `environ` and `connection` (PG* variables); its exit status."""
    # Inherited PG* variables (a PGPASSWORD for another server) must not mix with ours.
    env = {k: v for k, v in environ.items() if not k.startswith("PG")} | dict(connection)
    with _sigint_to_child():
        process = subprocess.Popen([psql_command(), *args], env=env)
        try:
            return process.wait()
        finally:
            # SIGTERM to us (SystemExit) while psql runs: end psql before the hold is dropped.
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(PSQL_STOP_WAIT)
                except subprocess.TimeoutExpired:
                    process.kill()
                    process.wait()
