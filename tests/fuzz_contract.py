"""The contract `imgrun submit` keeps for any file, checked in-process (fast enough to fuzz).

Either it exits 0 and the database holds exactly the task it printed, with every subtask, or
it exits 2 with one line on stderr, no traceback, and the database is unchanged. Nothing
else: no other status, no exception escaping `main()`.
"""

from __future__ import annotations

import contextlib
import io
import json
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncpg
from anyio.from_thread import BlockingPortal, start_blocking_portal
from sqlalchemy.engine import make_url

from runner.cli import main
from tests.spec_strategies import SpecCase


@dataclass(frozen=True)
class Outcome:
    """What one `imgrun submit` did."""

    status: int
    stdout: str
    stderr: str
    seconds: float


def submit_in_process(path: Path) -> Outcome:
    """`imgrun submit PATH --json` through `main()`, output captured."""
    out, err = io.StringIO(), io.StringIO()
    started = time.perf_counter()
    previous = signal.getsignal(signal.SIGTERM)  # main() installs its own handler
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            main(["submit", str(path), "--json", "--user", "fuzz"])
    except SystemExit as exc:
        status = exc.code if isinstance(exc.code, int) else 1
    else:  # pragma: no cover - main() always exits
        status = -1
    finally:
        signal.signal(signal.SIGTERM, previous)
    return Outcome(status, out.getvalue(), err.getvalue(), time.perf_counter() - started)


class Database:
    """A connection kept open across examples (on a portal's event loop) for the checks."""

    def __init__(self, portal: BlockingPortal, connection: Any) -> None:
        self._portal = portal
        self._connection = connection

    def counts(self) -> tuple[int, int]:
        """(tasks, subtasks) rows."""
        row = self._portal.call(
            self._connection.fetchrow,
            "SELECT (SELECT count(*) FROM tasks) AS t, (SELECT count(*) FROM subtasks) AS s",
        )
        return int(row["t"]), int(row["s"])

    def task(self, task_id: int) -> tuple[int, list[tuple[int, str, int]]]:
        """A task's total_subtasks and its (ordinal, prompt, seed) rows in order."""
        total = self._portal.call(
            self._connection.fetchval, "SELECT total_subtasks FROM tasks WHERE id = $1", task_id
        )
        rows = self._portal.call(
            self._connection.fetch,
            "SELECT ordinal, prompt, (params->>'seed')::bigint AS seed"
            " FROM subtasks WHERE task_id = $1 ORDER BY ordinal",
            task_id,
        )
        return int(total), [(r["ordinal"], r["prompt"], r["seed"]) for r in rows]


@contextlib.contextmanager
def database(url: str) -> Iterator[Database]:
    """A Database on `url` (SQLAlchemy or plain PostgreSQL URL)."""
    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with start_blocking_portal() as portal:
        connection = portal.call(asyncpg.connect, plain)
        try:
            yield Database(portal, connection)
        finally:
            portal.call(connection.close)


def check(case: SpecCase, outcome: Outcome, db: Database, before: tuple[int, int]) -> str:
    """Assert the contract for one example; returns "submitted" or the refusal's first words."""
    if outcome.status == 2:
        message = outcome.stderr.strip()
        assert message.count("\n") == 0, message[:2_000]
        assert "Traceback" not in message and message.startswith("imgrun: error: "), message
        assert db.counts() == before, "a refused spec wrote rows"
        return _kind(message)
    assert outcome.status == 0, (outcome.status, outcome.stderr[-2_000:])
    printed = json.loads(outcome.stdout)
    total, rows = db.task(printed["task_id"])
    assert total == printed["total_subtasks"] == len(rows)
    assert [r[0] for r in rows] == list(range(total))
    assert db.counts() == (before[0] + 1, before[1] + total)
    if case.rows is not None:
        assert [(prompt, seed) for _, prompt, seed in rows] == list(case.rows)
    return "submitted"


def _kind(message: str) -> str:
    """A short category for a refusal, for the bench's table: the problem, without location."""
    # Messages are "<where>: <problem>", where may be a path, "line N" or a field name.
    problem = message.removeprefix("imgrun: error: ").rsplit(": ", 1)[-1]
    for cut in (" (", " '", " {", " !!", " *", ","):
        problem = problem.split(cut, 1)[0]
    words = [w for w in problem.split() if not any(c.isdigit() for c in w)]
    return " ".join(words[:5])
