"""Configuration: built-in defaults ← TOML file ← IMGRUN_* environment ← command-line flags."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runner.errors import UserError

MAX_CONFIG_BYTES = 1 << 20  # a config file is a page of settings, never megabytes

PolicyName = Literal["adaptive", "queue-depth"]
PoolName = Literal["standard", "lumina"]
ProviderType = Literal["sim", "openai", "lumina", "comfyui", "null"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class PoolConfig(_Strict):
    """One concurrency pool's limits, scaling cadence and timeouts (seconds)."""

    initial: int = Field(ge=1)
    max: int = Field(ge=1)
    step: int = Field(ge=1)
    scale_up_interval: float = Field(ge=0)
    scale_down_interval: float = Field(ge=0)
    tick_interval: float = Field(default=10.0, gt=0)
    timeout: float = Field(gt=0)
    polling_interval: float = Field(default=5.0, gt=0)
    max_attempts: int = Field(default=60, ge=1)
    policy: PolicyName = "adaptive"

    @model_validator(mode="after")
    def _initial_within_max(self) -> PoolConfig:
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial}) is above max ({self.max})")
        return self


class ProviderSettings(_Strict):
    """How to reach one image backend; the API key is read from the variable `api_key_env`."""

    model_config = ConfigDict(extra="allow", frozen=True)

    type: ProviderType
    base_url: str = ""
    api_key_env: str | None = None
    model: str | None = None
    timeout: float = Field(default=120.0, gt=0)
    request_attempts: int = Field(default=4, ge=1, le=20)  # tries of one HTTP step per attempt
    request_retry_wait: float = Field(default=0.5, ge=0)  # seconds before the first re-try

    @property
    def extra(self) -> dict[str, Any]:
        """Provider-specific parameters beyond the common keys."""
        return dict(self.model_extra or {})


class RunnerSettings(_Strict):
    """The runner process: identity, leases, retries, output."""

    executor_id: str | None = None
    group: str = "default"
    heartbeat_interval: float = Field(default=5.0, gt=0)
    lease: float = Field(default=60.0, gt=0)
    poll_interval: float = Field(default=1.0, gt=0)
    retry_base: float = Field(default=1.0, ge=0)
    rate_limit_deferrals: int = Field(default=50, ge=0)
    output_dir: str | None = None
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"  # loopback unless you mean to expose it
    shutdown_grace: float = Field(default=30.0, ge=0)


class SubmitSettings(_Strict):
    """Limits applied when a spec is submitted."""

    max_subtasks: int = Field(default=100_000, ge=1)


STANDARD_POOL = PoolConfig(
    initial=10, max=50, step=5, scale_up_interval=60, scale_down_interval=180, timeout=120
)
LUMINA_POOL = PoolConfig(
    initial=2,
    max=20,
    step=2,
    scale_up_interval=120,
    scale_down_interval=180,
    timeout=300,
    polling_interval=5,
    max_attempts=60,
)


def _default_pools() -> dict[PoolName, PoolConfig]:
    return {"standard": STANDARD_POOL, "lumina": LUMINA_POOL}


class Config(_Strict):
    """The whole configuration."""

    pools: dict[PoolName, PoolConfig] = Field(default_factory=_default_pools)
    providers: dict[str, ProviderSettings] = Field(
        default_factory=lambda: {
            "sim": ProviderSettings(type="sim", base_url="http://127.0.0.1:8800"),
            "null": ProviderSettings(type="null"),
        }
    )
    runner: RunnerSettings = Field(default_factory=RunnerSettings)
    submit: SubmitSettings = Field(default_factory=SubmitSettings)

    def pool(self, name: str) -> PoolConfig:
        """Settings of pool `name`."""
        return self.pools[name]  # type: ignore[index]  # callers pass validated pool names


def default_home() -> Path:
    """Where imgrun keeps its embedded database and output when IMGRUN_HOME is unset."""
    # As root the embedded server runs as a system user (PostgreSQL refuses root), which
    # must traverse the folders above its data dir; /var/lib already allows that, /root not.
    if os.geteuid() == 0:
        return Path("/var/lib/imgrun")
    return Path(platformdirs.user_data_dir("imgrun"))


class Environment(BaseModel):
    """The IMGRUN_* variables, read once at start-up (nothing reads os.environ later)."""

    model_config = ConfigDict(frozen=True)

    home: Path
    config_path: Path
    # May carry a password: never in repr, str or dumps.
    database_url: str | None = Field(default=None, repr=False, exclude=True)
    # Only the variables that `api_key_env` settings name (see with_api_keys), never the
    # whole environment; kept out of repr, str and dumps so a logged settings object leaks nothing.
    secrets: dict[str, str] = Field(default_factory=dict, repr=False, exclude=True)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Environment:
        """Read imgrun's variables from `environ` (API keys come later, from with_api_keys)."""
        home = Path(environ.get("IMGRUN_HOME") or default_home()).expanduser()
        config_path = Path(environ.get("IMGRUN_CONFIG") or home / "imgrun.toml").expanduser()
        return cls(
            home=home,
            config_path=config_path,
            database_url=environ.get("IMGRUN_DATABASE_URL") or None,
        )

    def with_api_keys(self, config: Config, environ: Mapping[str, str]) -> Environment:
        """A copy holding the values of the variables `config`'s providers name, and no others."""
        names = {p.api_key_env for p in config.providers.values() if p.api_key_env}
        keys = {name: environ[name] for name in sorted(names) if name in environ}
        return self.model_copy(update={"secrets": keys})

    def api_key(self, settings: ProviderSettings) -> str | None:
        """The provider's API key, from the variable its config names."""
        return self.secrets.get(settings.api_key_env) if settings.api_key_env else None


def merge_settings(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Nested merge of settings tables; `override` wins."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(merged.get(key), Mapping):
            merged[key] = merge_settings(merged[key], value)
        else:
            merged[key] = value
    return merged


def describe_validation_error(error: ValidationError, prefix: str = "") -> str:
    """One line naming the first invalid field."""
    first = error.errors()[0]
    where = ".".join(str(part) for part in first["loc"])
    message = first["msg"]
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    location = f"{prefix}{where}" if where else prefix.rstrip(".") or "value"
    return f"{location}: {message}"


def _read_toml(path: Path) -> dict[str, Any]:
    """The config file's tables; UserError if it is unreadable, too big or not TOML."""
    try:
        with path.open("rb") as handle:
            raw = handle.read(MAX_CONFIG_BYTES + 1)
        if len(raw) > MAX_CONFIG_BYTES:
            raise UserError(f"config {path}: larger than {MAX_CONFIG_BYTES:,} bytes")
        return tomllib.loads(raw.decode("utf-8"))
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError) as exc:
        raise UserError(f"config {path}: {exc}") from None
    except RecursionError:
        raise UserError(f"config {path}: nested too deeply") from None


def load_config(env: Environment, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults ← TOML file (if present) ← `overrides` (from flags)."""
    data: dict[str, Any] = Config().model_dump(exclude_unset=False)
    if env.config_path.exists():
        from_file = _read_toml(env.config_path)
        # A [providers.X] table replaces nothing but X; pools merge key by key.
        data = merge_settings(data, from_file)
    if overrides:
        data = merge_settings(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"config {describe_validation_error(exc)}") from None
