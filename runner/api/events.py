"""GET /v1/events: task progress and task finished as Server-Sent Events.

Each stream polls the tasks table itself (one indexed query per `events_interval`), which
keeps the server stateless; `max_event_streams` bounds the load, `event_stream_seconds`
the life of one stream (clients reconnect, as EventSource does on its own).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta

import anyio
from aiohttp import web

from runner.api.context import CONFIG, STORE, STREAMS
from runner.api.errors import ApiError
from runner.api.feed import FINAL, FeedEvent, TaskFeed, finished_data, sse_frame
from runner.api.params import MAX_ID, int_param

log = logging.getLogger(__name__)
routes = web.RouteTableDef()

# A task finished in a transaction that began this long before it committed still shows.
SLACK = timedelta(seconds=60)
KEEPALIVE = 15.0  # seconds of silence before a comment line keeps proxies from closing
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@contextlib.contextmanager
def _slot(app: web.Application) -> Iterator[None]:
    streams = app[STREAMS]
    if streams[0] >= app[CONFIG].api.max_event_streams:
        raise ApiError(503, "too many event streams open; try again later")
    streams[0] += 1
    try:
        yield
    finally:
        streams[0] -= 1


@routes.get("/v1/events")
async def events(request: web.Request) -> web.StreamResponse:
    """Stream task.progress and task.finished; `?task=ID` follows one task until it finishes."""
    task_id = int_param(request.query, "task", default=None, low=1, high=MAX_ID)
    store = request.app[STORE]
    if task_id is not None and await store.task_header(task_id) is None:
        raise ApiError(404, f"task {task_id}: not found")
    with _slot(request.app):
        response = web.StreamResponse(
            headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"}
        )
        await response.prepare(request)
        with contextlib.suppress(ConnectionError):
            try:
                await _stream(request, response, task_id)
            except ConnectionError:
                raise
            except Exception as exc:
                # The status line is sent: end the stream; the client reconnects.
                log.warning("event stream ended: %s", type(exc).__name__)
        return response


async def _stream(request: web.Request, response: web.StreamResponse, task_id: int | None) -> None:
    settings = request.app[CONFIG].api
    store = request.app[STORE]
    feed = TaskFeed()
    # Following one task: look it up whatever its age; all tasks: only recent changes.
    since = EPOCH if task_id is not None else datetime.now(UTC) - SLACK
    seq, quiet_since = 0, time.monotonic()
    with anyio.move_on_after(settings.event_stream_seconds):
        now, rows = await store.task_changes(since, task_id=task_id)
        feed.update(rows)
        # Sent once the stream knows where things stand: every change after this is an event.
        await response.write(b"retry: 3000\n\n")
        if task_id is not None and rows and rows[0]["status"] in FINAL:
            # Already over: say so at once and end, so a script waiting on it can go on.
            finished = FeedEvent("task.finished", task_id, finished_data(rows[0]))
            await response.write(sse_frame(finished, 1))
            return
        while True:
            await anyio.sleep(settings.events_interval)
            if request.transport is None or request.transport.is_closing():
                return  # the client left: free the slot now, not at the next write
            since = now - SLACK if task_id is None else EPOCH
            now, rows = await store.task_changes(since, task_id=task_id)
            for event in feed.update(rows):
                seq += 1
                await response.write(sse_frame(event, seq))
                quiet_since = time.monotonic()
                if task_id is not None and event.event == "task.finished":
                    return
            if time.monotonic() - quiet_since > KEEPALIVE:
                await response.write(b": keepalive\n\n")
                quiet_since = time.monotonic()
