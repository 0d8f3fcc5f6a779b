"""The polling worker against the sim's lumina protocol: submit, persist, poll, fetch, resume."""

from __future__ import annotations

import dataclasses
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web

from tests.workers.conftest import RecordingSleep, ServeApp, SimFactory, sim_stats
from tests.workers.helpers import queue, request
from workers.errors import Canceled, PermanentError, ProviderTimeout, TransientError
from workers.polling import PollSettings, run_polling
from workers.providers import (
    JobStatus,
    ProviderConfig,
    QueueProvider,
    RequestRetryPolicy,
    build_provider,
)
from workers.sim import RunningSim
from workers.sim.render import render_png
from workers.storage import ImageStore
from workers.types import ImageRequest

pytestmark = pytest.mark.anyio

FAST = PollSettings(polling_interval=0.01, max_attempts=500, timeout=10.0)


class Recorder:
    """Wraps a QueueProvider and logs the order of calls."""

    def __init__(self, inner: QueueProvider) -> None:
        self.inner = inner
        self.calls: list[str] = []

    async def submit(self, request: ImageRequest) -> str:
        self.calls.append("submit")
        return await self.inner.submit(request)

    async def poll(self, external_id: str) -> JobStatus:
        self.calls.append("poll")
        return await self.inner.poll(external_id)

    async def fetch(self, external_id: str, status: JobStatus) -> list[bytes]:
        self.calls.append("fetch")
        return await self.inner.fetch(external_id, status)

    async def cancel(self, external_id: str) -> None:
        self.calls.append("cancel")
        await self.inner.cancel(external_id)


async def test_submit_persist_poll_fetch_store(
    sim_factory: SimFactory,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """on_submitted runs before the first poll; images land on disk; one submission."""
    sim = await sim_factory(service_ms=30)
    provider = Recorder(queue(sim, session, fast_retry))

    async def on_submitted(external_id: str) -> None:
        provider.calls.append(f"persist {external_id}")

    result = await run_polling(
        provider,
        store,
        request(7, batch_size=2, ratio="3:4"),
        settings=FAST,
        external_id=None,
        on_submitted=on_submitted,
    )
    assert provider.calls[:3] == ["submit", f"persist {result.external_id}", "poll"]
    assert provider.calls[-1] == "fetch"
    assert [(i.width, i.height) for i in result.images] == [(108, 144)] * 2
    assert all(Path(i.path).is_file() for i in result.images)
    assert result.to_json()["polls"] == provider.calls.count("poll")
    stats = await sim_stats(session, sim)
    assert stats["submissions_by_subtask"] == {"7": 1}
    assert stats["by_key"] == {"imgrun-7-0": 1}
    assert stats["generated_by_key"] == {"imgrun-7-0": 1}


async def test_resume_with_external_id_does_not_submit_again(
    sim: RunningSim,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """A restarted runner passes the stored external id; the sim sees one submission only."""
    provider = queue(sim, session, fast_retry)
    external_id = await provider.submit(request(8))

    async def must_not_run(_: str) -> None:
        raise AssertionError("on_submitted called on resume")

    result = await run_polling(
        provider,
        store,
        request(8, attempt=1),
        settings=FAST,
        external_id=external_id,
        on_submitted=must_not_run,
    )
    assert result.external_id == external_id and len(result.images) == 1
    assert (await sim_stats(session, sim))["submissions_by_subtask"] == {"8": 1}


async def test_retried_submit_reuses_the_job(
    sim: RunningSim, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """A repeated Idempotency-Key returns the same job instead of a second one."""
    provider = queue(sim, session, fast_retry)
    first = await provider.submit(request(9))
    assert await provider.submit(request(9)) == first
    assert await provider.submit(request(9, attempt=1)) != first


async def test_failed_jobs_map_to_transient_or_permanent(
    sim_factory: SimFactory,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """A lost worker is worth retrying; a content-policy failure is not."""
    sim = await sim_factory(lumina_fail_rate=1.0)
    provider = queue(sim, session, fast_retry)

    async def ignore(_: str) -> None:
        return None

    with pytest.raises(TransientError, match="worker lost"):
        await run_polling(
            provider, store, request(), settings=FAST, external_id=None, on_submitted=ignore
        )
    with pytest.raises(PermanentError, match="content_policy_violation"):
        await run_polling(
            provider,
            store,
            request(2, prompt="forbidden"),
            settings=FAST,
            external_id=None,
            on_submitted=ignore,
        )


class FakeClock:
    """Monotonic time that only moves when the fake sleep is awaited."""

    def __init__(self) -> None:
        self.now = 0.0
        self.sleep = RecordingSleep()

    def __call__(self) -> float:
        return self.now + sum(self.sleep.delays)


@pytest.mark.parametrize(
    ("settings", "polls"),
    [
        (PollSettings(polling_interval=5, max_attempts=4, timeout=300), 4),
        (PollSettings(polling_interval=5, max_attempts=60, timeout=12), 2),
    ],
)
async def test_slow_job_times_out_by_attempts_or_total_time(
    sim_factory: SimFactory,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
    settings: PollSettings,
    polls: int,
) -> None:
    """A job that outlives max_attempts polls, or the total timeout, is a ProviderTimeout."""
    sim = await sim_factory(service_ms=60_000, capacity=1)
    provider = Recorder(queue(sim, session, fast_retry))
    clock = FakeClock()

    async def ignore(_: str) -> None:
        return None

    with pytest.raises(ProviderTimeout):
        await run_polling(
            provider,
            store,
            request(),
            settings=settings,
            external_id=None,
            on_submitted=ignore,
            sleep=clock.sleep,
            clock=clock,
        )
    assert provider.calls.count("poll") == polls
    assert clock.sleep.delays == [5.0] * polls


async def test_should_stop_cancels_the_provider_job(
    sim_factory: SimFactory,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """should_stop between polls: the job is DELETEd and Canceled raised."""
    sim = await sim_factory(service_ms=60_000, capacity=1)
    provider = queue(sim, session, fast_retry)
    polls = 0

    async def stop_after_two() -> bool:
        nonlocal polls
        polls += 1
        return polls > 2

    async def ignore(_: str) -> None:
        return None

    with pytest.raises(Canceled):
        await run_polling(
            provider,
            store,
            request(),
            settings=FAST,
            external_id=None,
            on_submitted=ignore,
            should_stop=stop_after_two,
        )
    stats = await sim_stats(session, sim)
    assert stats["canceled"] == 1 and stats["busy"] == 0


async def test_transient_poll_errors_do_not_lose_the_job(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """Polls that fail with 500 count as attempts; the next good poll carries on."""
    answers = iter([500, 500, 200])

    async def poll(_: web.Request) -> web.Response:
        if next(answers) == 500:
            return web.json_response({"error": "busy"}, status=500)
        return web.json_response({"status": "completed", "images": ["/img/1.png"]})

    async def image(_: web.Request) -> web.Response:
        return web.Response(body=render_png("x", 1, 0, 8, 8), content_type="image/png")

    app = web.Application()
    app.router.add_get("/v1/tasks/{uuid}", poll)
    app.router.add_get("/img/1.png", image)
    config = ProviderConfig(name="l", type="lumina", base_url=await serve_app(app))
    policy = dataclasses.replace(fast_retry, attempts=1)
    provider = build_provider(config, session, api_key=None, pool="lumina", retry=policy)
    result = await run_polling(
        provider, store, request(), settings=FAST, external_id="job-1", on_submitted=_ignore
    )
    assert result.to_json()["polls"] == 3 and result.images[0].width == 8


async def test_unknown_job_is_permanent(
    sim: RunningSim,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """A 404 on poll (the provider forgot the job) ends the attempt."""
    provider = queue(sim, session, fast_retry)
    with pytest.raises(PermanentError, match="404"):
        await run_polling(
            provider,
            store,
            request(),
            settings=FAST,
            external_id="no-such-job",
            on_submitted=_ignore,
        )


async def _ignore(_: str) -> None:
    return None


async def test_worker_cancelled_by_the_runner_leaves_the_job_alone(
    sim_factory: SimFactory,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """Runner shutdown (task cancellation) must not cancel the provider job: it resumes later."""
    sim = await sim_factory(service_ms=60_000, capacity=1)
    provider = queue(sim, session, fast_retry)
    submitted = anyio.Event()

    async def on_submitted(_: str) -> None:
        submitted.set()

    async with anyio.create_task_group() as tg:
        tg.start_soon(
            lambda: run_polling(
                provider,
                store,
                request(),
                settings=FAST,
                external_id=None,
                on_submitted=on_submitted,
            )
        )
        await submitted.wait()
        tg.cancel_scope.cancel()
    stats = await sim_stats(session, sim)
    assert stats["canceled"] == 0 and stats["busy"] == 1
