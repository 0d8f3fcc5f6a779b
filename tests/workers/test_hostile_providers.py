"""Hostile providers (issue 12, item 5): scripted loopback servers that misbehave on purpose.

Each test names what a provider did; the worker must stay bounded in bytes, time and
message length, and must not count a broken answer as a completed subtask.
"""

from __future__ import annotations

import base64
import dataclasses
import time
import zlib
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import aiohttp
import anyio
import pytest
from aiohttp import web

from tests.workers.conftest import RecordingSleep, ServeApp, SimFactory, sim_stats
from tests.workers.helpers import queue, request, standard
from workers.errors import JobFailed, PermanentError, ProviderTimeout, RateLimited, TransientError
from workers.polling import PollSettings, run_polling
from workers.providers import (
    ProviderConfig,
    ProviderConfigError,
    RequestRetryPolicy,
    build_provider,
)
from workers.providers.http import ResponseTooLarge
from workers.providers.limits import MAX_PROVIDER_TEXT
from workers.sim.render import render_png
from workers.standard import run_standard
from workers.storage import ImageStore

pytestmark = pytest.mark.anyio

MB = 1024 * 1024
PNG = render_png("x", 1, 0, 8, 8)
FAST = PollSettings(polling_interval=0.01, max_attempts=500, timeout=10.0)


@pytest.fixture
async def release() -> AsyncIterator[anyio.Event]:
    """Set at test end, so handlers that hang on it return and the server closes."""
    event = anyio.Event()
    yield event
    event.set()


async def hang(release: anyio.Event) -> None:
    """A handler that never answers (within the test), bounded anyway."""
    with anyio.move_on_after(60):
        await release.wait()


async def _ignore(_: str) -> None:
    return None


def app_with(routes: dict[tuple[str, str], Callable[[web.Request], Awaitable[Any]]]) -> Any:
    """An aiohttp app from {(method, path): handler}."""
    app = web.Application()
    for (method, path), handler in routes.items():
        app.router.add_route(method, path, handler)
    return app


def provider_for(
    url: str,
    session: aiohttp.ClientSession,
    retry: RequestRetryPolicy,
    *,
    kind: str = "openai",
    timeout: float = 5.0,
    **extra: Any,
) -> Any:
    """The adapter of `kind` pointed at a scripted server."""
    config = ProviderConfig(name="evil", type=kind, base_url=url, timeout=timeout, extra=extra)  # type: ignore[arg-type]
    pool = "lumina" if kind in ("lumina", "comfyui") else "standard"
    return build_provider(config, session, api_key=None, pool=pool, retry=retry)  # type: ignore[call-overload]


def openai_body(images: list[bytes]) -> dict[str, Any]:
    """An images/generations answer carrying `images` as b64_json."""
    return {"data": [{"b64_json": base64.b64encode(i).decode()} for i in images]}


# --- bytes ----------------------------------------------------------------------------


async def test_declared_body_over_the_limit_is_refused(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """Content-Length above max_response_bytes: refused before reading (not retried)."""

    async def big(_: web.Request) -> web.Response:
        return web.Response(body=b"x" * (2 * MB))

    url = await serve_app(app_with({("POST", "/v1/images/generations"): big}))
    provider = provider_for(url, session, fast_retry, max_response_bytes=MB)
    with pytest.raises(ResponseTooLarge, match="response of 2,097,152 bytes, over 1,048,576"):
        await provider.generate(request())


async def test_endless_chunked_body_stops_at_the_limit(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """No Content-Length, a body that never ends: we stop reading just past the limit."""
    sent = 0

    async def endless(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse()
        await response.prepare(request)
        for _ in range(10_000):  # 640 MB at most, should the client keep reading
            await response.write(b"{" * 65_536)
            sent += 65_536
        return response

    url = await serve_app(app_with({("POST", "/v1/images/generations"): endless}))
    provider = provider_for(url, session, fast_retry, max_response_bytes=MB)
    with pytest.raises(ResponseTooLarge, match="response over 1,048,576 bytes"):
        await provider.generate(request())
    assert sent < 64 * MB  # the server was cut off long before its loop ended


async def test_gzip_bomb_is_counted_after_decompression(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """100 MB of zeros in ~100 KB of gzip: the limit applies to what it inflates to."""
    packer = zlib.compressobj(9, zlib.DEFLATED, 31)  # 31: gzip framing
    bomb = b"".join(packer.compress(bytes(MB)) for _ in range(100)) + packer.flush()
    assert len(bomb) < MB

    async def gzipped(_: web.Request) -> web.Response:
        return web.Response(body=bomb, headers={"Content-Encoding": "gzip"})

    url = await serve_app(app_with({("POST", "/v1/images/generations"): gzipped}))
    provider = provider_for(url, session, fast_retry, max_response_bytes=4 * MB)
    with pytest.raises(ResponseTooLarge, match="response over 4,194,304 bytes"):
        await provider.generate(request())


async def test_endless_error_body_is_read_in_part_and_clipped(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """A 500 whose text never ends: 64 KB are read, MAX_PROVIDER_TEXT characters kept."""
    sent = 0

    async def noisy(request: web.Request) -> web.StreamResponse:
        nonlocal sent
        response = web.StreamResponse(status=500)
        await response.prepare(request)
        for _ in range(10_000):  # 640 MB at most, should the client keep reading
            await response.write(b"e" * 65_536)
            sent += 65_536
        return response

    url = await serve_app(app_with({("POST", "/v1/images/generations"): noisy}))
    provider = provider_for(url, session, dataclasses.replace(fast_retry, attempts=1))
    with pytest.raises(TransientError) as caught:
        await provider.generate(request())
    assert str(caught.value).endswith(": HTTP 500: " + "e" * MAX_PROVIDER_TEXT + "…")
    assert sent < 64 * MB  # the connection was dropped after the first 64 KB


async def test_deeply_nested_json_is_a_malformed_response(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """ "[[[[…" 100,000 deep made json.loads raise RecursionError (an unexpected crash)."""

    async def nested(_: web.Request) -> web.Response:
        return web.Response(body=b"[" * 100_000 + b"]" * 100_000)

    url = await serve_app(app_with({("POST", "/v1/images/generations"): nested}))
    provider = provider_for(url, session, dataclasses.replace(fast_retry, attempts=1))
    with pytest.raises(TransientError, match="malformed response: body is not JSON"):
        await provider.generate(request())


def test_max_response_bytes_option_is_validated() -> None:
    """A nonsense limit is a config error naming the option."""
    for value, why in (("lots", "expected an integer"), (0, "must be a positive integer")):
        config = ProviderConfig(name="p", type="openai", extra={"max_response_bytes": value})
        with pytest.raises(ProviderConfigError, match=f"max_response_bytes.*{why}"):
            build_provider(config, None, api_key=None)  # type: ignore[arg-type]


# --- images: verified, counted ---------------------------------------------------------


async def test_truncated_png_is_never_stored_as_completed(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    tmp_path: Path,
) -> None:
    """The report's case: half a PNG came back and was stored. Now: an error, no file."""
    cut = PNG[: len(PNG) // 2]

    async def truncated(_: web.Request) -> web.Response:
        return web.json_response(openai_body([cut]))

    url = await serve_app(app_with({("POST", "/v1/images/generations"): truncated}))
    provider = provider_for(url, session, dataclasses.replace(fast_retry, attempts=1))
    with pytest.raises(TransientError, match="unreadable image"):
        await run_standard(provider, ImageStore(tmp_path), request())
    assert list(tmp_path.rglob("*.png")) == []


async def test_wrong_image_count_standard(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    tmp_path: Path,
) -> None:
    """Three images for a batch of two is a malformed answer (retried), nothing stored."""

    async def three(_: web.Request) -> web.Response:
        return web.json_response(openai_body([PNG] * 3))

    url = await serve_app(app_with({("POST", "/v1/images/generations"): three}))
    provider = provider_for(url, session, dataclasses.replace(fast_retry, attempts=1))
    with pytest.raises(TransientError, match="expected 2 images, got 3"):
        await run_standard(provider, ImageStore(tmp_path), request(batch_size=2))
    assert list(tmp_path.rglob("*.png")) == []


class ScriptedLumina:
    """A lumina-protocol server whose succeeded job reports `refs` as its images."""

    def __init__(self, refs: list[str], release: anyio.Event) -> None:
        self.refs = refs
        self.release = release
        self.image_gets = 0
        self.deleted: list[str] = []

    def app(self) -> Any:
        """The routes."""
        return app_with(
            {
                ("POST", "/v1/tasks"): self.submit,
                ("GET", "/v1/tasks/{uuid}"): self.poll,
                ("DELETE", "/v1/tasks/{uuid}"): self.delete,
                ("GET", "/img/{name}"): self.image,
                ("GET", "/slow/{name}"): self.slow_image,
            }
        )

    async def submit(self, _: web.Request) -> web.Response:
        return web.json_response({"task_uuid": "job-1"}, status=202)

    async def poll(self, _: web.Request) -> web.Response:
        return web.json_response({"status": "succeeded", "images": self.refs})

    async def delete(self, request: web.Request) -> web.Response:
        self.deleted.append(request.match_info["uuid"])
        return web.json_response({"status": "canceled"})

    async def image(self, _: web.Request) -> web.Response:
        self.image_gets += 1
        return web.Response(body=PNG, content_type="image/png")

    async def slow_image(self, _: web.Request) -> web.Response:
        self.image_gets += 1
        await hang(self.release)
        return web.Response(body=PNG, content_type="image/png")


@pytest.mark.parametrize(("refs", "batch"), [(["/img/1", "/img/2", "/img/3"], 2), ([], 1)])
async def test_wrong_image_count_polling_fails_the_job_before_downloading(
    refs: list[str],
    batch: int,
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
    release: anyio.Event,
) -> None:
    """A succeeded job with 3 images for 2 (or none for 1): JobFailed, no download, no file.

    An empty list used to complete the subtask with no images at all.
    """
    server = ScriptedLumina(refs, release)
    provider = provider_for(await serve_app(server.app()), session, fast_retry, kind="lumina")
    with pytest.raises(JobFailed, match=f"job job-1: {len(refs)} images for a batch of {batch}"):
        await run_polling(
            provider,
            store,
            request(batch_size=batch),
            settings=FAST,
            external_id=None,
            on_submitted=_ignore,
        )
    assert server.image_gets == 0 and not store.root.exists()


# --- one deadline per polling attempt, and the job let go of is cancelled --------------


async def test_polling_attempt_deadline_covers_downloads_and_cancels_the_job(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
    release: anyio.Event,
) -> None:
    """The report's 2 s job that took 62 s: the download hangs; at the deadline we DELETE."""
    server = ScriptedLumina(["/slow/1.png"], release)
    provider = provider_for(await serve_app(server.app()), session, fast_retry, kind="lumina")
    settings = dataclasses.replace(FAST, timeout=0.5)
    started = time.perf_counter()
    with pytest.raises(ProviderTimeout, match=r"job job-1: attempt not done in 0.5s"):
        await run_polling(
            provider, store, request(), settings=settings, external_id=None, on_submitted=_ignore
        )
    assert time.perf_counter() - started < 3.0
    assert server.deleted == ["job-1"]


async def test_job_past_max_polls_is_cancelled_at_the_provider(
    sim_factory: SimFactory,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """Giving up after max_attempts: the sim's job is DELETEd, so a retry never runs beside it."""
    sim = await sim_factory(service_ms=60_000, capacity=1)
    settings = PollSettings(polling_interval=0.01, max_attempts=3, timeout=10)
    with pytest.raises(ProviderTimeout, match="not done after 3 polls"):
        await run_polling(
            queue(sim, session, fast_retry),
            store,
            request(),
            settings=settings,
            external_id=None,
            on_submitted=_ignore,
        )
    stats = await sim_stats(session, sim)
    assert stats["canceled"] == 1 and stats["busy"] == 0


# --- strings from providers are bounded --------------------------------------------------


async def test_provider_strings_are_clipped(
    serve_app: ServeApp,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """A 1 MB job error, a 10 KB job id, a 1 MB status: messages stay short."""
    answers: dict[str, Any] = {}

    async def submit(_: web.Request) -> web.Response:
        return web.json_response(answers["submit"], status=202)

    async def poll(_: web.Request) -> web.Response:
        return web.json_response(answers["poll"])

    url = await serve_app(
        app_with({("POST", "/v1/tasks"): submit, ("GET", "/v1/tasks/{uuid}"): poll})
    )
    policy = dataclasses.replace(fast_retry, attempts=1)
    provider = provider_for(url, session, policy, kind="lumina")

    answers["submit"] = {"task_uuid": "j" * 10_000}
    with pytest.raises(TransientError, match="no usable job id") as caught:
        await provider.submit(request())
    assert len(str(caught.value)) < 200

    answers["poll"] = {"status": "s" * MB}
    with pytest.raises(TransientError, match="unknown status") as caught:
        await provider.poll("job-1")
    assert len(str(caught.value)) < 300

    answers["poll"] = {"status": "failed", "error": "E" * MB, "retryable": True}
    with pytest.raises(JobFailed) as caught:
        await run_polling(
            provider, store, request(), settings=FAST, external_id="job-1", on_submitted=_ignore
        )
    assert str(caught.value) == "job job-1 failed: " + "E" * MAX_PROVIDER_TEXT + "…"

    answers["poll"] = {"status": "succeeded", "images": ["/i/" + "x" * 5_000]}
    with pytest.raises(TransientError, match="images is not a list of URLs"):
        await provider.poll("job-1")


def test_every_provider_error_is_bounded() -> None:
    """The backstop: whatever an adapter builds, the message stays under MAX_MESSAGE."""
    assert len(str(PermanentError("x" * 100_000))) == 1_001
    assert len(str(RateLimited("y" * 5_000, retry_after=1.0))) == 1_001


# --- Retry-After: 0 inside an attempt ----------------------------------------------------


async def test_retry_after_zero_is_not_taken_literally(
    sim_factory: SimFactory, session: aiohttp.ClientSession
) -> None:
    """A 429 with Retry-After: 0 waits at least the policy's first wait before trying again."""
    sim = await sim_factory(rate_limit_rate=1.0, retry_after_s=0)
    sleep = RecordingSleep()
    policy = RequestRetryPolicy(attempts=10, wait_initial=0.5, jitter=0.0, sleep=sleep)
    with pytest.raises(RateLimited):
        await standard(sim, session, policy).generate(request())
    assert sleep.delays == [0.5, 0.5]


async def test_image_url_of_absurd_length_is_malformed(
    serve_app: ServeApp, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """An OpenAI-style `url` item of 100 KB is not fetched (nor echoed whole)."""
    gets = 0

    async def by_url(_: web.Request) -> web.Response:
        return web.json_response({"data": [{"url": "/i/" + "x" * 100_000}]})

    async def image(_: web.Request) -> web.Response:
        nonlocal gets
        gets += 1
        return web.Response(body=PNG)

    url = await serve_app(
        app_with({("POST", "/v1/images/generations"): by_url, ("GET", "/i/{name}"): image})
    )
    provider = provider_for(url, session, dataclasses.replace(fast_retry, attempts=1))
    with pytest.raises(TransientError, match="images is not a list of URLs") as caught:
        await provider.generate(request())
    assert gets == 0 and len(str(caught.value)) < 600
