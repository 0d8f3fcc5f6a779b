"""The runner's own redaction: an adapter bug that quotes the API key leaks it nowhere.

The end-to-end secret test passes even without this layer, because the HTTP client masks
the key first; here the failure bypasses HTTP, as a bug in an adapter or worker would.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db.records import ClaimedSubtask
from db.store import PgStore
from runner.config import Config
from runner.loop.executor import Executor, Identity
from runner.loop.service import make_fleet
from tests.runner.conftest import status_counts, submit, wait_until
from workers.types import ImageRequest, WorkResult

pytestmark = pytest.mark.anyio

SECRET = "sk-test-7f3c9a1e5b2d4c6f8a0b"


async def buggy_work(
    row: ClaimedSubtask,
    request: ImageRequest,
    on_submitted: Callable[[str], Awaitable[None]],
    should_stop: Callable[[], Awaitable[bool]],
) -> WorkResult:
    """An adapter bug whose message (and so its traceback) quotes the key, bare."""
    # Bare, not in a header or key=value: only the runner's list of secrets can catch it.
    raise RuntimeError(f"could not sign the request, rejected {SECRET} as malformed")


async def test_a_worker_bug_quoting_the_key_is_redacted_everywhere(
    engine: AsyncEngine, caplog: pytest.LogCaptureFixture
) -> None:
    """Logs, the subtask's error and error_logs (message and stack trace) hold no key."""
    await submit(engine, n=3, provider="null", max_retries=0)
    settings = Config().runner.model_copy(update={"heartbeat_interval": 0.2, "lease": 5.0})
    config, store = Config(), PgStore(engine)
    executor = Executor(
        store,
        Identity("r1", "default", "host", 1, "test"),
        settings,
        config.pools,
        buggy_work,
        make_fleet(store, "r1", config, config.routes()),
        config.routes(),
        secrets=(SECRET,),
    )

    async def all_failed() -> bool:
        return await status_counts(engine) == {"failed": 3}

    caplog.set_level(logging.DEBUG)
    async with anyio.create_task_group() as group:
        group.start_soon(executor.run)
        await wait_until(all_failed, timeout=30)
        executor.request_stop()

    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "unexpected error running subtask" in logged  # the bug path ran
    assert "RuntimeError: could not sign the request, rejected *** as malformed" in logged
    assert SECRET not in logged
    async with engine.connect() as connection:
        stored = (
            (
                await connection.execute(
                    text(
                        "SELECT string_agg(coalesce(error, ''), ' ') FROM subtasks"
                        " UNION ALL SELECT string_agg("
                        "error_message || coalesce(stack_trace, ''), ' ') FROM error_logs"
                    )
                )
            )
            .scalars()
            .all()
        )
    assert all(value and "rejected *** as malformed" in value for value in stored)
    assert not any(SECRET in value for value in stored)
