"""The delivery loop: claim due outbox events (SKIP LOCKED), POST them signed, retry with backoff.

At least once: an event is leased, posted to every subscribed hook that does not have it
yet, and only then recorded; a process that dies mid-way leaves the lease to expire and
another process resends it with the same id (receivers dedupe by `id`).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable

import aiohttp
import anyio

from db.outbox import OutboxEvent
from db.store import PgStore
from runner.alerts.policy import next_state, retry_delay
from runner.alerts.signing import delivery_body
from runner.alerts.watchdog import Watchdog
from runner.alerts.webhooks import Hook, post, resolve_hooks
from runner.config import AlertSettings, Config, Environment

log = logging.getLogger(__name__)

BATCH = 20  # events claimed per round
PURGE_EVERY = 3600.0  # seconds
PRESSURE_KEPT = 3600.0  # seconds of 429/5xx samples kept (≥ the degraded window)


class AlertDelivery:
    """Delivers alert events to the configured webhooks and runs the watchdog, until cancelled."""

    def __init__(
        self,
        store: PgStore,
        settings: AlertSettings,
        hooks: tuple[Hook, ...],
        *,
        watchdog: bool = True,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.store = store
        self.settings = settings
        self.hooks = hooks
        self.watchdog = Watchdog(store, settings) if watchdog else None
        self.clock = clock

    @classmethod
    def from_config(cls, store: PgStore, config: Config, env: Environment) -> AlertDelivery:
        """Built from `[alerts]`; a webhook whose secret variable is unset is a UserError."""
        return cls(store, config.alerts, resolve_hooks(config.alerts, env))

    async def run(self, session: aiohttp.ClientSession | None = None) -> None:
        """Deliver, watch and purge forever; failures are logged and retried, never raised.

        A runner passes its one HTTP session; `imgrun serve` has none and gets its own.
        """
        if session is not None:
            await self._loop(session)
            return
        connector = aiohttp.TCPConnector(limit=BATCH * max(1, len(self.hooks)))
        async with aiohttp.ClientSession(connector=connector) as own:
            await self._loop(own)

    async def _loop(self, session: aiohttp.ClientSession) -> None:
        due = {"watch": 0.0, "purge": 0.0}
        while True:
            full = False
            try:
                full = await self.tick(session, due)
            except Exception as exc:
                # A database restart or a bug here must not take the runner down with it.
                first = (str(exc).strip().splitlines() or [""])[0][:200]
                log.warning("alerts: %s: %s; trying again", type(exc).__name__, first)
            if not full:
                await anyio.sleep(self.settings.interval)

    async def tick(self, session: aiohttp.ClientSession, due: dict[str, float]) -> bool:
        """One round of every duty that is due; True when a full batch was delivered."""
        now = self.clock()
        if self.watchdog is not None and now >= due["watch"]:
            due["watch"] = now + self.settings.watchdog_interval
            await self.watchdog.step()
        full = bool(self.hooks) and await self.deliver_due(session) >= BATCH
        if now >= due["purge"]:
            due["purge"] = now + PURGE_EVERY
            await self.store.purge(
                keep=self.settings.retention,
                pressure_keep=max(PRESSURE_KEPT, self.settings.degraded_window),
            )
        return full

    async def deliver_due(self, session: aiohttp.ClientSession) -> int:
        """Claim a batch of due events and deliver them concurrently; returns how many."""
        events = await self.store.claim_events(BATCH, self.settings.lease)
        async with anyio.create_task_group() as group:
            for event in events:
                group.start_soon(self._deliver, session, event)
        return len(events)

    async def _deliver(self, session: aiohttp.ClientSession, event: OutboxEvent) -> None:
        age = (event.now - event.created_at).total_seconds()
        if event.attempts == 1 and age > self.settings.max_age:
            # A backlog from before any hook was configured is not worth sending now.
            await self.store.record_attempt(
                event.id, event.attempts, (), state="failed", error="expired"
            )
            return
        took, errors = await self._post_all(session, event)
        if not errors:
            await self.store.record_attempt(event.id, event.attempts, took, state="delivered")
            return
        settings = self.settings
        retry_in = retry_delay(event.attempts, settings.retry_base, settings.retry_max_delay)
        state = next_state(age, retry_in, settings.max_age)
        reason = "; ".join(sorted(errors))
        await self.store.record_attempt(
            event.id,
            event.attempts,
            took,
            state=state,
            retry_in=retry_in,
            error=reason,
        )
        what = f"alert {event.event} {event.id}"
        if state == "failed":
            log.error("%s: giving up after %d attempts: %s", what, event.attempts, reason)
        else:
            log.warning(
                "%s: attempt %d failed (%s); again in %.1f s",
                what,
                event.attempts,
                reason,
                retry_in,
            )

    async def _post_all(
        self, session: aiohttp.ClientSession, event: OutboxEvent
    ) -> tuple[list[str], list[str]]:
        """POST to every subscribed hook that lacks the event: (hooks that took it, errors)."""
        hooks = [
            h for h in self.hooks if h.wants(event.event) and h.target not in event.delivered_to
        ]
        body = delivery_body(str(event.id), event.event, event.created_at, event.payload)
        took: list[str] = []
        errors: list[str] = []

        async def one(hook: Hook) -> None:
            error = await post(session, hook, body, event=event.event, event_id=str(event.id))
            if error is None:
                took.append(hook.target)
            else:
                errors.append(error)

        async with anyio.create_task_group() as group:
            for hook in hooks:
                group.start_soon(one, hook)
        return took, errors
