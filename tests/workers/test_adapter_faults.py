"""Each injected sim fault reaches the adapters as the error class the runner acts on."""

from __future__ import annotations

import dataclasses

import aiohttp
import pytest

from tests.workers.conftest import RecordingSleep, SimFactory, sim_stats
from tests.workers.helpers import queue, request, standard
from workers.errors import PermanentError, ProviderTimeout, RateLimited, TransientError
from workers.providers import RequestRetryPolicy
from workers.sim import RunningSim

pytestmark = pytest.mark.anyio


async def test_500s_are_retried_then_raised_as_transient(
    sim_factory: SimFactory, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """error_rate=1: every try gets a 500; the attempt ends TransientError after 3 tries."""
    sim = await sim_factory(error_rate=1.0)
    with pytest.raises(TransientError, match="HTTP 500") as caught:
        await standard(sim, session, fast_retry).generate(request())
    assert caught.value.status == 500
    stats = await sim_stats(session, sim)
    assert stats["by_key"] == {"imgrun-1-0": 3}
    assert stats["faults"]["error"] == 3


async def test_429_honours_retry_after_then_escalates(
    sim_factory: SimFactory, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """Two 429s are waited out for exactly Retry-After; the third goes to the runner."""
    sim = await sim_factory(rate_limit_rate=1.0, retry_after_s=2)
    sleep = RecordingSleep()
    policy = dataclasses.replace(fast_retry, attempts=10, sleep=sleep)
    with pytest.raises(RateLimited) as caught:
        await standard(sim, session, policy).generate(request())
    assert caught.value.retry_after == 2.0
    assert sleep.delays == [2.0, 2.0]
    assert (await sim_stats(session, sim))["rate_limited"] == 3


async def test_long_retry_after_goes_straight_to_the_runner(
    sim_factory: SimFactory, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """A Retry-After above max_retry_after is not slept on inside the attempt."""
    sim = await sim_factory(rate_limit_rate=1.0, retry_after_s=60)
    sleep = RecordingSleep()
    policy = dataclasses.replace(fast_retry, sleep=sleep)
    with pytest.raises(RateLimited) as caught:
        await standard(sim, session, policy).generate(request())
    assert caught.value.retry_after == 60.0
    assert sleep.delays == []


async def test_hang_becomes_provider_timeout(
    sim_factory: SimFactory, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """hang_rate=1: the request timeout fires; the sim frees the handler when we leave."""
    sim = await sim_factory(hang_rate=1.0)
    policy = dataclasses.replace(fast_retry, attempts=1)
    with pytest.raises(ProviderTimeout):
        await standard(sim, session, policy, timeout=0.2).generate(request())
    assert (await sim_stats(session, sim))["faults"]["hang"] == 1


async def test_malformed_bodies_are_transient(
    sim_factory: SimFactory, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """malformed_rate=1: truncated JSON, missing data, bad base64, wrong count all retry."""
    sim = await sim_factory(malformed_rate=1.0)
    policy = dataclasses.replace(fast_retry, attempts=8)
    with pytest.raises(TransientError, match="malformed"):
        await standard(sim, session, policy).generate(request())
    with pytest.raises(TransientError, match="malformed"):
        await queue(sim, session, policy).submit(request())
    assert (await sim_stats(session, sim))["faults"]["malformed"] == 16


async def test_content_policy_is_permanent_and_not_retried(
    sim: RunningSim, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """A 400 content_policy_violation is not retried."""
    with pytest.raises(PermanentError, match="content_policy_violation") as caught:
        await standard(sim, session, fast_retry).generate(request(prompt="forbidden fruit"))
    assert caught.value.status == 400
    assert (await sim_stats(session, sim))["by_key"] == {"imgrun-1-0": 1}


async def test_connection_refused_is_transient(
    session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy, sim_factory: SimFactory
) -> None:
    """Nothing listening: a TransientError after the policy's tries."""
    sim = await sim_factory()
    dead = dataclasses.replace(sim, url="http://127.0.0.1:9")
    with pytest.raises(TransientError, match="ClientConnectorError"):
        await standard(dead, session, fast_retry).generate(request())


async def test_a_sometimes_failing_sim_still_delivers(
    sim_factory: SimFactory, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """With 30% 500s the retries inside one attempt usually succeed; seeded, so always here."""
    sim = await sim_factory(error_rate=0.3, seed=3)
    policy = dataclasses.replace(fast_retry, attempts=6)
    provider = standard(sim, session, policy)
    for subtask in range(10):
        assert len(await provider.generate(request(subtask, batch_size=2))) == 2
    assert (await sim_stats(session, sim))["faults"]["error"] > 0
