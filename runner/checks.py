"""Start-up checks of the providers' configuration: a typo exits 2 before any work is claimed."""

from __future__ import annotations

from collections.abc import Iterable

from runner.config import Config, Environment
from runner.errors import UserError

# Not from runner.loop.service: `imgrun submit` checks its provider, and importing the
# runner's whole loop (executor, workers, alerts) cost it ~0.1 s of CPU at start-up.
from runner.provider_settings import provider_config
from workers.kinds import PROVIDER_POOLS
from workers.providers.config import ProviderConfigError
from workers.providers.factory import check_config

MAX_KEY_SHOWN = 120  # characters of a (hostile, huge) config key quoted in an error


def validate_providers(
    config: Config,
    env: Environment,
    *,
    names: Iterable[str] | None = None,
    require_keys: bool = True,
) -> None:
    """Raise UserError naming the first bad `[providers.NAME]` key; makes no request.

    `names` limits the check to those providers (default: all). `require_keys` also
    demands that each `api_key_env` variable is set, which only the runner needs: a
    submit may come from a machine that does not hold the keys.
    """
    for name in sorted(config.providers if names is None else names):
        settings = config.providers.get(name)
        if settings is None:
            known = ", ".join(sorted(config.providers))
            raise UserError(f"provider: unknown provider {name!r} (configured: {known})")
        try:
            check_config(provider_config(name, settings))
        except ProviderConfigError as exc:
            where = f"providers.{name}.{exc.key}" if exc.key else f"providers.{name}"
            where = where if len(where) <= MAX_KEY_SHOWN else where[:MAX_KEY_SHOWN] + "…"
            raise UserError(f"config {where}: {exc.detail}") from None
        if require_keys and settings.api_key_env and not env.api_key(settings):
            raise UserError(
                f"config providers.{name}.api_key_env: the variable"
                f" {settings.api_key_env} is not set (or empty)"
            )


def validate_task_provider(config: Config, env: Environment, name: str, pool: str) -> None:
    """Refuse a task whose provider is misconfigured or cannot serve its pool."""
    validate_providers(config, env, names=[name], require_keys=False)
    kind = config.providers[name].type
    if pool not in PROVIDER_POOLS.get(kind, frozenset()):
        raise UserError(
            f"provider: {name!r} (type {kind}) cannot serve the {pool} pool;"
            f" it serves: {', '.join(sorted(PROVIDER_POOLS.get(kind, frozenset())))}"
        )
