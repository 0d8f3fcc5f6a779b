"""One status read: the status queries' rows, projected into the typed snapshot."""

from __future__ import annotations

from datetime import datetime

from db.store import PgStore
from runner.view.model import StatusSnapshot
from runner.view.projection import STALE_AFTER, project


async def load_status(
    store: PgStore,
    *,
    now: datetime | None = None,
    stale_after: float = STALE_AFTER,
    task_limit: int = 20,
    recent_limit: int = 5,
    error_limit: int = 5,
) -> StatusSnapshot:
    """The status snapshot as of `now` (default: the database's clock), from one transaction."""
    rows = await store.load_status_rows(
        now=now, task_limit=task_limit, recent_limit=recent_limit, error_limit=error_limit
    )
    return project(rows, stale_after=stale_after)
