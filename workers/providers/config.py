"""A configured provider: which adapter, where, with which key variable and options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

ProviderType = Literal["sim", "openai", "lumina", "comfyui", "null"]
Pool = Literal["standard", "lumina"]

DEFAULT_BASE_URL = "http://127.0.0.1:8800"
DEFAULT_TIMEOUT = 120.0  # seconds per HTTP request


class ProviderConfigError(ValueError):
    """The provider config cannot be used (unknown option, wrong pool for the type)."""


@dataclass(frozen=True)
class ProviderConfig:
    """One `[providers.NAME]` section; api_key_env names the variable, it never holds the key."""

    name: str
    type: ProviderType
    base_url: str = DEFAULT_BASE_URL
    api_key_env: str | None = None
    model: str = ""
    timeout: float = DEFAULT_TIMEOUT
    extra: Mapping[str, Any] = field(default_factory=dict)

    def options(self, allowed: Mapping[str, Any]) -> dict[str, Any]:
        """`extra` merged over the adapter's defaults; unknown keys are an error, not ignored."""
        unknown = sorted(set(self.extra) - set(allowed))
        if unknown:
            raise ProviderConfigError(
                f"provider {self.name!r} ({self.type}): unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(allowed)) or 'none'}"
            )
        return {**allowed, **self.extra}
