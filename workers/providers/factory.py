"""Builds the adapter for a provider config and a pool."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Literal, overload

from yarl import URL

from workers.kinds import PROVIDER_POOLS
from workers.kinds import PoolName as Pool
from workers.providers import comfyui, lumina, null, openai_images
from workers.providers.base import QueueProvider, StandardProvider
from workers.providers.config import ProviderConfig, ProviderConfigError
from workers.providers.limits import COMMON_OPTIONS, max_response_bytes
from workers.providers.retry import RequestRetryPolicy

if TYPE_CHECKING:  # `imgrun submit` checks a config here, without importing aiohttp
    import aiohttp

# The options each type's adapters take. The sim feeds both pools from one
# [providers.sim] section, so it accepts both adapters' options, and it takes seed and
# polish, so its images follow the task's seed.
# Every HTTP adapter also takes the common limits (max_response_bytes).
OPTIONS: dict[str, dict[str, Any]] = {
    "sim": {**COMMON_OPTIONS, **lumina.OPTIONS, **openai_images.OPTIONS, "send_seed": True},
    "openai": {**COMMON_OPTIONS, **openai_images.OPTIONS},
    "lumina": {**COMMON_OPTIONS, **lumina.OPTIONS},
    "comfyui": {**COMMON_OPTIONS, **comfyui.OPTIONS},
    "null": null.OPTIONS,
}
CHOICES: dict[str, tuple[str, ...]] = {"response_format": ("b64_json", "url")}


def adapter_options(config: ProviderConfig, pool: Pool) -> dict[str, Any]:
    """The validated options of the adapter serving `pool`; ProviderConfigError if none can."""
    if pool not in PROVIDER_POOLS.get(config.type, frozenset()):
        raise ProviderConfigError(
            repr(config.name), f"{config.type!r} cannot serve the {pool} pool", key="type"
        )
    options = config.options(OPTIONS[config.type], CHOICES)
    if "max_response_bytes" in options:
        try:
            max_response_bytes(options)
        except ValueError as exc:
            raise ProviderConfigError(
                repr(config.name), str(exc), key="max_response_bytes"
            ) from None
    return options


def check_config(config: ProviderConfig) -> None:
    """Raise ProviderConfigError for anything build_provider would refuse, building nothing."""
    for pool in sorted(PROVIDER_POOLS.get(config.type, frozenset())):
        adapter_options(config, pool)
    if config.type == "null":
        return
    try:
        url = URL(config.base_url)
    except ValueError:
        url = URL()
    if url.scheme not in ("http", "https") or not url.host:
        raise ProviderConfigError(
            repr(config.name), "not an http(s) URL with a host", key="base_url"
        )


@overload
def build_provider(
    config: ProviderConfig,
    session: aiohttp.ClientSession,
    *,
    api_key: str | None,
    pool: Literal["standard"] = ...,
    retry: RequestRetryPolicy | None = ...,
) -> StandardProvider: ...


@overload
def build_provider(
    config: ProviderConfig,
    session: aiohttp.ClientSession,
    *,
    api_key: str | None,
    pool: Literal["lumina"],
    retry: RequestRetryPolicy | None = ...,
) -> QueueProvider: ...


def build_provider(
    config: ProviderConfig,
    session: aiohttp.ClientSession,
    *,
    api_key: str | None,
    pool: Pool = "standard",
    retry: RequestRetryPolicy | None = None,
) -> StandardProvider | QueueProvider:
    """The adapter that serves `pool` for `config`; raises ProviderConfigError if none can."""
    options = adapter_options(config, pool)
    if config.type == "null":
        return null.NullProvider(options=options)
    from workers.providers.http import HttpClient  # aiohttp: only when a provider is built

    http = HttpClient(
        session,
        name=config.name,
        base_url=config.base_url,
        api_key=api_key,
        timeout=config.timeout,
        retry=retry or RequestRetryPolicy(),
        max_response_bytes=max_response_bytes(options),
    )
    if pool == "standard":  # sim or openai: both speak the OpenAI-compatible API
        return openai_images.OpenAIImages(http, model=config.model, options=options)
    if config.type == "comfyui":
        return comfyui.ComfyUIQueue(http, model=config.model, options=options)
    return lumina.LuminaQueue(http, model=config.model, options=options)  # sim or lumina
