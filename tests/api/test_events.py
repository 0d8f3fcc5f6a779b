"""/v1/events: progress and finished events arrive in order; streams are bounded."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator, Callable
from typing import Any

import aiohttp
import anyio
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from runner.loop.service import serve
from tests.api.conftest import Api, ApiFactory
from tests.runner.conftest import wait_until

pytestmark = pytest.mark.anyio

FAST_EVENTS = {"api": {"events_interval": 0.05}}
# Two slots and 100 ms per image: 12 subtasks take about 0.6 s, many polls of the feed.
SLOW_RUN = {**FAST_EVENTS, "pools": {"standard": {"initial": 2, "max": 2}}}


async def read_events(
    response: aiohttp.ClientResponse, opened: anyio.Event | None = None
) -> AsyncIterator[dict[str, Any]]:
    """Parse a text/event-stream into {"id", "event", "data"} dicts; `opened` is set at the
    server's first line (`retry:`), sent once the stream has taken its first look."""
    event: dict[str, Any] = {}
    async for raw in response.content:
        line = raw.decode().rstrip("\n")
        if line.startswith("retry: ") and opened is not None:
            opened.set()
        if not line:
            if "event" in event:
                yield event
            event = {}
        elif line.startswith("data: "):
            event["data"] = json.loads(line[6:])
        elif line.startswith(("id: ", "event: ")):
            key, _, value = line.partition(": ")
            event[key] = value


async def submit(api: Api, n: int, name: str = "t") -> int:
    """Queue a task of `n` subtasks through the API."""
    spec = {"name": name, "prompts": ["a {x}"], "variables": {"x": list(range(n))}, "seed": 1}
    async with api.client.post("/v1/tasks", json=spec) as response:
        assert response.status == 201
        return int((await response.json())["id"])


async def collect(
    api: Api,
    path: str,
    *,
    into: list[dict[str, Any]] | None = None,
    opened: anyio.Event | None = None,
    until: Callable[[list[dict[str, Any]]], bool] | None = None,
) -> list[dict[str, Any]]:
    """Events of one stream, appended to `into` as they come, until it ends (or `until`)."""
    events = [] if into is None else into
    with anyio.fail_after(30):
        async with api.client.get(path) as response:
            assert response.status == 200
            assert response.headers["Content-Type"] == "text/event-stream"
            async for event in read_events(response, opened):
                events.append(event)
                if until is not None and until(events):
                    break
    return events


async def test_following_a_task_gives_progress_in_order_then_finished(
    start_api: ApiFactory, start_sim: Callable[..., Any], engine: AsyncEngine
) -> None:
    """Counts only grow, the last progress is complete, finished comes last, the stream ends."""
    async with start_sim(service_ms=100.0) as sim:
        api = await start_api(SLOW_RUN, sim_url=sim.url)
        task_id = await submit(api, 12)
        events: list[dict[str, Any]] = []

        opened = anyio.Event()
        async with anyio.create_task_group() as group:
            group.start_soon(
                lambda: collect(api, f"/v1/events?task={task_id}", into=events, opened=opened)
            )
            with anyio.fail_after(10):
                await opened.wait()
            with anyio.fail_after(60):
                await serve(engine, api.config, api.env, until_idle=True)
    kinds = [e["event"] for e in events]
    assert kinds[-1] == "task.finished" and kinds.count("task.finished") == 1
    progress = [e["data"] for e in events if e["event"] == "task.progress"]
    assert len(progress) >= 3, kinds  # started, some way through, done
    done = [p["completed_subtasks"] for p in progress]
    assert done == sorted(done) and done[-1] == 12
    assert [int(e["id"]) for e in events] == list(range(1, len(events) + 1))
    finished = events[-1]["data"]
    assert (finished["task_id"], finished["status"], finished["completed_subtasks"]) == (
        task_id,
        "completed",
        12,
    )
    assert finished["images"] == 12 and finished["duration_seconds"] > 0


async def test_the_all_tasks_stream_sees_each_change(start_api: ApiFactory) -> None:
    """A new task shows up as progress; its cancel gives progress then finished (canceled)."""
    api = await start_api(FAST_EVENTS)
    events: list[dict[str, Any]] = []
    opened = anyio.Event()

    def over(seen: list[dict[str, Any]]) -> bool:
        return seen[-1]["event"] == "task.finished"

    async with anyio.create_task_group() as group:
        group.start_soon(lambda: collect(api, "/v1/events", into=events, opened=opened, until=over))
        with anyio.fail_after(10):
            await opened.wait()
        task_id = await submit(api, 2, "first")

        async def seen_pending() -> bool:
            return bool(events)

        await wait_until(seen_pending)
        async with api.client.post(f"/v1/tasks/{task_id}/cancel") as response:
            assert response.status == 200
    assert [(e["event"], e["data"]["task_id"], e["data"]["status"]) for e in events] == [
        ("task.progress", task_id, "pending"),
        ("task.progress", task_id, "canceled"),
        ("task.finished", task_id, "canceled"),
    ]


async def test_a_finished_task_is_reported_at_once(api: Api) -> None:
    """Following a task that is already over: one finished event, then the stream closes."""
    task_id = await submit(api, 3)
    async with api.client.post(f"/v1/tasks/{task_id}/cancel") as response:
        assert response.status == 200
    events = await collect(api, f"/v1/events?task={task_id}")
    assert [(e["event"], e["data"]["status"]) for e in events] == [("task.finished", "canceled")]


async def test_unknown_task_is_404_and_bad_parameter_400(api: Api) -> None:
    """?task= must name an existing task."""
    async with api.client.get("/v1/events?task=999999") as response:
        assert response.status == 404
    async with api.client.get("/v1/events?task=x") as response:
        assert response.status == 400
        assert (await response.json())["error"]["field"] == "task"


async def test_streams_beyond_the_cap_are_refused(start_api: ApiFactory) -> None:
    """[api] max_event_streams = 1: a second stream gets 503 while the first is open."""
    api = await start_api({"api": {"max_event_streams": 1, "events_interval": 0.05}})
    over = await submit(api, 1)
    async with api.client.post(f"/v1/tasks/{over}/cancel") as response:
        assert response.status == 200
    async with api.client.get("/v1/events") as first:
        assert first.status == 200
        async with api.client.get("/v1/events") as second:
            assert second.status == 503
            assert "too many event streams" in (await second.json())["error"]["message"]

    # Once the first one closed, its slot is free again (this stream ends by itself).
    async def reopened() -> bool:
        async with api.client.get(f"/v1/events?task={over}") as response:
            assert response.status in (200, 503)
            return response.status == 200

    await wait_until(reopened)


async def test_a_stream_ends_after_its_time(start_api: ApiFactory) -> None:
    """[api] event_stream_seconds bounds how long one stream lives."""
    api = await start_api({"api": {"event_stream_seconds": 0.3, "events_interval": 0.05}})
    with anyio.fail_after(10):
        async with api.client.get("/v1/events") as response:
            body = await response.read()
    assert body == b"retry: 3000\n\n"  # primed, nothing happened, closed on time
