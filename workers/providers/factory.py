"""Builds the adapter for a provider config and a pool."""

from __future__ import annotations

from typing import Any, Literal, overload

import aiohttp

from workers.providers import comfyui, lumina, null, openai_images
from workers.providers.base import QueueProvider, StandardProvider
from workers.providers.config import Pool, ProviderConfig, ProviderConfigError
from workers.providers.http import HttpClient
from workers.providers.limits import COMMON_OPTIONS, max_response_bytes
from workers.providers.retry import RetryPolicy

# Which pools each provider type can serve. "sim" serves both: the standard pool speaks
# the OpenAI-compatible API to it, the lumina pool its queue protocol.
POOLS: dict[str, frozenset[str]] = {
    "sim": frozenset({"standard", "lumina"}),
    "openai": frozenset({"standard"}),
    "lumina": frozenset({"lumina"}),
    "comfyui": frozenset({"lumina"}),
    "null": frozenset({"standard", "lumina"}),
}


@overload
def build_provider(
    config: ProviderConfig,
    session: aiohttp.ClientSession,
    *,
    api_key: str | None,
    pool: Literal["standard"] = ...,
    retry: RetryPolicy | None = ...,
) -> StandardProvider: ...


@overload
def build_provider(
    config: ProviderConfig,
    session: aiohttp.ClientSession,
    *,
    api_key: str | None,
    pool: Literal["lumina"],
    retry: RetryPolicy | None = ...,
) -> QueueProvider: ...


def build_provider(
    config: ProviderConfig,
    session: aiohttp.ClientSession,
    *,
    api_key: str | None,
    pool: Pool = "standard",
    retry: RetryPolicy | None = None,
) -> StandardProvider | QueueProvider:
    """The adapter that serves `pool` for `config`; raises ProviderConfigError if none can."""
    if pool not in POOLS.get(config.type, frozenset()):
        raise ProviderConfigError(
            f"provider {config.name!r} of type {config.type!r} cannot serve the {pool} pool"
        )
    if config.type == "null":
        return null.NullProvider(options=config.options(null.OPTIONS))
    options = config.options({**COMMON_OPTIONS, **_adapter_options(config)})
    try:
        limit = max_response_bytes(options)
    except ValueError as exc:
        raise ProviderConfigError(f"provider {config.name!r}: {exc}") from None
    http = HttpClient(
        session,
        name=config.name,
        base_url=config.base_url,
        api_key=api_key,
        timeout=config.timeout,
        retry=retry or RetryPolicy(),
        max_response_bytes=limit,
    )
    if config.type == "openai" or (config.type == "sim" and pool == "standard"):
        return openai_images.OpenAIImages(http, model=config.model, options=options)
    if config.type == "comfyui":
        return comfyui.ComfyUIQueue(http, model=config.model, options=options)
    return lumina.LuminaQueue(http, model=config.model, options=options)


def _adapter_options(config: ProviderConfig) -> dict[str, Any]:
    """The options (with defaults) of the adapter(s) behind `config.type`."""
    if config.type == "sim":
        # One [providers.sim] section feeds both pools, so it accepts both adapters' options.
        # The sim takes seed and polish, so its images follow the task's seed.
        return {**lumina.OPTIONS, **openai_images.OPTIONS, "send_seed": True}
    if config.type == "openai":
        return openai_images.OPTIONS
    if config.type == "comfyui":
        return comfyui.OPTIONS
    return lumina.OPTIONS
