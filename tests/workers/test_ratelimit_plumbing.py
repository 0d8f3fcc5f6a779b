"""x-ratelimit-* of every response reach the runner; timeouts and 503s become the right class.

Real loopback servers; the adapters under test are the ones the runner builds.
"""

from __future__ import annotations

import base64
import time
from pathlib import Path

import aiohttp
import anyio
import pytest
from aiohttp import web

from tests.workers.conftest import ServeApp
from tests.workers.helpers import blackhole, request
from workers.errors import ProviderTimeout, RateLimited
from workers.headers import RateLimitInfo
from workers.providers import (
    ProviderConfig,
    RequestRetryPolicy,
    StandardProvider,
    build_provider,
    make_session,
)
from workers.providers.null import tiny_png
from workers.standard import run_standard
from workers.storage import ImageStore

pytestmark = pytest.mark.anyio

BUDGET = {
    "x-ratelimit-remaining-requests": "41",
    "x-ratelimit-limit-requests": "60",
    "x-ratelimit-reset-requests": "1m30s",
}


def app_answering(status: int, headers: dict[str, str]) -> web.Application:
    """An images endpoint that answers `status` (200: one tiny PNG) with `headers`."""

    async def handler(_: web.Request) -> web.Response:
        if status == 200:
            body = {"data": [{"b64_json": base64.b64encode(tiny_png()).decode()}]}
            return web.json_response(body, headers=headers)
        return web.json_response({"error": {"message": "no"}}, status=status, headers=headers)

    app = web.Application()
    app.router.add_post("/v1/images/generations", handler)
    return app


def provider(
    url: str, session: aiohttp.ClientSession, policy: RequestRetryPolicy
) -> StandardProvider:
    """The openai adapter against `url`."""
    config = ProviderConfig(name="p", type="openai", base_url=url, timeout=5)
    return build_provider(config, session, api_key="k", retry=policy)


async def test_a_success_carries_the_budget_on_its_result(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    tmp_path: Path,
) -> None:
    """A 200's x-ratelimit-* arrive on the WorkResult, parsed."""
    url = await serve_app(app_answering(200, BUDGET))
    adapter = provider(url, session, fast_retry)
    result = await run_standard(adapter, ImageStore(tmp_path), request())
    assert result.ratelimit == RateLimitInfo(remaining=41, limit=60, reset=90.0)
    assert "ratelimit" not in result.to_json()  # for the controller, not stored


async def test_an_error_carries_its_budget_and_when_it_was_sent(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """A 429's budget and send time ride on the RateLimited the runner receives."""
    url = await serve_app(app_answering(429, {**BUDGET, "x-ratelimit-remaining-requests": "0"}))
    before = time.time()
    with pytest.raises(RateLimited) as caught:
        await provider(url, session, fast_retry).generate(request())
    assert caught.value.ratelimit == RateLimitInfo(remaining=0, limit=60, reset=90.0)
    assert caught.value.sent_at is not None and before <= caught.value.sent_at <= time.time()


@pytest.mark.parametrize(
    ("headers", "expected"),
    [
        ({"x-ratelimit-remaining-requests": "-1"}, None),
        ({"x-ratelimit-remaining-requests": "1e3"}, None),
        ({"x-ratelimit-remaining-requests": "NaN"}, None),
        ({"x-ratelimit-remaining-requests": "٣"}, None),  # a non-ASCII digit
        ({"x-ratelimit-remaining-requests": "9" * 4_000}, None),  # long: not even parsed
        ({"x-ratelimit-remaining-requests": str(10**13)}, None),  # absurd count
        ({"x-ratelimit-limit-requests": "5"}, None),  # no remaining: nothing to act on
        (
            {
                "x-ratelimit-remaining-requests": " 7 ",
                "x-ratelimit-limit-requests": "-60",
                "x-ratelimit-reset-requests": "99999999h",
            },
            RateLimitInfo(remaining=7),  # the sane part kept, garbage beside it dropped
        ),
        (
            {"x-ratelimit-remaining-requests": "3", "x-ratelimit-reset-requests": "1h1h"},
            RateLimitInfo(remaining=3),
        ),
    ],
)
async def test_hostile_budget_headers_are_dropped_never_raised(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    tmp_path: Path,
    headers: dict[str, str],
    expected: RateLimitInfo | None,
) -> None:
    """Garbage, negative, huge or absurd values: the image still arrives, the budget is None."""
    url = await serve_app(app_answering(200, headers))
    adapter = provider(url, session, fast_retry)
    result = await run_standard(adapter, ImageStore(tmp_path), request())
    assert len(result.images) == 1
    assert result.ratelimit == expected


async def test_a_connect_that_hangs_times_out_on_the_connect_timeout(
    fast_retry: RequestRetryPolicy,
) -> None:
    """The session's connect timeout holds even though each request sets its own total."""
    server, fillers = blackhole()
    try:
        url = f"http://127.0.0.1:{server.getsockname()[1]}"
        async with make_session(connect_timeout=0.2) as session:
            one_try = RequestRetryPolicy(attempts=1)
            config = ProviderConfig(name="p", type="openai", base_url=url, timeout=30)
            adapter = build_provider(config, session, api_key=None, retry=one_try)
            with anyio.fail_after(5), pytest.raises(ProviderTimeout) as caught:
                await adapter.generate(request())
    finally:
        for sock in (server, *fillers):
            sock.close()
    assert "could not connect in 0.2s" in str(caught.value)
