"""Alerts end to end: triggers and the watchdog fill the outbox; a real receiver gets them."""

from __future__ import annotations

import json
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import api_queries, outbox, queries
from db.queries import ErrorRecord
from db.store import PgStore
from runner.alerts.delivery import AlertDelivery
from runner.alerts.policy import target_id
from runner.alerts.watchdog import Watchdog
from runner.api.events import EPOCH
from runner.api.feed import finished_data
from runner.errors import UserError
from runner.loop.service import serve
from tests.api.conftest import SECRET, Receiver, alert_settings, with_secret
from tests.runner.conftest import make_config, runner_settings, submit, wait_until
from workers.sim.app import RunningSim

pytestmark = pytest.mark.anyio


@asynccontextmanager
async def delivering(
    engine: AsyncEngine, tmp_path: Path, database_url: str, url: str, **alerts: Any
) -> AsyncIterator[AlertDelivery]:
    """A delivery loop running in the background for the block."""
    config, env = make_config(tmp_path, database_url, alert_settings(url, **alerts))
    delivery = AlertDelivery.from_config(PgStore(engine), config, with_secret(env))
    async with anyio.create_task_group() as group:
        group.start_soon(delivery.run)
        yield delivery
        group.cancel_scope.cancel()


async def finished_tasks(engine: AsyncEngine, n: int) -> list[int]:
    """`n` tasks, each canceled at once: n task.finished events."""
    ids = [await submit(engine, name=f"t{i}", n=2) for i in range(n)]
    for task_id in ids:
        assert await queries.cancel_task(engine, task_id) is not None
    return ids


async def until(condition: Callable[[], bool], timeout: float = 20.0) -> None:
    """wait_until for a plain predicate."""

    async def check() -> bool:
        return condition()

    await wait_until(check, timeout=timeout)


async def test_task_finished_is_delivered_signed(
    engine: AsyncEngine, tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    """A canceled task reaches the hook once: signed body {id, event, at, data}, headers."""
    (task_id,) = await finished_tasks(engine, 1)

    async def recorded() -> bool:
        rows = await outbox.outbox_rows(engine, "task.finished")
        return len(receiver.accepted()) == 1 and rows[0]["state"] == "delivered"

    async with delivering(engine, tmp_path, database_url, receiver.url):
        # The receiver has it before the loop records it: wait for both.
        await wait_until(recorded, timeout=20)
    (delivery,) = receiver.deliveries
    assert delivery.signed
    body = json.loads(delivery.body)
    assert set(body) == {"id", "event", "at", "data"} and body["event"] == "task.finished"
    data = body["data"]
    assert (data["task_id"], data["status"], data["canceled_subtasks"]) == (task_id, "canceled", 2)
    assert data["completed_subtasks"] == 0 and data["duration_seconds"] >= 0
    assert delivery.headers["X-Imgrun-Delivery"] == body["id"]
    assert delivery.headers["X-Imgrun-Event"] == "task.finished"
    (row,) = await outbox.outbox_rows(engine, "task.finished")
    assert (str(row["id"]), row["state"], row["attempts"]) == (body["id"], "delivered", 1)
    assert row["delivered_to"] == [target_id(receiver.url)]


async def test_a_failing_receiver_gets_it_again_with_the_same_id(
    engine: AsyncEngine, tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    """Two 500s, then 200: three identical signed deliveries, spaced by a growing backoff."""
    receiver.fail_next = 2
    await finished_tasks(engine, 1)
    async with delivering(engine, tmp_path, database_url, receiver.url, retry_base=0.2):
        await until(lambda: len(receiver.accepted()) == 1)
    assert [d.status for d in receiver.deliveries] == [500, 500, 200]
    assert len({d.body for d in receiver.deliveries}) == 1  # same id, same bytes, same signature
    assert all(d.signed for d in receiver.deliveries)
    first, second, third = (d.at for d in receiver.deliveries)
    assert second - first >= 0.2 and third - second >= 0.4  # retry_base × 2^n
    (row,) = await outbox.outbox_rows(engine, "task.finished")
    assert (row["state"], row["attempts"], row["last_error"]) == ("delivered", 3, None)


async def test_two_deliverers_never_send_one_event_twice(
    engine: AsyncEngine, tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    """Two loops share the outbox (SKIP LOCKED): 30 events, 30 deliveries, 30 distinct ids."""
    await finished_tasks(engine, 30)
    async with (
        delivering(engine, tmp_path / "a", database_url, receiver.url) as first,
        delivering(engine, tmp_path / "b", database_url, receiver.url) as second,
    ):

        async def all_recorded() -> bool:
            rows = await outbox.outbox_rows(engine, "task.finished")
            return {r["state"] for r in rows} == {"delivered"}

        await wait_until(all_recorded)
        # Both loops are still claiming: nothing is left for either to send again.
        async with aiohttp.ClientSession() as session:
            assert await first.deliver_due(session) == 0
            assert await second.deliver_due(session) == 0
    rows = await outbox.outbox_rows(engine, "task.finished")
    ids = [json.loads(d.body)["id"] for d in receiver.deliveries]
    assert len(ids) == 30 and len(set(ids)) == 30
    assert set(ids) == {str(r["id"]) for r in rows}


async def test_delivery_gives_up_after_max_age(
    engine: AsyncEngine, tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    """A hook that always fails: retried until max_age would pass, then the event is failed."""
    receiver.fail_next = 10**6
    await finished_tasks(engine, 1)
    async with delivering(
        engine, tmp_path, database_url, receiver.url, retry_base=0.1, max_age=1.0
    ) as delivery:

        async def gave_up() -> bool:
            rows = await outbox.outbox_rows(engine, "task.finished")
            return rows[0]["state"] == "failed"

        await wait_until(gave_up)
        tried = len(receiver.deliveries)
        async with aiohttp.ClientSession() as session:
            assert await delivery.deliver_due(session) == 0  # nothing left to claim
    assert 2 <= tried == len(receiver.deliveries)
    (row,) = await outbox.outbox_rows(engine, "task.finished")
    assert row["last_error"].endswith("HTTP 500") and row["delivered_to"] == []


async def test_a_hook_gets_only_the_events_it_chose(
    engine: AsyncEngine, tmp_path: Path, database_url: str, receiver: Receiver
) -> None:
    """events = ["error.new"]: a task.finished is settled without a POST; an error.new is sent."""
    (task_id,) = await finished_tasks(engine, 1)
    async with engine.connect() as connection:
        subtask = await connection.scalar(
            text("SELECT min(id) FROM subtasks WHERE task_id = :id"), {"id": task_id}
        )
    await queries.record_errors(
        engine,
        [ErrorRecord("PermanentError", "HTTP 400: bad prompt", None, "standard", "sim", subtask)],
    )
    hook = {"url": receiver.url, "secret_env": "HOOK_SECRET", "events": ["error.new"], "timeout": 5}
    config, env = make_config(tmp_path, database_url, alert_settings(receiver.url, webhooks=[hook]))
    delivery = AlertDelivery.from_config(PgStore(engine), config, with_secret(env))
    async with anyio.create_task_group() as group:
        group.start_soon(delivery.run)
        await until(lambda: len(receiver.accepted()) == 1)

        async def settled() -> bool:
            return {r["state"] for r in await outbox.outbox_rows(engine)} == {"delivered"}

        await wait_until(settled)
        group.cancel_scope.cancel()
    assert [json.loads(d.body)["event"] for d in receiver.deliveries] == ["error.new"]
    data = json.loads(receiver.deliveries[0].body)["data"]
    assert (data["error_type"], data["fingerprint"], data["provider"]) == (
        "PermanentError",
        "HTTP 400: bad prompt",
        "sim",
    )


async def test_error_new_fires_once_per_fingerprint_with_a_sample(engine: AsyncEngine) -> None:
    """The first occurrence of an error is an event (with the subtask's message); repeats not."""
    task_id = await submit(engine, n=1)
    async with engine.begin() as connection:
        subtask = await connection.scalar(
            text(
                "UPDATE subtasks SET error = 'TransientError: HTTP 502 from 10.0.0.7'"
                " WHERE task_id = :id RETURNING id"
            ),
            {"id": task_id},
        )
    record = ErrorRecord("TransientError", "HTTP 502 from <ip>", None, "standard", "sim", subtask)
    await queries.record_errors(engine, [record])
    await queries.record_errors(engine, [record, record])
    (row,) = await outbox.outbox_rows(engine, "error.new")
    payload = row["payload"]
    assert (payload["fingerprint"], payload["sample"], payload["subtask_id"]) == (
        "HTTP 502 from <ip>",
        "TransientError: HTTP 502 from 10.0.0.7",
        subtask,
    )


async def stale_runner(engine: AsyncEngine, executor: str, age: float, held: int) -> None:
    """An executor row last heard from `age` seconds ago, holding `held` subtasks."""
    task_id = await submit(engine, name=executor, n=held)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "INSERT INTO executors (id, host, pid, version, state, heartbeat_at)"
                " VALUES (:id, 'box', 1, '0', 'running', now() - make_interval(secs => :age))"
            ),
            {"id": executor, "age": age},
        )
        await connection.execute(
            text(
                "UPDATE subtasks SET status = 'processing', executor_id = :id, attempts = 1,"
                " lease_expires_at = now() + interval '1 minute' WHERE task_id = :task"
            ),
            {"id": executor, "task": task_id},
        )


async def test_a_silent_runner_is_lost_once(
    engine: AsyncEngine, tmp_path: Path, database_url: str
) -> None:
    """A runner silent past runner_lost_after: marked lost, one event with what it held."""
    await stale_runner(engine, "gone", age=120, held=3)
    await stale_runner(engine, "alive", age=1, held=2)
    config, _ = make_config(tmp_path, database_url, {"alerts": {"runner_lost_after": 40}})
    watchdog = Watchdog(PgStore(engine), config.alerts)
    (lost,) = await watchdog.step()
    assert (lost["executor_id"], lost["subtasks_held"], lost["host"]) == ("gone", 3, "box")
    assert lost["silent_seconds"] >= 120
    assert await watchdog.step() == []
    async with engine.connect() as connection:
        states = dict((await connection.execute(text("SELECT id, state FROM executors"))).all())
    assert states == {"gone": "lost", "alive": "running"}
    assert [
        r["payload"]["executor_id"] for r in await outbox.outbox_rows(engine, "runner.lost")
    ] == ["gone"]


async def pressure(engine: AsyncEngine, provider: str, kinds: dict[tuple[str, str], int]) -> None:
    """Record failures as the runner does: {(error_type, fingerprint): count}."""
    task_id = await submit(engine, name=provider, n=1)
    async with engine.connect() as connection:
        subtask = await connection.scalar(
            text("SELECT id FROM subtasks WHERE task_id = :id"), {"id": task_id}
        )
    records = [
        ErrorRecord(kind, message, None, "standard", provider, subtask)
        for (kind, message), count in kinds.items()
        for _ in range(count)
    ]
    await queries.record_errors(engine, records)


async def completions(engine: AsyncEngine, provider: str, n: int) -> None:
    """`n` subtasks of `provider` completed just now."""
    task_id = await submit(engine, name=f"{provider}-ok", n=n, provider=provider)
    async with engine.begin() as connection:
        await connection.execute(
            text(
                "UPDATE subtasks SET status = 'completed', completed_at = now() WHERE task_id = :id"
            ),
            {"id": task_id},
        )


async def test_a_provider_with_mostly_429_and_5xx_is_degraded_once_per_cooldown(
    engine: AsyncEngine, tmp_path: Path, database_url: str
) -> None:
    """429s and 5xx count, 4xx do not; a healthy share stays quiet; the cooldown holds."""
    await pressure(
        engine,
        "sim",
        {("RateLimited", "HTTP 429: slow down"): 15, ("TransientError", "HTTP 503: busy"): 10},
    )
    await pressure(engine, "null", {("PermanentError", "HTTP 400: bad prompt"): 40})
    await pressure(engine, "busy", {("RateLimited", "HTTP 429: slow down"): 30})
    await completions(engine, "busy", 100)
    config, _ = make_config(tmp_path, database_url, {})
    watchdog = Watchdog(PgStore(engine), config.alerts)
    (event,) = await watchdog.step()
    assert event == {
        "provider": "sim",
        "share": 1.0,
        "errors": 25,
        "completed": 0,
        "window_seconds": 300.0,
        "cooldown_seconds": 900.0,
    }
    await pressure(engine, "sim", {("RateLimited", "HTTP 429: slow down"): 20})
    assert await watchdog.step() == []  # within the cooldown
    assert len(await outbox.outbox_rows(engine, "provider.degraded")) == 1


async def test_the_runner_writes_task_finished_in_its_own_transaction(
    engine: AsyncEngine, tmp_path: Path, database_url: str, sim: RunningSim
) -> None:
    """After a real run: one task.finished with the final counts, equal to the SSE event's data."""
    task_id = await submit(engine, n=5)
    config, env = make_config(tmp_path, database_url, runner_settings(sim.url))
    with anyio.fail_after(60):
        await serve(engine, config, env, until_idle=True)
    (row,) = await outbox.outbox_rows(engine, "task.finished")
    payload = row["payload"]
    assert (payload["status"], payload["completed_subtasks"], payload["total_subtasks"]) == (
        "completed",
        5,
        5,
    )
    # What /v1/events says about the same task.
    _, (task,) = await api_queries.task_changes(engine, EPOCH, task_id=task_id)
    expected = json.loads(json.dumps(finished_data(task), default=str))
    assert payload.keys() == expected.keys()
    for key in ("created_at", "started_at", "finished_at"):
        assert _instant(payload[key]) == _instant(expected[key])
    other = {k for k in payload if not k.endswith("_at")}
    assert {k: payload[k] for k in other} == {k: expected[k] for k in other}


def _instant(value: str) -> float:
    from datetime import datetime

    return datetime.fromisoformat(value.replace(" ", "T")).timestamp()


async def test_a_missing_secret_variable_is_a_user_error(
    tmp_path: Path, database_url: str, engine: AsyncEngine
) -> None:
    """The secret's variable must be set; the error names it, not a value."""
    config, env = make_config(tmp_path, database_url, alert_settings("http://127.0.0.1:9/h"))
    with pytest.raises(
        UserError, match=r"alerts.webhooks\[0\].secret_env: the variable HOOK_SECRET"
    ):
        AlertDelivery.from_config(PgStore(engine), config, env)


async def test_secrets_and_hook_urls_stay_out_of_the_database_and_logs(
    engine: AsyncEngine,
    tmp_path: Path,
    database_url: str,
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A hook URL with a secret path that fails: neither it nor the secret is stored or logged."""
    caplog.set_level(logging.DEBUG)
    secret_url = receiver.url.replace("/hook", "/T0SECRETPATH")  # the receiver 404s this path
    await finished_tasks(engine, 1)
    async with delivering(engine, tmp_path, database_url, secret_url, retry_base=0.1):

        async def failed_once() -> bool:
            rows = await outbox.outbox_rows(engine, "task.finished")
            return rows[0]["attempts"] >= 2 and rows[0]["last_error"] is not None

        await wait_until(failed_once)
    stored = repr(await outbox.outbox_rows(engine))
    assert "T0SECRETPATH" not in stored and SECRET not in stored
    assert "HTTP 404" in stored
    assert "T0SECRETPATH" not in caplog.text and SECRET not in caplog.text
    assert "task.finished" in caplog.text  # the failure was logged, just without secrets


async def test_attempts_are_fenced_by_the_claim(engine: AsyncEngine) -> None:
    """A delivery whose lease ran out and was claimed again cannot record over the new claim."""
    await finished_tasks(engine, 1)
    (first,) = await outbox.claim_events(engine, 10, lease=0.0)
    (second,) = await outbox.claim_events(engine, 10, lease=60.0)
    assert (first.id, first.attempts, second.attempts) == (second.id, 1, 2)
    assert not await outbox.record_attempt(engine, first.id, 1, ["x"], state="delivered")
    assert await outbox.record_attempt(engine, second.id, 2, ["y"], state="delivered")
    (row,) = await outbox.outbox_rows(engine)
    assert (row["state"], row["delivered_to"]) == ("delivered", ["y"])
