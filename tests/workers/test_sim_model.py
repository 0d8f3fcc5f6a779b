"""The sim's capacity model, stats, determinism and lifecycle."""

from __future__ import annotations

import hashlib
import statistics
import time
from typing import Any

import aiohttp
import anyio
import pytest

from tests.workers.conftest import SimFactory, sim_stats
from tests.workers.helpers import queue, request, standard
from workers.errors import PermanentError
from workers.providers import QueueProvider, RequestRetryPolicy
from workers.sim import RunningSim, SimConfig, serve
from workers.sim.capacity import CapacityModel, QueueFull

pytestmark = pytest.mark.anyio


async def wait_until(predicate_coro, timeout: float = 5.0) -> None:  # type: ignore[no-untyped-def]
    """Poll an async predicate until true, failing after `timeout` seconds."""
    with anyio.fail_after(timeout):
        while not await predicate_coro():
            await anyio.sleep(0.005)


def test_service_time_is_lognormal_around_the_mean() -> None:
    """Seeded draws average service_ms per image and repeat for the same seed."""

    def draws(seed: int) -> list[float]:
        model = CapacityModel(capacity=1, queue_limit=0, service_ms=200, sigma=0.35, seed=seed)
        return [model.service_seconds(1) for _ in range(4000)]

    assert statistics.fmean(draws(1)) == pytest.approx(0.2, rel=0.05)
    assert draws(1) == draws(1) != draws(2)
    zero = CapacityModel(capacity=1, queue_limit=0, service_ms=0, sigma=0.35, seed=0)
    assert zero.service_seconds(5) == 0.0


def test_admission_counts_busy_and_waiting() -> None:
    """capacity + queue_limit places; the next is refused with a Retry-After estimate."""
    model = CapacityModel(capacity=2, queue_limit=1, service_ms=1500, sigma=0.1, seed=0)
    tickets = [model.enter_queue() for _ in range(3)]
    with pytest.raises(QueueFull) as caught:
        model.enter_queue()
    assert caught.value.retry_after == 3  # 3 jobs × 1.5 s over 2 slots, rounded up
    tickets[0].leave_queue()
    tickets[0].leave_queue()  # idempotent
    model.enter_queue()


async def test_full_queue_answers_429_with_retry_after(
    sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    """capacity=1, queue_limit=1: the third concurrent request gets 429 + Retry-After."""
    sim = await sim_factory(capacity=1, queue_limit=1, service_ms=5_000)
    url = f"{sim.url}/v1/images/generations"
    async with anyio.create_task_group() as tg:
        for _ in range(2):
            tg.start_soon(_generate, session, url)
        await wait_until(lambda: _in_flight_is(session, sim, 2))
        async with session.post(url, json={"prompt": "x"}) as resp:
            assert resp.status == 429
            assert int(resp.headers["Retry-After"]) >= 1
            assert (await resp.json())["error"]["code"] == "rate_limit_exceeded"
        tg.cancel_scope.cancel()
    assert (await sim_stats(session, sim))["rate_limited"] == 1


async def _generate(session: aiohttp.ClientSession, url: str) -> None:
    async with session.post(url, json={"prompt": "x"}) as resp:
        await resp.read()


async def _in_flight_is(session: aiohttp.ClientSession, sim: RunningSim, n: int) -> bool:
    stats = await sim_stats(session, sim)
    return bool(stats["busy"] + stats["queued"] == n)


async def test_latency_grows_with_queueing(
    sim_factory: SimFactory, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """One slot, 40 ms per image: four concurrent requests take about four service times."""
    sim = await sim_factory(capacity=1, service_ms=40, service_sigma=0.01)
    provider = standard(sim, session, fast_retry)
    started = time.perf_counter()
    async with anyio.create_task_group() as tg:
        for subtask in range(4):
            tg.start_soon(provider.generate, request(subtask))
    assert time.perf_counter() - started >= 0.15
    assert (await sim_stats(session, sim))["max_in_flight"] == 4


async def test_stats_count_keys_and_reset(
    sim: RunningSim, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """by_key counts each Idempotency-Key, generated_by_key each generation; reset zeroes."""
    provider = standard(sim, session, fast_retry)
    await provider.generate(request(1))
    await provider.generate(request(1))
    await provider.generate(request(2, attempt=1))
    stats = await sim_stats(session, sim)
    assert stats["by_key"] == {"imgrun-1-0": 2, "imgrun-2-1": 1}
    # Each answered generation counts under its key: the repeat of key 1-0 generated twice.
    assert stats["generated_by_key"] == {"imgrun-1-0": 2, "imgrun-2-1": 1}
    assert stats["requests"] == 3 and stats["images"] == 3
    async with session.post(f"{sim.url}/_sim/reset") as resp:
        assert resp.status == 200
    stats = await sim_stats(session, sim)
    assert (stats["requests"], stats["by_key"], stats["max_in_flight"]) == (0, {}, 0)


async def test_same_prompt_and_seed_give_the_same_png(
    sim_factory: SimFactory, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """Deterministic across requests and across sim instances; seed and polish change it."""
    first, second = await sim_factory(), await sim_factory(seed=99)

    async def digest(sim: RunningSim, **fields: Any) -> str:
        images = await standard(sim, session, fast_retry).generate(request(**fields))
        return hashlib.sha256(images[0]).hexdigest()

    assert await digest(first) == await digest(first, subtask_id=5) == await digest(second)
    assert await digest(first, seed=43) != await digest(first)
    assert await digest(first, polish=True) != await digest(first)


async def test_hung_requests_do_not_block_shutdown(session: aiohttp.ClientSession) -> None:
    """serve() on port 0 reports its port; cancelling it ends promptly despite hung handlers."""
    ready = anyio.Event()
    port = 0

    def on_ready(bound: int) -> None:
        nonlocal port
        port = bound
        ready.set()

    url = ""
    with anyio.fail_after(5):
        async with anyio.create_task_group() as tg:
            tg.start_soon(lambda: serve(SimConfig(port=0, hang_rate=1.0), ready=on_ready))
            await ready.wait()
            url = f"http://127.0.0.1:{port}"
            tg.start_soon(_generate, session, f"{url}/v1/images/generations")
            await wait_until(lambda: _hangs(session, url))
            tg.cancel_scope.cancel()
    with pytest.raises(aiohttp.ClientConnectionError):
        await _hangs(session, url)


async def _hangs(session: aiohttp.ClientSession, url: str) -> bool:
    async with session.get(f"{url}/_sim/stats") as resp:
        return bool((await resp.json())["faults"]["hang"] == 1)


@pytest.mark.parametrize(
    ("overrides", "message"),
    [
        ({"error_rate": 1.5}, "error_rate"),
        ({"error_rate": 0.6, "hang_rate": 0.6}, "fault rates add up"),
        ({"capacity": 0}, "capacity"),
        ({"port": -1}, "port"),
    ],
)
def test_config_rejects_impossible_values(overrides: dict[str, Any], message: str) -> None:
    """Bad flags fail at construction with a message naming the field."""
    with pytest.raises(ValueError, match=message):
        SimConfig(**overrides)


async def test_finished_jobs_are_forgotten_beyond_the_cap(
    sim_factory: SimFactory, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """max_jobs_kept bounds memory: the oldest finished job 404s, the newest still polls."""
    sim = await sim_factory(max_jobs_kept=3)
    provider = queue(sim, session, fast_retry)
    ids = []
    for subtask in range(5):
        ids.append(await provider.submit(request(subtask)))
        await wait_until(lambda: _succeeded(provider, ids[-1]))
    assert (await provider.poll(ids[-1])).state == "succeeded"
    with pytest.raises(PermanentError, match="404"):
        await provider.poll(ids[0])


async def _succeeded(provider: QueueProvider, external_id: str) -> bool:
    return (await provider.poll(external_id)).state == "succeeded"
