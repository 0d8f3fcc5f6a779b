"""A configured provider: which adapter, where, with which key variable and options."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from workers.kinds import ProviderType

DEFAULT_BASE_URL = "http://127.0.0.1:8800"
DEFAULT_TIMEOUT = 120.0  # seconds per HTTP request


class ProviderConfigError(ValueError):
    """The provider config cannot be used (unknown option, wrong pool for the type)."""

    def __init__(self, provider: str, detail: str, *, key: str | None = None) -> None:
        super().__init__(
            f"provider {provider}: {key}: {detail}" if key else f"provider {provider}: {detail}"
        )
        self.detail = detail
        self.key = key  # the offending key of [providers.NAME], when there is one


_TYPE_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}
_TYPE_NAMES |= {dict: "a table", list: "a list"}


def _type_error(value: Any, default: Any) -> str | None:
    """Why `value` cannot replace an option whose default is `default` (None: it can)."""
    if default is None:
        return None  # no default to take a type from: the adapter checks it
    if isinstance(default, bool) or isinstance(value, bool):
        ok = isinstance(value, bool) and isinstance(default, bool)
    elif isinstance(default, float):
        ok = isinstance(value, int | float)
    else:
        ok = isinstance(value, type(default))
    return None if ok else f"expected {_TYPE_NAMES.get(type(default), type(default).__name__)}"


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

    def options(
        self, allowed: Mapping[str, Any], choices: Mapping[str, tuple[str, ...]] | None = None
    ) -> dict[str, Any]:
        """`extra` merged over the adapter's defaults; unknown keys and wrong types are errors."""
        unknown = sorted(set(self.extra) - set(allowed))
        if unknown:
            raise ProviderConfigError(
                f"{self.name!r} ({self.type})",
                f"unknown option{'s ' + ', '.join(unknown) if len(unknown) > 1 else ''}; "
                f"known: {', '.join(sorted(allowed)) or 'none'}",
                key=unknown[0],
            )
        for key, value in sorted(self.extra.items()):
            problem = _type_error(value, allowed[key])
            permitted = (choices or {}).get(key)
            if problem is None and permitted is not None and value not in permitted:
                problem = f"expected one of {', '.join(permitted)}"
            if problem:
                raise ProviderConfigError(f"{self.name!r} ({self.type})", problem, key=key)
        return {**allowed, **self.extra}
