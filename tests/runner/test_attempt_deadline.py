"""A standard attempt gets the pool's `timeout` in all, whatever its requests' own timeouts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from pathlib import Path

import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.loop.executor import Executor
from runner.loop.service import serve
from tests.runner.conftest import make_config, runner_settings, status_counts, submit
from tests.runner.test_signals import (  # noqa: F401 (provider_server is a fixture)
    ScriptedProvider,
    error_rows,
    provider_server,
)

pytestmark = pytest.mark.anyio

DEADLINE = 0.4  # the standard pool's timeout: under the slow answer and the request timeout


async def test_a_slow_answer_past_the_pool_timeout_is_a_timeout_then_retried(
    engine: AsyncEngine,
    tmp_path: Path,
    database_url: str,
    provider_server: Callable[[ScriptedProvider], Awaitable[str]],  # noqa: F811
) -> None:
    """The first attempt is cut off at the deadline (a timeout signal), the retry completes."""
    provider = ScriptedProvider(["slow"])
    url = await provider_server(provider)
    await submit(engine, n=1, max_retries=3)
    settings = runner_settings(
        url,
        {
            "providers": {"sim": {"timeout": 30}},  # the request alone would wait 30 s
            "pools": {"standard": {"timeout": DEADLINE}},
        },
    )
    config, env = make_config(tmp_path, database_url, settings)
    executors: list[Executor] = []
    with anyio.fail_after(30):
        await serve(engine, config, env, until_idle=True, on_start=executors.append)

    assert await status_counts(engine) == {"completed": 1}
    assert provider.sent == {"slow": 1, "ok": 1}
    assert executors[0].signals["sim"].timeouts == 1
    rows = await error_rows(engine)
    assert [(kind, count) for (kind, _), (count, _) in rows.items()] == [("ProviderTimeout", 1)]
    # Cut off at the deadline: had the attempt waited for the slow answer (SLOW s), it
    # would have ended on that answer's 504 instead.
    assert "no result within the attempt's" in next(iter(rows))[1]
