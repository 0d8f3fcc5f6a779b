"""What a routed runner waits for: only the (pool, provider) pairs it claims."""

from __future__ import annotations

import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from db.records import ProviderBounds
from db.store import PgStore
from tests.db.conftest import UNLIMITED, outcome
from tests.runner.conftest import submit

pytestmark = pytest.mark.anyio

ONLY_A = {"standard": ["a"]}


async def test_another_providers_queue_is_not_a_routed_runners_work(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Pending work of provider b, or of a in another pool, does not keep a's runner up."""
    await submit(engine, n=2, provider="b")
    await submit(engine, n=2, provider="a", pool="lumina")
    assert not await store.work_remains(["standard"], ONLY_A)
    assert await store.work_remains(["standard"])  # unrouted: every provider counts
    assert await store.work_remains(["standard"], {"standard": ["a", "b"]})


async def test_routed_work_remains_while_pending_or_processing(
    engine: AsyncEngine, store: PgStore
) -> None:
    """Provider a's own subtasks count while pending and while in flight, then no more."""
    await submit(engine, n=1, provider="a")
    assert await store.work_remains(["standard"], ONLY_A)
    await store.register_providers(
        [ProviderBounds("a", "fixed", 1, UNLIMITED, None, {"limit": UNLIMITED})]
    )
    (row,) = (await store.claim("standard", ["a"], 5, "r1", 60.0)).rows
    assert await store.work_remains(["standard"], ONLY_A)  # processing
    await store.apply_outcomes([outcome(row, "completed", result={"images": []})])
    assert not await store.work_remains(["standard"], ONLY_A)
