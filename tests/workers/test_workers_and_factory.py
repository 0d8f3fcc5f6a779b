"""run_standard end to end, the null provider, and how build_provider maps types to pools."""

from __future__ import annotations

from pathlib import Path

import aiohttp
import pytest

from tests.workers.conftest import sim_stats
from tests.workers.helpers import request, standard
from workers.polling import PollSettings, run_polling
from workers.providers import (
    ProviderConfig,
    ProviderConfigError,
    QueueProvider,
    RequestRetryPolicy,
    StandardProvider,
    build_provider,
)
from workers.providers.comfyui import ComfyUIQueue
from workers.providers.lumina import LuminaQueue
from workers.providers.null import NullProvider
from workers.providers.openai_images import OpenAIImages
from workers.sim import RunningSim
from workers.standard import run_standard
from workers.storage import ImageStore

pytestmark = pytest.mark.anyio


async def test_run_standard_stores_the_batch(
    sim: RunningSim,
    session: aiohttp.ClientSession,
    fast_retry: RequestRetryPolicy,
    store: ImageStore,
) -> None:
    """Sim → PNGs → files; the result is JSON-ready and names no secret."""
    result = await run_standard(
        standard(sim, session, fast_retry), store, request(4, batch_size=3, ratio="9:16")
    )
    assert [(i.width, i.height) for i in result.images] == [(96, 168)] * 3
    assert [Path(i.path).name for i in result.images] == ["4-0-0.png", "4-0-1.png", "4-0-2.png"]
    assert result.provider_ms > 0 and result.to_json()["images"][0]["sha256"]
    assert (await sim_stats(session, sim))["by_key"] == {"imgrun-4-0": 1}


async def test_null_provider_needs_no_http(store: ImageStore) -> None:
    """type=null returns at once: no images by default, tiny PNGs with emit_png."""
    async with aiohttp.ClientSession() as session:  # unused, but the signature takes one
        quiet = build_provider(ProviderConfig(name="n", type="null"), session, api_key=None)
        assert (await run_standard(quiet, store, request(batch_size=2))).images == []
        loud = build_provider(
            ProviderConfig(name="n", type="null", extra={"emit_png": True}),
            session,
            api_key=None,
            pool="lumina",
        )

        async def ignore(_: str) -> None:
            return None

        result = await run_polling(
            loud,
            store,
            request(batch_size=2),
            settings=PollSettings(polling_interval=0, max_attempts=60, timeout=300),
            external_id=None,
            on_submitted=ignore,
        )
    assert [(i.width, i.height) for i in result.images] == [(1, 1)] * 2


@pytest.mark.parametrize(
    ("kind", "pool", "cls"),
    [
        ("sim", "standard", OpenAIImages),
        ("sim", "lumina", LuminaQueue),
        ("openai", "standard", OpenAIImages),
        ("lumina", "lumina", LuminaQueue),
        ("comfyui", "lumina", ComfyUIQueue),
        ("null", "standard", NullProvider),
        ("null", "lumina", NullProvider),
    ],
)
async def test_type_and_pool_pick_the_adapter(
    session: aiohttp.ClientSession, kind: str, pool: str, cls: type
) -> None:
    """Each supported (type, pool) pair builds the right adapter, satisfying its Protocol."""
    config = ProviderConfig(name="p", type=kind)  # type: ignore[arg-type]
    provider = build_provider(config, session, api_key=None, pool=pool)  # type: ignore[call-overload]
    assert isinstance(provider, cls)
    assert isinstance(provider, StandardProvider if pool == "standard" else QueueProvider)


@pytest.mark.parametrize(("kind", "pool"), [("openai", "lumina"), ("lumina", "standard")])
async def test_unsupported_pool_is_a_config_error(
    session: aiohttp.ClientSession, kind: str, pool: str
) -> None:
    """A provider that cannot serve the pool is refused up front."""
    with pytest.raises(ProviderConfigError, match="cannot serve"):
        build_provider(ProviderConfig(name="p", type=kind), session, api_key=None, pool=pool)  # type: ignore[arg-type, call-overload]


async def test_unknown_extra_option_is_a_config_error(session: aiohttp.ClientSession) -> None:
    """A misspelled option is an error, never silently dropped."""
    config = ProviderConfig(name="p", type="openai", extra={"respons_format": "url"})
    with pytest.raises(ProviderConfigError, match="respons_format"):
        build_provider(config, session, api_key=None)


async def test_openai_base_url_with_or_without_v1(
    sim: RunningSim, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """https://host and https://host/v1 both reach /v1/images/generations; url format works."""
    for base in (sim.url, f"{sim.url}/v1", f"{sim.url}/v1/"):
        config = ProviderConfig(
            name="o", type="openai", base_url=base, extra={"response_format": "url"}
        )
        images = await build_provider(config, session, api_key="k", retry=fast_retry).generate(
            request()
        )
        assert images[0].startswith(b"\x89PNG")


async def test_sim_options_serve_both_pools(
    sim: RunningSim, session: aiohttp.ClientSession, fast_retry: RequestRetryPolicy
) -> None:
    """One [providers.sim] section with an openai-only option still builds the lumina adapter."""
    config = ProviderConfig(
        name="sim", type="sim", base_url=sim.url, extra={"response_format": "url"}
    )
    standard_pool = build_provider(config, session, api_key=None, retry=fast_retry)
    lumina_pool = build_provider(config, session, api_key=None, pool="lumina", retry=fast_retry)
    assert (await standard_pool.generate(request()))[0].startswith(b"\x89PNG")
    assert await lumina_pool.submit(request())
