"""A `[providers.NAME]` section as the workers see it (pure)."""

from __future__ import annotations

from typing import Any

from runner.config import ProviderSettings
from workers.providers.config import ProviderConfig


def provider_config(name: str, settings: ProviderSettings) -> ProviderConfig:
    """The workers' view of a `[providers.NAME]` section."""
    fields: dict[str, Any] = {
        "name": name,
        "type": settings.type,
        "timeout": settings.timeout,
        "api_key_env": settings.api_key_env,
        "extra": settings.extra,
    }
    if settings.base_url:
        fields["base_url"] = settings.base_url
    if settings.model:
        fields["model"] = settings.model
    return ProviderConfig(**fields)
