"""HTTP statuses and headers map to the runner's error classes; Retry-After parses both forms."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import aiohttp
import pytest
from aiohttp import web
from hypothesis import given
from hypothesis import strategies as st

from tests.workers.conftest import RecordingSleep, ServeApp
from tests.workers.helpers import request
from workers.errors import Misconfigured, PermanentError, RateLimited, TransientError
from workers.providers import ProviderConfig, RequestRetryPolicy, build_provider, parse_retry_after

pytestmark = pytest.mark.anyio

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)


def test_retry_after_seconds_and_http_date() -> None:
    """delta-seconds, an HTTP-date, a past date and garbage."""
    assert parse_retry_after("7") == 7.0
    assert (
        parse_retry_after(
            format_datetime(NOW + timedelta(seconds=30), usegmt=True), now_wall=NOW.timestamp()
        )
        == 30.0
    )
    assert (
        parse_retry_after(
            format_datetime(NOW - timedelta(seconds=30), usegmt=True), now_wall=NOW.timestamp()
        )
        == 0.0
    )
    assert parse_retry_after("soon") is None
    assert parse_retry_after(None) is None


@given(st.text(max_size=40))
def test_retry_after_never_raises(value: str) -> None:
    """Any header value gives a non-negative number or None."""
    parsed = parse_retry_after(value)
    assert parsed is None or parsed >= 0


def scripted(
    status: int, headers: dict[str, str] | None = None, body: str = "{}"
) -> web.Application:
    """An app whose generation route always answers the same."""

    async def handler(_: web.Request) -> web.Response:
        return web.Response(
            status=status, text=body, headers=headers, content_type="application/json"
        )

    app = web.Application()
    app.router.add_post("/v1/images/generations", handler)
    return app


async def generate(url: str, session: aiohttp.ClientSession, policy: RequestRetryPolicy) -> None:
    """One generate call through the openai adapter."""
    config = ProviderConfig(name="p", type="openai", base_url=url, timeout=5)
    await build_provider(config, session, api_key="k", retry=policy).generate(request())


MODEL_GONE = '{"error": {"code": "model_not_found", "message": "The model gpt-x does not exist"}}'


@pytest.mark.parametrize(
    ("status", "headers", "body", "error"),
    [
        (503, {"Retry-After": "1"}, "{}", RateLimited),
        (503, None, "{}", RateLimited),  # "too busy" even without a Retry-After
        (502, None, "{}", TransientError),
        (408, None, "{}", TransientError),
        (400, None, "{}", PermanentError),
        (401, None, "{}", Misconfigured),  # bad credentials: the operator's to fix
        (403, None, "{}", Misconfigured),
        (404, None, MODEL_GONE, Misconfigured),  # an unknown model, likewise
        (404, None, "{}", PermanentError),
        (422, None, "{}", PermanentError),
    ],
)
async def test_status_classes(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    status: int,
    headers: dict[str, str] | None,
    body: str,
    error: type[Exception],
) -> None:
    """Each status becomes the documented class (and keeps the status)."""
    url = await serve_app(scripted(status, headers, body))
    policy = dataclasses.replace(fast_retry, sleep=RecordingSleep())
    with pytest.raises(error) as caught:
        await generate(url, session, policy)
    assert type(caught.value) is error
    assert getattr(caught.value, "status", None) == status


async def test_503_http_date_retry_after_is_waited(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """A 503 whose Retry-After is an HTTP-date about 5 s ahead is slept on for about 5 s."""
    when = format_datetime(datetime.now(UTC) + timedelta(seconds=5), usegmt=True)
    url = await serve_app(scripted(503, {"Retry-After": when}))
    sleep = RecordingSleep()
    with pytest.raises(RateLimited) as caught:
        await generate(url, session, dataclasses.replace(fast_retry, sleep=sleep))
    assert caught.value.status == 503
    assert len(sleep.delays) == 2 and all(3.0 <= d <= 5.0 for d in sleep.delays)


async def test_429_without_retry_after_uses_exponential_backoff(
    serve_app: ServeApp, session: aiohttp.ClientSession
) -> None:
    """No Retry-After: the exponential wait (here 0.1 then 0.2 s, no jitter)."""
    url = await serve_app(scripted(429))
    sleep = RecordingSleep()
    policy = RequestRetryPolicy(attempts=5, wait_initial=0.1, wait_max=1, jitter=0, sleep=sleep)
    with pytest.raises(RateLimited):
        await generate(url, session, policy)
    assert sleep.delays == [0.1, 0.2]


async def test_total_time_bound_stops_retries(
    serve_app: ServeApp, session: aiohttp.ClientSession
) -> None:
    """A retry whose wait would pass total_seconds is not attempted."""
    url = await serve_app(scripted(500))
    sleep = RecordingSleep()
    policy = RequestRetryPolicy(
        attempts=10, total_seconds=0.5, wait_initial=1, jitter=0, sleep=sleep
    )
    with pytest.raises(TransientError):
        await generate(url, session, policy)
    assert sleep.delays == []
