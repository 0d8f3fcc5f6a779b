"""What the chaos soak asserts at the end, read from the database, the files and the sim."""

from __future__ import annotations

import hashlib
import re
from collections import Counter, defaultdict
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import text

from db.engine import open_engine

KEY = re.compile(r"imgrun-(\d+)-(\d+)")

COUNTERS_DISAGREE = text(
    "SELECT t.id FROM tasks t JOIN subtasks s ON s.task_id = t.id GROUP BY t.id"
    " HAVING max(t.completed_subtasks) <> count(*) FILTER (WHERE s.status = 'completed')"
    " OR max(t.failed_subtasks) <> count(*) FILTER (WHERE s.status = 'failed')"
    " OR max(t.canceled_subtasks) <> count(*) FILTER (WHERE s.status = 'canceled')"
)


@dataclass
class Findings:
    """The soak's verdict: counts, and every violation found (all must be empty)."""

    by_status: dict[str, int] = field(default_factory=dict)
    images_checked: int = 0
    paid_twice_same_key: int = 0  # one attempt's key generated twice (a lost answer, re-sent)
    paid_twice_after_kill: int = 0  # another attempt generated after its runner was stopped
    unfinished: list[int] = field(default_factory=list)
    unexplained_failures: list[int] = field(default_factory=list)
    counters_disagree: list[int] = field(default_factory=list)
    bad_checksums: list[str] = field(default_factory=list)
    paid_twice_unexplained: list[int] = field(default_factory=list)
    phantom_attempts: list[str] = field(default_factory=list)
    completed_without_generation: list[int] = field(default_factory=list)

    def violations(self) -> dict[str, list[Any]]:
        """Non-empty lists of problems, by name."""
        return {k: v for k, v in asdict(self).items() if isinstance(v, list) and v}


async def verify(url: str, stats: dict[str, Any], interrupted: set[int]) -> Findings:
    """Check every promise against the database, the image files and the sim's counts."""
    found = Findings()
    async with open_engine(url, upgrade=False) as engine, engine.connect() as connection:
        query = text("SELECT id, status, attempts, error, result FROM subtasks")
        rows = (await connection.execute(query)).mappings()
        subtasks = {row["id"]: dict(row) for row in rows}
        found.counters_disagree = [r.id for r in await connection.execute(COUNTERS_DISAGREE)]
    found.by_status = dict(Counter(str(s["status"]) for s in subtasks.values()))
    for subtask_id, row in subtasks.items():
        if row["status"] not in ("completed", "failed"):
            found.unfinished.append(subtask_id)
        elif row["status"] == "failed" and not (row["error"] or "").strip():
            found.unexplained_failures.append(subtask_id)
        if row["status"] == "completed":
            check_files(row["result"] or {}, found)
    check_generations(subtasks, stats, interrupted, found)
    return found


def check_files(result: dict[str, Any], found: Findings) -> None:
    """Every image the row names exists and hashes to the recorded sha256."""
    for image in result.get("images") or ():
        found.images_checked += 1
        path = Path(image["path"])
        try:
            digest = hashlib.sha256(path.read_bytes()).hexdigest()
        except OSError:
            digest = "missing"
        if digest != image.get("sha256"):
            found.bad_checksums.append(path.name)


def check_generations(
    subtasks: dict[int, dict[str, Any]],
    stats: dict[str, Any],
    interrupted: set[int],
    found: Findings,
) -> None:
    """No attempt the database does not know; a second paid attempt only after a kill."""
    generated: dict[int, Counter[int]] = defaultdict(Counter)
    for key, count in stats.get("generated_by_key", {}).items():
        if match := KEY.fullmatch(key):
            generated[int(match[1])][int(match[2])] += int(count)
    for key in stats.get("by_key", {}):
        match = KEY.fullmatch(key)
        row = subtasks.get(int(match[1])) if match else None
        if match is None or row is None or int(match[2]) > row["attempts"]:
            found.phantom_attempts.append(key)
    for subtask_id, row in subtasks.items():
        per_attempt = generated.get(subtask_id, Counter())
        if row["status"] == "completed" and not per_attempt:
            found.completed_without_generation.append(subtask_id)
        found.paid_twice_same_key += sum(1 for n in per_attempt.values() if n > 1)
        if len(per_attempt) > 1:
            if subtask_id in interrupted:
                found.paid_twice_after_kill += 1
            else:
                found.paid_twice_unexplained.append(subtask_id)
