"""The watchdog: turns silent runners and a provider's burst of 429/5xx into alert events."""

from __future__ import annotations

import logging
from typing import Any

from db.store import PgStore
from runner.alerts.policy import Pressure, is_degraded
from runner.config import AlertSettings

log = logging.getLogger(__name__)


def degraded_payload(pressure: Pressure, settings: AlertSettings) -> dict[str, Any]:
    """The data of a provider.degraded event."""
    return {
        "provider": pressure.provider,
        "share": round(pressure.share, 3),
        "errors": pressure.errors,
        "completed": pressure.completed,
        "window_seconds": settings.degraded_window,
        "cooldown_seconds": settings.degraded_cooldown,
    }


class Watchdog:
    """One step marks lost runners and raises provider.degraded; any process may run it."""

    def __init__(self, store: PgStore, settings: AlertSettings) -> None:
        self.store = store
        self.settings = settings

    async def step(self) -> list[dict[str, Any]]:
        """Look once; returns the payloads of the events it added."""
        added = await self.store.mark_lost_runners(self.settings.runner_lost_after)
        for lost in added:
            log.warning(
                "runner %s lost: no heartbeat for %ss, held %d subtasks",
                lost["executor_id"],
                lost["silent_seconds"],
                lost["subtasks_held"],
            )
        return added + await self._degraded()

    async def _degraded(self) -> list[dict[str, Any]]:
        settings = self.settings
        counts = await self.store.provider_pressure(settings.degraded_window)
        payloads = [
            degraded_payload(pressure, settings)
            for pressure in (Pressure(p, bad, ok) for p, (bad, ok) in sorted(counts.items()))
            if is_degraded(
                pressure, share=settings.degraded_share, min_events=settings.degraded_min_events
            )
        ]
        if not payloads:
            return []
        raised = set(await self.store.add_degraded(payloads, settings.degraded_cooldown))
        for payload in payloads:
            if payload["provider"] in raised:
                log.warning(
                    "provider %s degraded: %.0f%% of %d outcomes were 429/5xx",
                    payload["provider"],
                    100 * payload["share"],
                    payload["errors"] + payload["completed"],
                )
        return [p for p in payloads if p["provider"] in raised]
