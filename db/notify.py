"""LISTEN for wake-ups (new or requeued work) on a dedicated connection."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import is_transient_db_error
from db.submit_queries import WAKE_CHANNEL

log = logging.getLogger(__name__)

RECONNECT_DELAY = 1.0  # seconds; meanwhile the runner's fallback poll keeps it working


async def listen(engine: AsyncEngine, on_wake: Callable[[str], None]) -> None:
    """Call `on_wake(pool)` for every NOTIFY on the wake channel, reconnecting forever."""

    def deliver(_connection: Any, _pid: int, _channel: str, payload: str) -> None:
        on_wake(payload)

    while True:
        try:
            async with engine.connect() as connection:
                raw = await connection.get_raw_connection()
                driver = raw.driver_connection
                assert driver is not None
                await driver.add_listener(WAKE_CHANNEL, deliver)
                closed = anyio.Event()
                driver.add_termination_listener(lambda _c, closed=closed: closed.set())
                try:
                    await closed.wait()
                finally:
                    with anyio.CancelScope(shield=True), anyio.move_on_after(2):
                        if not driver.is_closed():
                            await driver.remove_listener(WAKE_CHANNEL, deliver)
        except Exception as exc:
            if not is_transient_db_error(exc):
                raise
            log.warning("wake-up listener lost its connection (%s); reconnecting", exc)
        await anyio.sleep(RECONNECT_DELAY)
