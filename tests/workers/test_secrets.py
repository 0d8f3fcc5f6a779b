"""The API key never shows in errors, logs, reprs or results, even when a server echoes it."""

from __future__ import annotations

import dataclasses
import json
import logging

import aiohttp
import pytest
from aiohttp import web

from tests.workers.conftest import ServeApp
from tests.workers.helpers import request
from workers.errors import ProviderError
from workers.providers import ProviderConfig, ProviderType, RequestRetryPolicy, build_provider
from workers.sim.render import render_png

pytestmark = pytest.mark.anyio

SENTINEL = "sk-SENTINEL-7f3a9c1e5b"


def echo_app(status: int) -> web.Application:
    """Answers every request with its own headers in the error text, the worst case."""

    async def echo(request: web.Request) -> web.Response:
        headers = dict(request.headers)
        body = {"error": {"message": f"bad auth, got {headers}", "type": "x", "code": "echo"}}
        return web.json_response(body, status=status)

    app = web.Application()
    app.router.add_route("*", "/{tail:.*}", echo)
    return app


@pytest.mark.parametrize(
    ("status", "pool"), [(401, "standard"), (500, "standard"), (500, "lumina")]
)
async def test_echoed_key_is_redacted_everywhere(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    caplog: pytest.LogCaptureFixture,
    status: int,
    pool: str,
) -> None:
    """Error text, chained causes, debug logs and repr all lack the key."""
    url = await serve_app(echo_app(status))
    kind: ProviderType = "openai" if pool == "standard" else "lumina"
    config = ProviderConfig(name="p", type=kind, base_url=url, api_key_env="P_KEY")
    provider = build_provider(
        config,
        session,
        api_key=SENTINEL,
        pool=pool,
        retry=fast_retry,  # type: ignore[call-overload]
    )
    caplog.set_level(logging.DEBUG)
    with pytest.raises(ProviderError) as caught:
        if pool == "standard":
            await provider.generate(request())
        else:
            await provider.submit(request())
    texts = [str(caught.value), repr(caught.value), repr(provider), repr(caught.value.__cause__)]
    texts += [record.getMessage() for record in caplog.records]
    texts += [record.exc_text or "" for record in caplog.records]
    assert "Authorization" in str(caught.value)  # the echo really happened…
    assert all(SENTINEL not in text for text in texts)  # …and was masked
    if status == 500:
        assert any("retrying" in record.getMessage() for record in caplog.records)


async def test_key_is_not_sent_to_other_origins(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """An image URL on another host is fetched without the Authorization header."""
    seen: list[str | None] = []

    async def image(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.Response(body=render_png("x", 1, 0, 4, 4), content_type="image/png")

    cdn = web.Application()
    cdn.router.add_get("/img.png", image)
    cdn_url = await serve_app(cdn)

    async def generations(request: web.Request) -> web.Response:
        seen.append(request.headers.get("Authorization"))
        return web.json_response({"created": 1, "data": [{"url": f"{cdn_url}/img.png"}]})

    api = web.Application()
    api.router.add_post("/v1/images/generations", generations)
    config = ProviderConfig(name="p", type="openai", base_url=await serve_app(api))
    provider = build_provider(config, session, api_key=SENTINEL, retry=fast_retry)
    images = await provider.generate(request())
    assert images[0].startswith(b"\x89PNG")
    assert seen == [f"Bearer {SENTINEL}", None]


async def test_connection_error_text_has_no_key(
    session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """A refused connection's message names the host, not the key."""
    config = ProviderConfig(name="p", type="openai", base_url="http://127.0.0.1:9")
    provider = build_provider(
        config, session, api_key=SENTINEL, retry=dataclasses.replace(fast_retry, attempts=1)
    )
    with pytest.raises(ProviderError) as caught:
        await provider.generate(request())
    assert SENTINEL not in str(caught.value)
    assert SENTINEL not in json.dumps(vars(caught.value), default=str)
