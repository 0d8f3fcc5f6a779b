"""A sim that moves: an rpm token bucket, a capacity schedule, and live changes over HTTP."""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import subprocess
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import aiohttp
import anyio
import pytest

from tests.workers.conftest import sim_stats
from workers.headers import RateLimitInfo, parse_ratelimit
from workers.sim import RunningSim, SimConfig, running
from workers.sim.capacity import CapacityModel
from workers.sim.ratelimit import TokenBucket
from workers.sim.schedule import ScheduleCursor, parse_schedule
from workers.sim.state import STATE

pytestmark = pytest.mark.anyio

PROMPT = {"prompt": "a fox"}


class FakeClock:
    """A monotonic clock the test moves by hand."""

    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        """The current fake time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move time forward."""
        self.now += seconds


ClockedSim = Callable[..., Awaitable[RunningSim]]


@pytest.fixture
async def clocked_sim() -> AsyncIterator[ClockedSim]:
    """Start sims on port 0 driven by a given clock; all stop at test end."""
    async with contextlib.AsyncExitStack() as stack:

        async def start(clock: Callable[[], float] | None = None, **overrides: Any) -> RunningSim:
            config = SimConfig(**{"port": 0, "service_ms": 0.0, **overrides})
            return await stack.enter_async_context(running(config, clock=clock))

        yield start


async def wait_until(condition: Callable[[], Awaitable[bool]], timeout: float = 5.0) -> None:
    """Poll an async condition until true; fail at the deadline."""
    with anyio.fail_after(timeout):
        while not await condition():
            await anyio.sleep(0.005)


# --- the token bucket, pure -------------------------------------------------------------


def test_bucket_spends_a_minute_of_burst_then_refills_at_rpm() -> None:
    """60 rpm: 60 requests at once, then one a second; Retry-After counts to the next token."""
    bucket = TokenBucket(60, now=0.0)
    assert [bucket.take(0.0) for _ in range(60)] == [None] * 60
    assert bucket.take(0.0) == 1  # one token every second at 60 rpm
    assert bucket.take(0.5) == 1  # half a token: still a whole second, rounded up
    assert bucket.take(1.0) is None
    assert bucket.remaining(1.0) == 0
    assert bucket.reset_seconds(1.0) == pytest.approx(60.0)  # 60 tokens short at 1/s
    assert bucket.remaining(31.0) == 30
    assert bucket.remaining(10_000.0) == 60  # never beyond the burst


def test_slow_bucket_retry_after_and_headers() -> None:
    """3 rpm: one token per 20 s; headers say limit, remaining and time until full."""
    bucket = TokenBucket(3, now=0.0)
    assert bucket.headers(0.0) == {
        "x-ratelimit-limit-requests": "3",
        "x-ratelimit-remaining-requests": "3",
        "x-ratelimit-reset-requests": "0ms",
    }
    for _ in range(3):
        assert bucket.take(0.0) is None
    assert bucket.take(0.0) == 20
    assert bucket.take(5.0) == 15
    assert bucket.headers(5.0)["x-ratelimit-reset-requests"] == "55s"


def test_bucket_rate_changes_keep_tokens_and_ignore_a_clock_stepping_back() -> None:
    """Lowering rpm caps saved tokens at the new burst; time going back mints nothing."""
    bucket = TokenBucket(100, now=0.0)
    bucket.set_rpm(10, now=0.0)
    assert bucket.remaining(0.0) == 10
    for _ in range(10):
        bucket.take(0.0)
    assert bucket.remaining(-50.0) == 0
    assert bucket.remaining(6.0) == 1  # 10 rpm: a token every 6 s
    with pytest.raises(ValueError, match="rpm"):
        TokenBucket(0, now=0.0)


# --- the schedule, pure -----------------------------------------------------------------


def test_schedule_parses_and_hands_out_each_step_once() -> None:
    """Steps come due by time since start; a jump past several gives the latest."""
    steps = parse_schedule(" 0:40, 60:10 ,120:40,130.5:7")
    assert steps == ((0.0, 40), (60.0, 10), (120.0, 40), (130.5, 7))
    cursor = ScheduleCursor(steps, start=500.0)
    assert cursor.due(500.0) == 40
    assert cursor.due(500.0) is None  # handed out once
    assert cursor.next_at() == 560.0
    assert cursor.due(559.9) is None
    assert cursor.due(560.0) == 10
    assert cursor.due(700.0) == 7  # 120 and 130.5 both passed: the latest wins
    assert cursor.next_at() is None


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("0:40,x", "'x' is not SECONDS:SLOTS"),
        ("0:40,60", "'60' is not SECONDS:SLOTS"),
        ("0:40,60:ten", "is not SECONDS:SLOTS"),
        ("60:10,0:40", "ascending"),
        ("0:10,0:20", "ascending"),
        ("-1:10", "ascending seconds from 0"),
        ("nan:10", "ascending"),
        ("inf:10", "ascending"),
        ("0:0", "slots must be 1..100000"),
        ("0:100001", "slots must be"),
        (",".join(f"{i}:1" for i in range(1001)), "more than 1000 steps"),
        ("0:1," * 10_000, "longer than"),
    ],
)
def test_schedule_rejects_bad_text(text: str, message: str) -> None:
    """Every malformed schedule fails with a message naming the problem."""
    with pytest.raises(ValueError, match=re.escape(message)):
        parse_schedule(text)


# --- the capacity model resized live ------------------------------------------------------


async def test_lowered_capacity_lets_running_jobs_finish_and_holds_newcomers() -> None:
    """2 → 1 slot with two jobs running: a third starts only once both have finished."""
    model = CapacityModel(capacity=2, queue_limit=5, service_ms=0, sigma=0.1, seed=0)
    release = [anyio.Event() for _ in range(3)]
    started = [anyio.Event() for _ in range(3)]

    async def job(index: int) -> None:
        async with model.slot():
            started[index].set()
            await release[index].wait()

    async with anyio.create_task_group() as tg:
        for index in range(2):
            tg.start_soon(job, index)
            await started[index].wait()
        model.reconfigure(capacity=1, queue_limit=5, service_ms=0)
        tg.start_soon(job, 2)
        await wait_until(lambda: _true(model.waiting == 1))
        release[0].set()
        await wait_until(lambda: _true(model.busy == 1))
        assert not started[2].is_set()  # one running job already fills the single slot
        release[1].set()
        await started[2].wait()
        assert (model.busy, model.waiting, model.capacity) == (1, 0, 1)
        release[2].set()
    assert model.admitted == 0


async def _true(value: bool) -> bool:
    return value


# --- rpm over HTTP --------------------------------------------------------------------------


async def test_rpm_limit_answers_429_with_openai_headers_until_time_refills_it(
    clocked_sim: ClockedSim, session: aiohttp.ClientSession
) -> None:
    """--rpm 3: three requests pass (remaining 2, 1, 0), the fourth is 429 + Retry-After 20."""
    clock = FakeClock()
    sim = await clocked_sim(clock, rpm=3)
    url = f"{sim.url}/v1/images/generations"
    remaining = []
    for _ in range(3):
        async with session.post(url, json=PROMPT) as resp:
            assert resp.status == 200
            remaining.append(resp.headers["x-ratelimit-remaining-requests"])
    assert remaining == ["2", "1", "0"]
    async with session.post(url, json=PROMPT) as resp:
        assert resp.status == 429
        assert resp.headers["Retry-After"] == "20"  # 3 a minute: one every 20 s
        assert parse_ratelimit(resp.headers) == RateLimitInfo(remaining=0, limit=3, reset=60.0)
    clock.advance(20)
    async with session.post(url, json=PROMPT) as resp:
        assert resp.status == 200
    clock.advance(60)
    # Every API response carries the budget: a poll of an unknown job and an unknown path too.
    for path in ("/v1/tasks/nope", "/no/such/route"):
        async with session.get(f"{sim.url}{path}") as resp:
            assert resp.status == 404
            assert parse_ratelimit(resp.headers) == RateLimitInfo(remaining=3, limit=3, reset=0.0)
    stats = await sim_stats(session, sim)
    assert (stats["rate_limited"], stats["completed"], stats["requests"]) == (1, 4, 7)


async def test_without_rpm_there_are_no_ratelimit_headers(
    sim: RunningSim, session: aiohttp.ClientSession
) -> None:
    """The headers describe a budget; with no rpm set there is none to describe."""
    async with session.post(f"{sim.url}/v1/images/generations", json=PROMPT) as resp:
        assert resp.status == 200
        assert parse_ratelimit(resp.headers) is None


# --- the capacity schedule over HTTP ---------------------------------------------------------


async def test_schedule_moves_capacity_and_wakes_queued_requests(
    clocked_sim: ClockedSim, session: aiohttp.ClientSession
) -> None:
    """ "0:1,10:2": one slot at first (a second request queues), two after 10 s (it starts)."""
    clock = FakeClock()
    sim = await clocked_sim(
        clock, capacity_schedule=((0.0, 1), (10.0, 2)), queue_limit=1, service_ms=60_000
    )
    assert (await _config(session, sim))["capacity"] == 1
    url = f"{sim.url}/v1/images/generations"
    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(_post, session, url)
        await wait_until(lambda: _busy_queued(session, sim, (1, 1)))
        async with session.post(url, json=PROMPT) as resp:
            assert resp.status == 429  # 1 slot + 1 queued: full
        clock.advance(10)
        await wait_until(lambda: _busy_queued(session, sim, (2, 0)))
        assert (await _config(session, sim))["capacity"] == 2
        tg.cancel_scope.cancel()


async def test_schedule_steps_apply_on_time_without_any_traffic(
    clocked_sim: ClockedSim,
) -> None:
    """The sim follows its schedule by itself: a step 50 ms in lands with no request made."""
    sim = await clocked_sim(None, capacity=4, capacity_schedule=((0.05, 9),))
    state = sim.app[STATE]
    assert state.capacity.capacity == 4
    await wait_until(lambda: _true(state.capacity.capacity == 9))
    assert state.config.capacity == 9


async def _post(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url, json=PROMPT) as resp:
        await resp.read()


async def _busy_queued(
    session: aiohttp.ClientSession, sim: RunningSim, expected: tuple[int, int]
) -> bool:
    stats = await sim_stats(session, sim)
    return (stats["busy"], stats["queued"]) == expected


async def _config(session: aiohttp.ClientSession, sim: RunningSim) -> dict[str, Any]:
    async with session.get(f"{sim.url}/_sim/config") as resp:
        assert resp.status == 200
        return dict(await resp.json())


# --- POST /_sim/config ------------------------------------------------------------------------


async def _set(session: aiohttp.ClientSession, sim: RunningSim, body: Any) -> tuple[int, Any]:
    data = body if isinstance(body, bytes) else json.dumps(body).encode()
    async with session.post(f"{sim.url}/_sim/config", data=data) as resp:
        return resp.status, await resp.json()


async def test_live_config_changes_behaviour_at_once(
    clocked_sim: ClockedSim, session: aiohttp.ClientSession
) -> None:
    """Each live key takes effect on the next request, and GET shows the settings."""
    clock = FakeClock()
    sim = await clocked_sim(clock)
    url = f"{sim.url}/v1/images/generations"
    status, settings = await _set(session, sim, {"rpm": 1, "capacity": 3, "queue_limit": 0})
    assert status == 200
    assert settings == {
        "capacity": 3,
        "service_ms": 0.0,
        "queue_limit": 0,
        "rpm": 1,
        "error_rate": 0.0,
        "rate_limit_rate": 0.0,
    }
    assert await _config(session, sim) == settings
    for expected in (200, 429):  # a budget of one request a minute
        async with session.post(url, json=PROMPT) as resp:
            assert resp.status == expected
    assert (await _set(session, sim, {"rpm": 0, "error_rate": 1.0}))[0] == 200
    async with session.post(url, json=PROMPT) as resp:
        assert resp.status == 500
        assert parse_ratelimit(resp.headers) is None
    assert (await _set(session, sim, {"error_rate": 0, "rate_limit_rate": 1}))[0] == 200
    async with session.post(url, json=PROMPT) as resp:
        assert resp.status == 429
    stats = await sim_stats(session, sim)
    assert stats["faults"]["error"] == 1 and stats["faults"]["rate_limit"] == 1


async def test_live_service_time_and_capacity_shape_admission(
    clocked_sim: ClockedSim, session: aiohttp.ClientSession
) -> None:
    """capacity 1, queue 0, long service: a second request is refused until capacity grows."""
    sim = await clocked_sim(FakeClock(), capacity=1, queue_limit=0)
    assert (await _set(session, sim, {"service_ms": 60_000}))[0] == 200
    url = f"{sim.url}/v1/images/generations"
    async with anyio.create_task_group() as tg:
        tg.start_soon(_post, session, url)
        await wait_until(lambda: _busy_queued(session, sim, (1, 0)))
        async with session.post(url, json=PROMPT) as resp:
            assert resp.status == 429
        assert (await _set(session, sim, {"capacity": 2}))[0] == 200
        tg.start_soon(_post, session, url)
        await wait_until(lambda: _busy_queued(session, sim, (2, 0)))
        tg.cancel_scope.cancel()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"capacity": 0}, "capacity: Input should be greater than or equal to 1"),
        ({"capacity": 100_001}, "capacity: Input should be less than or equal to 100000"),
        ({"capacity": True}, "capacity: Input should be a valid integer"),
        ({"capacity": 2.5}, "capacity: Input should be a valid integer"),
        ({"capacity": "4"}, "capacity: Input should be a valid integer"),
        ({"capacity": None}, "capacity: must be a number, not null"),
        ({"service_ms": -1}, "service_ms: Input should be greater than or equal to 0"),
        ({"queue_limit": -1}, "queue_limit: Input should be greater than or equal to 0"),
        ({"rpm": -5}, "rpm: Input should be greater than or equal to 0"),
        ({"error_rate": 1.5}, "error_rate: Input should be less than or equal to 1"),
        ({"error_rate": 0.7, "rate_limit_rate": 0.7}, "the four fault rates add up to 1.4"),
        ({"hang_rate": 1}, "hang_rate: unknown setting (allowed: capacity, service_ms"),
        ([1, 2], "body must be a JSON object"),
        ("capacity", "body must be a JSON object"),
        (b"{not json", "body is not JSON"),
        (b"\xff\xfe", "body is not JSON"),
        (b"NaN", "body must be a JSON object"),
        (b'{"service_ms": NaN}', "service_ms: Input should be a finite number"),
        (b"[" * 2000 + b"]" * 2000, "body is not JSON"),  # deeper than json recurses
    ],
)
async def test_live_config_rejects_bad_bodies_and_changes_nothing(
    clocked_sim: ClockedSim, session: aiohttp.ClientSession, body: Any, message: str
) -> None:
    """400 with one line naming the problem; the settings stay as they were."""
    sim = await clocked_sim(FakeClock(), capacity=5)
    before = await _config(session, sim)
    status, answer = await _set(session, sim, body)
    assert status == 400
    assert answer["error"]["message"].startswith(message)
    assert "\n" not in answer["error"]["message"]
    assert await _config(session, sim) == before


async def test_live_config_body_is_bounded_in_size(
    sim: RunningSim, session: aiohttp.ClientSession
) -> None:
    """More than 4 KiB is refused with 413, announced by Content-Length or streamed chunked."""
    padded = json.dumps({"capacity": 2, "pad": "x" * 5000}).encode()
    async with session.post(f"{sim.url}/_sim/config", data=padded) as resp:
        assert resp.status == 413

    async def chunks() -> AsyncIterator[bytes]:
        for _ in range(10):
            yield b" " * 1000

    async with session.post(f"{sim.url}/_sim/config", data=chunks()) as resp:
        assert resp.status == 413
    assert (await _config(session, sim))["capacity"] == 8


async def test_live_config_body_is_bounded_in_time(clocked_sim: ClockedSim) -> None:
    """A client that announces a body and never finishes sending it gets 408, not a stuck task."""
    sim = await clocked_sim(None, admin_body_timeout_s=0.2)
    reader, writer = await asyncio.open_connection("127.0.0.1", sim.port)
    try:
        writer.write(
            b"POST /_sim/config HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 100\r\n\r\n{"capacity":'
        )
        await writer.drain()
        with anyio.fail_after(5):
            status_line = await reader.readline()
        assert status_line.split()[1] == b"408"
    finally:
        writer.close()


# --- completed, across both protocols and many clients ------------------------------------------


async def test_completed_counts_images_of_finished_generations(
    sim: RunningSim, session: aiohttp.ClientSession
) -> None:
    """n=3 via OpenAI, batch_size=2 via lumina: completed 5; max_in_flight spans clients."""
    async with session.post(
        f"{sim.url}/v1/images/generations", json={**PROMPT, "n": 3, "response_format": "b64_json"}
    ) as resp:
        assert resp.status == 200
    async with session.post(f"{sim.url}/v1/tasks", json={**PROMPT, "batch_size": 2}) as resp:
        job = (await resp.json())["task_uuid"]

    async def job_done() -> bool:
        async with session.get(f"{sim.url}/v1/tasks/{job}") as resp:
            return bool((await resp.json())["status"] == "succeeded")

    await wait_until(job_done)
    stats = await sim_stats(session, sim)
    assert stats["completed"] == 5
    async with session.post(f"{sim.url}/_sim/reset") as resp:
        assert resp.status == 200
    assert (await sim_stats(session, sim))["completed"] == 0


async def test_max_in_flight_is_the_high_water_mark_across_clients(
    clocked_sim: ClockedSim,
) -> None:
    """Three separate client sessions, one request each, held at once: max_in_flight is 3."""
    sim = await clocked_sim(None, capacity=1, queue_limit=5, service_ms=60_000)
    url = f"{sim.url}/v1/images/generations"
    async with contextlib.AsyncExitStack() as stack:
        clients = [await stack.enter_async_context(aiohttp.ClientSession()) for _ in range(3)]
        async with anyio.create_task_group() as tg:
            for client in clients:
                tg.start_soon(_post, client, url)
            await wait_until(lambda: _busy_queued(clients[0], sim, (1, 2)))
            tg.cancel_scope.cancel()
        stats = await sim_stats(clients[0], sim)
    assert stats["max_in_flight"] == 3


# --- the command line -----------------------------------------------------------------------------


def test_cli_sim_serves_rpm_and_schedule_from_flags() -> None:
    """`imgrun sim --rpm 2 --capacity-schedule 0:3` on port 0: the flags reach the server."""
    flags = ["--port", "0", "--rpm", "2", "--capacity-schedule", "0:3,3600:1", "--service-ms", "0"]
    proc = subprocess.Popen(
        [sys.executable, "-m", "runner", "sim", *flags],
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stderr is not None
        url = _listening_url(proc.stderr)
        anyio.run(_check_cli_sim, url)
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def _listening_url(stream: Any) -> str:
    # The sim logs its URL once listening; a bounded number of lines, each read blocking until
    # the process writes or exits (the test's timeout guards a silent hang).
    for _ in range(50):
        line = stream.readline()
        if match := re.search(r"sim listening on (http://127\.0\.0\.1:\d+)", line):
            return match[1]
        if not line:
            break
    raise AssertionError("imgrun sim never reported its address")


async def _check_cli_sim(url: str) -> None:
    async with aiohttp.ClientSession() as session:
        async with session.get(f"{url}/_sim/config") as resp:
            settings = await resp.json()
        assert (settings["capacity"], settings["rpm"]) == (3, 2)
        statuses = []
        for _ in range(3):
            async with session.post(f"{url}/v1/images/generations", json=PROMPT) as resp:
                statuses.append(resp.status)
        assert statuses == [200, 200, 429]


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (["--capacity-schedule", "0:40,soon"], "capacity schedule: 'soon' is not SECONDS:SLOTS"),
        (["--capacity-schedule", "60:4,30:2"], "ascending"),
        (["--error-rate", "0.6", "--hang-rate", "0.6"], "fault rates add up to 1.2"),
    ],
)
def test_cli_sim_rejects_bad_flags_in_one_line(flags: list[str], message: str) -> None:
    """Bad flags: exit 2, one line naming the problem, no traceback, nothing served."""
    done = subprocess.run(
        [sys.executable, "-m", "runner", "sim", "--port", "0", *flags],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
