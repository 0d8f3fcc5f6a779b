"""Retention: prune finished tasks, old error aggregates and settled alert events, in batches.

Shared by `imgrun prune` and the runners' periodic duty. Each step is one short transaction
(db.retention_queries); image files go only after the rows naming them are gone, so a crash
leaves at worst an orphan file, never a row pointing at a deleted image.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from pathlib import Path

import anyio.to_thread

from db.ports import RetentionStore
from workers.image_cleanup import remove_images

log = logging.getLogger(__name__)

TASK_PAGE = 100  # finished tasks taken per page; their subtasks go `batch` at a time
# Any constant: the same in every imgrun process, so one runner at a time prunes.
RETENTION_LOCK = 7_305_100_002


@dataclass
class PruneReport:
    """What a prune removed (or, in a dry run, would remove)."""

    dry_run: bool
    older_than: float
    tasks: int = 0
    subtasks: int = 0
    error_logs: int = 0
    outbox: int = 0
    images: int = 0
    images_missing: int = 0
    images_refused: int = 0
    transactions: int = 0

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready data."""
        return asdict(self)


async def prune(
    store: RetentionStore,
    older_than: float,
    *,
    images_root: Path | None = None,
    batch: int = 1_000,
    dry_run: bool = False,
) -> PruneReport:
    """Remove what finished more than `older_than` seconds ago; images only with a root."""
    report = PruneReport(dry_run, older_than)
    if dry_run:
        counts = await store.count_old(older_than)
        report.tasks, report.subtasks = counts.tasks, counts.subtasks
        report.error_logs, report.outbox = counts.error_logs, counts.outbox
        report.images = counts.images if images_root is not None else 0
        return report
    await _prune_tasks(store, report, images_root, batch)
    report.error_logs = await _drain(store.prune_error_logs, report, batch)
    report.outbox = await _drain(store.prune_outbox, report, batch)
    return report


async def _prune_tasks(
    store: RetentionStore, report: PruneReport, images_root: Path | None, batch: int
) -> None:
    after = 0
    while page := await store.old_task_ids(report.older_than, after, TASK_PAGE):
        after = page[-1]
        while True:
            done = await store.prune_subtasks(page, report.older_than, batch)
            report.transactions += 1
            report.subtasks += done.subtasks
            report.tasks += done.tasks
            if images_root is not None and done.image_paths:
                await _remove_files(images_root, done.image_paths, report)
            if done.subtasks < batch:
                break


async def _remove_files(root: Path, paths: tuple[str, ...], report: PruneReport) -> None:
    cleanup = await anyio.to_thread.run_sync(remove_images, root, paths)
    report.images += cleanup.removed
    report.images_missing += cleanup.missing
    report.images_refused += cleanup.refused
    if cleanup.refused:
        log.warning("prune: left %d image path(s) outside %s untouched", cleanup.refused, root)


async def _drain(
    step: Callable[[float, int], Awaitable[int]], report: PruneReport, batch: int
) -> int:
    """Repeat a batched delete until a batch comes back short."""
    total = 0
    while True:
        deleted = await step(report.older_than, batch)
        report.transactions += 1
        total += deleted
        if deleted < batch:
            return total
