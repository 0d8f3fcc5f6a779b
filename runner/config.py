"""Configuration: built-in defaults ← TOML file ← IMGRUN_* environment ← command-line flags."""

from __future__ import annotations

import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from runner import spec_limits
from runner.errors import UserError, shown

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
    """Limits applied when a spec is submitted (defaults and units: runner/spec_limits.py)."""

    max_subtasks: int = Field(default=spec_limits.MAX_SUBTASKS, ge=1)
    max_spec_bytes: int = Field(default=spec_limits.MAX_SPEC_BYTES, ge=1)
    max_prompt_chars: int = Field(default=spec_limits.MAX_PROMPT_CHARS, ge=1)
    max_value_chars: int = Field(default=spec_limits.MAX_VALUE_CHARS, ge=1)
    max_expanded_bytes: int = Field(default=spec_limits.MAX_EXPANDED_BYTES, ge=1)

    @property
    def limits(self) -> spec_limits.SpecLimits:
        """These settings as the spec code takes them."""
        return spec_limits.SpecLimits(**self.model_dump())


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
    # As root the embedded server runs as a separate OS user and opens up the parent
    # folders of its data dir; /var/lib is already traversable, /root is not.
    if os.geteuid() == 0:
        return Path("/var/lib/imgrun")
    return Path(platformdirs.user_data_dir("imgrun"))


class Environment(BaseModel):
    """The IMGRUN_* variables, read once at start-up (nothing reads os.environ later)."""

    model_config = ConfigDict(frozen=True)

    home: Path
    config_path: Path
    database_url: str | None
    secrets: dict[str, str]

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Environment:
        """Read imgrun's variables from `environ`."""
        home = Path(environ.get("IMGRUN_HOME") or default_home()).expanduser()
        config_path = Path(environ.get("IMGRUN_CONFIG") or home / "imgrun.toml").expanduser()
        return cls(
            home=home,
            config_path=config_path,
            database_url=environ.get("IMGRUN_DATABASE_URL") or None,
            secrets=dict(environ),
        )

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
    # Keys can be user text (a variable's name): clip and escape them to keep one line.
    where = ".".join(shown(part) for part in first["loc"])
    message = shown(first["msg"], 200)
    if first["type"] == "extra_forbidden":
        message = "unknown key"
    elif message.startswith("Value error, "):
        message = message.removeprefix("Value error, ")
    location = f"{prefix}{where}" if where else prefix.rstrip(".") or "value"
    return f"{location}: {message}"


def load_config(env: Environment, overrides: Mapping[str, Any] | None = None) -> Config:
    """Defaults ← TOML file (if present) ← `overrides` (from flags)."""
    data: dict[str, Any] = Config().model_dump(exclude_unset=False)
    if env.config_path.exists():
        try:
            from_file = tomllib.loads(env.config_path.read_text())
        except (OSError, tomllib.TOMLDecodeError) as exc:
            raise UserError(f"config {env.config_path}: {exc}") from None
        # A [providers.X] table replaces nothing but X; pools merge key by key.
        data = merge_settings(data, from_file)
    if overrides:
        data = merge_settings(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        raise UserError(f"config {describe_validation_error(exc)}") from None
