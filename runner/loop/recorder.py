"""Finished attempts on their way to the database: buffered, flushed in bounded batches.

A finished subtask counts against its pool's claims until its outcome's transaction
commits (see outcomes.py); the fence may drop a stale holder's outcome, whose image files are then
discarded; what a stopping runner cannot record goes to the journal, and the next start
on the same home replays it.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable, Sequence

import anyio

from db.ports import RunnerStore
from db.records import ErrorRecord, Outcome
from runner.loop.journal import Journal
from runner.loop.outcomes import OutcomeBuffer, Release
from runner.loop.pool import Wakeup

log = logging.getLogger(__name__)

# Removes the files of completions the fence dropped (a stale holder's): nobody records them.
Discard = Callable[[Sequence[Outcome]], Awaitable[None]]


class Recorder:
    """The outcome buffer and everything that writes it out."""

    def __init__(
        self,
        store: RunnerStore,
        max_batch: int,
        *,
        discard: Discard | None = None,
        journal: Journal | None = None,
    ) -> None:
        self.store = store
        self.buffer = OutcomeBuffer(max_batch)
        self.discard = discard
        self.journal = journal
        self._wakeup = Wakeup()
        self._lock = anyio.Lock()

    @property
    def busy(self) -> bool:
        """Something is buffered or being written."""
        return bool(self.buffer or self._lock.locked())

    def record(self, outcome: Outcome, release: Release | None = None) -> None:
        """Queue an outcome; `release` frees its slot once it is written."""
        self.buffer.record(outcome, release)
        self._wakeup.notify()

    def record_error(self, error: ErrorRecord) -> None:
        """Queue a failure for aggregation."""
        self.buffer.record_error(error)

    async def loop(self) -> None:
        """Write whatever arrives, promptly."""
        while True:
            await self._wakeup.wait(1.0)
            await self.flush()

    async def flush(self) -> None:
        """Write everything buffered, one bounded batch per transaction."""
        async with self._lock:
            while batch := self.buffer.take():
                dropped: list[Outcome] = []
                try:
                    if batch.entries:
                        stands = set(await self.store.apply_outcomes(batch.outcomes))
                        dropped = [o for o in batch.outcomes if o.subtask_id not in stands]
                    if batch.errors:
                        for kind, message in await self.store.record_errors(batch.errors):
                            log.warning("new error: %s: %s", kind, message)
                except BaseException:
                    # Not written (or not known to be): put it back. Outcomes are fenced, so
                    # one that did commit before the connection broke is a no-op next time.
                    self.buffer.put_back(batch)
                    raise
                batch.release()
                await self._discard(dropped)

    def journal_leftovers(self) -> None:
        """Write the outcomes still buffered to the journal (synchronously: we are exiting)."""
        left = self.buffer.waiting()
        if not left:
            return
        if self.journal is None:
            log.warning(
                "exiting with %d outcomes unrecorded: their leases return them to pending",
                len(left),
            )
            return
        try:
            path = self.journal.write(left)
        except OSError as exc:
            log.error("exiting with %d outcomes unrecorded (journal: %s)", len(left), exc)
            return
        log.warning(
            "exiting with %d outcomes unrecorded: kept in %s for the next start", len(left), path
        )

    async def replay_journals(self) -> None:
        """Record the outcomes earlier runners on this home journaled (fenced: harmless)."""
        if self.journal is None:
            return
        for path in await anyio.to_thread.run_sync(self.journal.pending):
            outcomes = await anyio.to_thread.run_sync(self.journal.load, path)
            if outcomes is None:
                continue
            stood = 0
            for start in range(0, len(outcomes), self.buffer.max_batch):
                chunk = outcomes[start : start + self.buffer.max_batch]
                stands = set(await self.store.apply_outcomes(chunk))
                stood += len(stands)
                await self._discard([o for o in chunk if o.subtask_id not in stands])
            self.journal.remove(path)
            log.info(
                "journal %s replayed: %d outcomes recorded, %d dropped by the fence",
                path.name,
                stood,
                len(outcomes) - stood,
            )

    async def _discard(self, dropped: Sequence[Outcome]) -> None:
        """Log the outcomes the fence dropped and remove the files of dropped completions."""
        if not dropped:
            return
        log.info("%d outcomes dropped: their leases had passed to another attempt", len(dropped))
        if self.discard is not None:
            try:
                await self.discard([o for o in dropped if o.kind == "completed"])
            except OSError as exc:
                # Left behind, they are swept by the subtask's next attempt or a prune.
                log.warning("could not remove a dropped attempt's images: %s", exc)
