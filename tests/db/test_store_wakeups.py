"""A runner's store listens on its pools' claim lanes, and wakes each pool for its own work."""

from __future__ import annotations

from collections import Counter

import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db import queries
from db.store import PgStore

pytestmark = pytest.mark.anyio


async def test_each_pool_is_woken_for_its_own_work_and_at_the_start(engine: AsyncEngine) -> None:
    """Once when listening starts (work may already wait), then only by its own pool's NOTIFY."""
    store = PgStore(engine, lanes=True)
    woken: Counter[str] = Counter()
    changed = anyio.Event()

    def on_wake(pool: str) -> None:
        nonlocal changed
        woken[pool] += 1
        changed.set()
        changed = anyio.Event()

    async def until(pool: str, count: int) -> None:
        with anyio.fail_after(10):
            while woken[pool] < count:
                await changed.wait()

    async with anyio.create_task_group() as group:
        group.start_soon(store.listen, ["standard", "lumina"], on_wake)
        await until("standard", 1)
        await until("lumina", 1)
        for pool in ("lumina", "standard"):
            async with engine.begin() as connection:
                await queries.notify_wake(connection, pool)
        # The standard lane hears both, in order: its "standard" comes after the "lumina" it
        # must not pass on.
        await until("standard", 2)
        assert woken["lumina"] <= 2
        await until("lumina", 2)
        group.cancel_scope.cancel()
    await store.close()
    assert woken == {"standard": 2, "lumina": 2}
