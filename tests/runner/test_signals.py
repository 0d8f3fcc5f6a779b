"""Every 429, 503, timeout and 5xx a provider sends is counted exactly once, absorbed or final.

A loopback provider answers from a script (one entry per request it receives, in order) and
keeps the truth: what it sent, and the tightest x-ratelimit budget it stated. One subtask at
a time makes the script's path through in-attempt retries and runner retries deterministic.
"""

from __future__ import annotations

import asyncio
import base64
import json
import logging
import uuid
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import anyio
import pytest
from aiohttp import web
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.loop.executor import Executor
from runner.loop.service import serve
from runner.loop.signals import SignalCounts
from tests.cli.test_submit import imgrun
from tests.runner.conftest import (
    make_config,
    runner_settings,
    sim_stats,
    status_counts,
    submit,
)
from tests.workers.helpers import blackhole
from workers.providers.null import tiny_png

pytestmark = pytest.mark.anyio

SLOW = 1.5  # seconds a "slow" answer takes: past the provider's 0.5 s request timeout
PNG = tiny_png()
# Every answer but the slow ones states a budget; every fifth one a hostile one, ignored.
HOSTILE_BUDGETS = (
    {"x-ratelimit-remaining-requests": "-3", "x-ratelimit-limit-requests": "1e9"},
    {"x-ratelimit-remaining-requests": "9" * 80, "x-ratelimit-reset-requests": "forever"},
    {"x-ratelimit-remaining-requests": "12abc", "x-ratelimit-reset-requests": "9" * 40 + "h"},
)


class ScriptedProvider:
    """Answers request i with script[i] (then "ok"); counts what it sent."""

    def __init__(self, script: list[str]) -> None:
        self.script = script
        self.sent: Counter[str] = Counter()
        self.lowest_budget: int | None = None
        self._n = 0

    def _budget(self, i: int) -> dict[str, str]:
        if i % 5 == 4:
            return HOSTILE_BUDGETS[i % len(HOSTILE_BUDGETS)]
        remaining = 10_000 - i
        self.lowest_budget = min(remaining, self.lowest_budget or remaining)
        return {
            "x-ratelimit-remaining-requests": str(remaining),
            "x-ratelimit-limit-requests": "10000",
            "x-ratelimit-reset-requests": "6m0s",
        }

    async def handle(self, request: web.Request) -> web.StreamResponse:
        """One request: the script's fault, or the protocol's normal answer."""
        i, self._n = self._n, self._n + 1
        kind = self.script[i] if i < len(self.script) else "ok"
        self.sent[kind] += 1
        if kind == "slow":
            await asyncio.sleep(SLOW)  # the client has given up by now
            return web.Response(status=504)
        headers = self._budget(i)
        if kind != "ok":
            status, _, retry_after = kind.partition("+ra")
            if retry_after or kind == "429":
                headers["Retry-After"] = "0"
            body = '{"error": {"message": "scripted"}}'
            return web.Response(status=int(status), text=body, headers=headers)
        return await self._ok(request, headers)

    async def _ok(self, request: web.Request, headers: dict[str, str]) -> web.StreamResponse:
        path = request.path
        if path == "/v1/images/generations":
            n = int((await request.json()).get("n", 1))
            data = [{"b64_json": base64.b64encode(PNG).decode()}] * n
            return web.json_response({"data": data}, headers=headers)
        if path == "/v1/tasks":
            return web.json_response({"task_uuid": str(uuid.uuid4())}, headers=headers)
        if path.startswith("/v1/tasks/"):
            image = f"/img/{path.rsplit('/', 1)[1]}.png"
            return web.json_response({"status": "succeeded", "images": [image]}, headers=headers)
        return web.Response(body=PNG, content_type="image/png", headers=headers)


@pytest.fixture
async def provider_server() -> AsyncIterator[Callable[[ScriptedProvider], Awaitable[str]]]:
    """Serve a ScriptedProvider on a free loopback port; returns its base URL."""
    runners: list[web.AppRunner] = []

    async def start(provider: ScriptedProvider) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", provider.handle)
        runner = web.AppRunner(app, access_log=None, shutdown_timeout=SLOW + 1)
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        runners.append(runner)
        return f"http://127.0.0.1:{runner.addresses[0][1]}"

    try:
        yield start
    finally:
        for runner in runners:
            await runner.cleanup()


async def run_one(
    engine: AsyncEngine, tmp_path: Path, database_url: str, url: str, pool: str
) -> Executor:
    """Run one subtask of `pool` to completion against `url`; the runner's executor."""
    await submit(engine, n=1, pool=pool, max_retries=10)
    provider = {"request_attempts": 3, "request_retry_wait": 0.01, "timeout": 0.5}
    settings = runner_settings(url, {"providers": {"sim": provider}})
    config, env = make_config(tmp_path, database_url, settings)
    executors: list[Executor] = []
    with anyio.fail_after(60):
        await serve(engine, config, env, until_idle=True, on_start=executors.append)
    assert await status_counts(engine) == {"completed": 1}
    return executors[0]


def counted(signals: SignalCounts) -> Counter[str]:
    """The executor's counts in the script's words."""
    return Counter(
        {
            "429": signals.rate_limited,
            "503": signals.unavailable,
            "slow": signals.timeouts,
            "500": signals.server_errors,
        }
    )


def sent_faults(provider: ScriptedProvider) -> Counter[str]:
    """What the provider sent, 503 with and without Retry-After together."""
    sent = Counter({k.partition("+ra")[0]: 0 for k in ("429", "503", "slow", "500")})
    for kind, n in provider.sent.items():
        if kind != "ok":
            sent[kind.partition("+ra")[0]] += n
    return sent


async def error_rows(engine: AsyncEngine) -> dict[tuple[str, str], tuple[int, int]]:
    """error_logs as {(type, fingerprint): (count, recovered)}."""
    async with engine.connect() as connection:
        rows = await connection.execute(
            text("SELECT error_type, error_message, count, recovered FROM error_logs")
        )
        return {(r[0], r[1]): (int(r[2]), int(r[3])) for r in rows.all()}


def by_status(rows: dict[tuple[str, str], tuple[int, int]], needle: str) -> tuple[int, int]:
    """(count, recovered) summed over the rows whose fingerprint contains `needle`."""
    matching = [v for (_, message), v in rows.items() if needle in message]
    return sum(c for c, _ in matching), sum(r for _, r in matching)


async def test_standard_pool_counts_each_answer_once_absorbed_or_final(
    engine: AsyncEngine,
    tmp_path: Path,
    database_url: str,
    provider_server: Callable[[ScriptedProvider], Awaitable[str]],
) -> None:
    """429, 503 (with and without Retry-After), a timeout and 500s: one count each.

    With 3 tries per attempt the script runs: attempt 1 absorbs 429 and 503, ends on a 500;
    attempt 2 absorbs a timeout and a 503 + Retry-After, ends on a 500; attempt 3 absorbs two
    429s, the third ends it (deferred); attempt 4 succeeds. 7 absorbed, 3 final.
    """
    script = ["429", "503", "500", "slow", "503+ra", "500", "429", "429", "429"]
    provider = ScriptedProvider(script)
    executor = await run_one(
        engine, tmp_path, database_url, await provider_server(provider), "standard"
    )

    signals = executor.signals["sim"]
    assert (
        counted(signals)
        == sent_faults(provider)
        == Counter({"429": 4, "503": 2, "slow": 1, "500": 2})
    )
    # The tightest sane budget any answer stated, success or error; hostile ones ignored.
    assert signals.ratelimit_remaining == provider.lowest_budget
    assert (signals.ratelimit_limit, signals.ratelimit_reset) == (10_000, 360.0)

    rows = await error_rows(engine)
    assert by_status(rows, "HTTP 429") == (4, 3)  # the third 429 of attempt 3 ended it
    assert by_status(rows, "HTTP 503") == (2, 2)
    assert by_status(rows, "HTTP 500") == (2, 0)  # both ended their attempt
    assert rows[("ProviderTimeout", next(m for t, m in rows if t == "ProviderTimeout"))] == (1, 1)


async def test_lumina_pool_counts_submit_poll_and_fetch_answers_once(
    engine: AsyncEngine,
    tmp_path: Path,
    database_url: str,
    provider_server: Callable[[ScriptedProvider], Awaitable[str]],
) -> None:
    """A 429 on submit, 503/500/timeout on polls (the last poll try swallowed by the poll
    loop, not by a retry), a 500 on the download: each counted once, all recovered."""
    script = ["429", "ok", "503", "500", "slow", "ok", "500"]
    provider = ScriptedProvider(script)
    executor = await run_one(
        engine, tmp_path, database_url, await provider_server(provider), "lumina"
    )

    signals = executor.signals["sim"]
    assert (
        counted(signals)
        == sent_faults(provider)
        == Counter({"429": 1, "503": 1, "slow": 1, "500": 2})
    )
    assert signals.ratelimit_remaining == provider.lowest_budget
    rows = await error_rows(engine)
    assert by_status(rows, "HTTP 429") == (1, 1)
    assert by_status(rows, "HTTP 503") == (1, 1)
    assert by_status(rows, "HTTP 500") == (2, 2)
    assert sum(c for c, _ in rows.values()) == sum(r for _, r in rows.values()) == 5


@pytest.mark.parametrize("pool", ["standard", "lumina"])
async def test_connect_timeouts_count_once_each(
    engine: AsyncEngine, tmp_path: Path, database_url: str, pool: str
) -> None:
    """A provider that never accepts: every connect that times out is one timeout signal."""
    server, fillers = blackhole()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        await submit(engine, n=1, pool=pool, max_retries=0)
        provider = {"request_attempts": 2, "request_retry_wait": 0.01, "timeout": 0.3}
        config, env = make_config(
            tmp_path, database_url, runner_settings(url, {"providers": {"sim": provider}})
        )
        executors: list[Executor] = []
        with anyio.fail_after(60):
            await serve(engine, config, env, until_idle=True, on_start=executors.append)
    finally:
        for sock in (server, *fillers):
            sock.close()
    # One attempt (no retries) of two tries, each a connect that timed out: one absorbed,
    # one final (the submit, for lumina).
    assert await status_counts(engine) == {"failed": 1}
    assert counted(executors[0].signals["sim"]) == Counter({"slow": 2})
    assert list((await error_rows(engine)).values()) == [(2, 1)]


async def test_sim_500s_absorbed_by_retries_show_in_imgrun_errors_as_recovered(
    engine: AsyncEngine,
    tmp_path: Path,
    database_url: str,
    start_sim: Callable[..., Any],
    cli_env: dict[str, str],
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The sim at --error-rate 0.1: every injected 500 is in error_logs, the absorbed ones
    marked recovered; `imgrun errors` shows them; error.new fires once per fingerprint; the
    log stays quiet (one line per new error, none per occurrence)."""
    caplog.set_level(logging.INFO)
    await submit(engine, n=60, max_retries=10)
    async with start_sim(error_rate=0.1, seed=7) as sim:
        provider = {"request_attempts": 4, "request_retry_wait": 0.01}
        config, env = make_config(
            tmp_path, database_url, runner_settings(sim.url, {"providers": {"sim": provider}})
        )
        with anyio.fail_after(60):
            executor = await serve(engine, config, env, until_idle=True)
        injected = (await sim_stats(sim))["faults"].get("error", 0)
    assert await status_counts(engine) == {"completed": 60}
    assert injected > 0

    async with engine.connect() as connection:
        # Each 500 that ended an attempt cost its subtask one retry; the rest were absorbed.
        final = int(await connection.scalar(text("SELECT sum(retry_count) FROM subtasks")) or 0)
        new_errors = await connection.scalar(
            text("SELECT count(*) FROM outbox WHERE event = 'error.new'")
        )
        pressure = await connection.scalar(text("SELECT sum(count) FROM provider_pressure"))
    rows = await error_rows(engine)
    assert by_status(rows, "HTTP 500") == (injected, injected - final)
    assert sum(c for c, _ in rows.values()) == injected  # nothing but the 500s
    assert executor.signals["sim"].server_errors == injected
    assert new_errors == len(rows)  # once per new fingerprint, not per occurrence
    assert pressure == injected  # the provider.degraded watchdog sees every 5xx
    loud = [r for r in caplog.records if r.levelno >= logging.INFO and "500" in r.getMessage()]
    assert len(loud) == len(rows), [r.getMessage() for r in loud]

    cli = {**cli_env, "IMGRUN_DATABASE_URL": database_url}
    status, stdout, _ = await imgrun(cli, "errors", "--json")
    shown = json.loads(stdout)
    assert status == 0
    assert sum(e["count"] for e in shown) == injected
    assert sum(e["recovered"] for e in shown) == injected - final
    status, stdout, _ = await imgrun(cli, "errors")
    row = shown[0]
    expected = (
        f"{row['count']} ({row['recovered']} recovered)" if row["recovered"] else str(row["count"])
    )
    assert status == 0 and expected in stdout, stdout
