"""A client that never completes a request, or sits idle, is cut off; requests still work."""

from __future__ import annotations

import json
import time

import anyio
import pytest
from anyio.abc import SocketStream

from tests.api.conftest import ApiFactory
from tests.api.test_events import FAST_EVENTS, submit

pytestmark = pytest.mark.anyio

IDLE = 0.5  # seconds: the server's idle timeout in these tests (15 s in production)
DEADLINE = 10.0  # seconds a test waits for the server to cut a connection


async def connect(url: str) -> SocketStream:
    """A raw TCP connection to the API at `url`."""
    host, port = url.removeprefix("http://").split(":")
    return await anyio.connect_tcp(host, int(port))


async def closed_by_server(stream: SocketStream) -> bool:
    """Whether the server closed `stream` (end of stream, or a reset)."""
    try:
        return await stream.receive() == b""
    except (anyio.EndOfStream, anyio.BrokenResourceError, ConnectionResetError):
        return True


async def test_a_request_whose_headers_trickle_in_is_cut_off(start_api: ApiFactory) -> None:
    """A slowloris: a header line every 0.1 s, never the blank line. Closed after IDLE."""
    api = await start_api(idle_timeout=IDLE)
    started = time.monotonic()
    async with await connect(api.url) as stream:
        await stream.send(b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n")
        with anyio.fail_after(DEADLINE):
            while True:
                with anyio.move_on_after(0.1):
                    assert await closed_by_server(stream)  # no answer: the request is unfinished
                    break
                try:
                    await stream.send(b"X-Slow: 1\r\n")
                except (anyio.BrokenResourceError, ConnectionResetError):
                    break
    assert time.monotonic() - started >= IDLE * 0.9


async def test_requests_are_answered_and_an_idle_connection_is_closed(
    start_api: ApiFactory,
) -> None:
    """A whole request is answered on the same connection; then, idle, it is closed."""
    api = await start_api(idle_timeout=IDLE)
    async with await connect(api.url) as stream:
        await stream.send(
            b"GET /v1/status HTTP/1.1\r\nHost: localhost\r\n"
            + f"Authorization: Bearer {api.token}\r\n\r\n".encode()
        )
        with anyio.fail_after(DEADLINE):
            head = await stream.receive()
            assert head.startswith(b"HTTP/1.1 200"), head[:80]
            while not await closed_by_server(stream):
                pass  # the rest of the body, then the close


async def test_an_event_stream_outlives_the_idle_timeout(start_api: ApiFactory) -> None:
    """A response in progress is not idle: a quiet /v1/events stream still delivers later."""
    api = await start_api(FAST_EVENTS, idle_timeout=IDLE)
    async with api.client.get("/v1/events") as response:
        assert response.status == 200
        with anyio.move_on_after(4 * IDLE):  # quiet past the idle timeout, several times over
            while True:
                line = await response.content.readline()  # b"": the server closed the stream
                assert line and not line.startswith(b"data:"), line
        task_id = await submit(api, 1, "after the quiet")
        with anyio.fail_after(DEADLINE):
            line = await response.content.readline()
            while not line.startswith(b"data:"):
                line = await response.content.readline()
    assert json.loads(line.removeprefix(b"data:"))["task_id"] == task_id
