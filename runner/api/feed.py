"""Task progress and task finished events from successive task snapshots (pure).

/v1/events polls the tasks table; this turns each snapshot into the changes since the last
one, so a stream sees a task's progress in order and its finished event last.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

FINAL = frozenset({"completed", "failed", "partial", "canceled"})
PROGRESS_KEYS = (
    "name",
    "status",
    "total_subtasks",
    "completed_subtasks",
    "failed_subtasks",
    "canceled_subtasks",
    "total_images",
)


@dataclass(frozen=True)
class FeedEvent:
    """One server-sent event."""

    event: str  # task.progress | task.finished
    task_id: int
    data: dict[str, Any]


def progress_data(row: Mapping[str, Any]) -> dict[str, Any]:
    """The data of a task.progress event."""
    return {"task_id": int(row["id"]), **{key: row[key] for key in PROGRESS_KEYS}}


def finished_data(row: Mapping[str, Any]) -> dict[str, Any]:
    """The data of task.finished: the same fields as the webhook's (see migration 0003)."""
    start = row["started_at"] or row["created_at"]
    duration = (row["finished_at"] - start).total_seconds() if row["finished_at"] else None
    return {
        "task_id": int(row["id"]),
        "name": row["name"],
        "user_id": row["user_id"],
        "pool": row["pool"],
        "provider": row["provider"],
        "status": row["status"],
        "total_subtasks": row["total_subtasks"],
        "completed_subtasks": row["completed_subtasks"],
        "failed_subtasks": row["failed_subtasks"],
        "canceled_subtasks": row["canceled_subtasks"],
        "total_images": row["total_images"],
        "images": row["completed_subtasks"] * row["batch_size"],
        "created_at": row["created_at"],
        "started_at": row["started_at"],
        "finished_at": row["finished_at"],
        "duration_seconds": None if duration is None else round(duration, 3),
    }


def _state(row: Mapping[str, Any]) -> tuple[Any, ...]:
    return tuple(row[key] for key in PROGRESS_KEYS)


class TaskFeed:
    """Remembers each task's last state; `update` returns what changed, in order."""

    def __init__(self) -> None:
        self._seen: dict[int, tuple[Any, ...]] = {}
        self._primed = False

    def update(self, rows: Iterable[Mapping[str, Any]]) -> list[FeedEvent]:
        """Events for the changes since the previous snapshot (none for the first one)."""
        events: list[FeedEvent] = []
        seen: dict[int, tuple[Any, ...]] = {}
        for row in sorted(rows, key=lambda r: int(r["id"])):
            task_id = int(row["id"])
            state = seen[task_id] = _state(row)
            before = self._seen.get(task_id)
            if not self._primed or before == state:
                continue
            was_final = before is not None and before[1] in FINAL
            if row["status"] in FINAL and was_final:
                continue  # stragglers of a canceled task: it has already finished
            events.append(FeedEvent("task.progress", task_id, progress_data(row)))
            if row["status"] in FINAL:
                events.append(FeedEvent("task.finished", task_id, finished_data(row)))
        # Tasks that left the window (finished long ago) are forgotten: the memory stays small.
        self._seen = seen
        self._primed = True
        return events


def sse_frame(event: FeedEvent, seq: int) -> bytes:
    """The event in the text/event-stream format."""
    data = json.dumps(event.data, default=_json_default, sort_keys=True)
    return f"id: {seq}\nevent: {event.event}\ndata: {data}\n\n".encode()


def _json_default(value: Any) -> Any:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")
