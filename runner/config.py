"""Configuration: built-in defaults ← TOML file ← IMGRUN_* environment ← command-line flags."""

from __future__ import annotations

import dataclasses
import json
import os
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Literal
from urllib.parse import urlsplit

import platformdirs
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from runner.errors import UserError, shown
from runner.policy.control_state import ControllerConfig
from runner.policy.control_state import Policy as ControlPolicy
from runner.policy.duration import parse_duration
from runner.policy.scaling import PolicyName, ScalingConfig
from runner.spec import limits as spec_limits
from workers.kinds import POOL_NAMES, PROVIDER_POOLS, PoolName, ProviderType

MAX_CONFIG_BYTES = 1 << 20  # a config file is a page of settings, never megabytes

EventName = Literal["task.finished", "runner.lost", "provider.degraded", "error.new"]
ALL_EVENTS: tuple[EventName, ...] = (
    "task.finished",
    "runner.lost",
    "provider.degraded",
    "error.new",
)
ENV_PREFIX = "IMGRUN_"
ENV_NESTING = "__"  # IMGRUN_POOLS__STANDARD__MAX is pools.standard.max


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

    def scaling(self) -> ScalingConfig:
        """The policy's config: every field the two share, by name (the one conversion)."""
        shared = {f.name for f in dataclasses.fields(ScalingConfig)}
        return ScalingConfig(**{name: getattr(self, name) for name in shared})

    @model_validator(mode="after")
    def _initial_within_max(self) -> PoolConfig:
        if self.initial > self.max:
            raise ValueError(f"initial ({self.initial}) is above max ({self.max})")
        return self


NULL_PROVIDER_LIMIT = 1_000


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
    # --- fleet-wide control (one limit per provider, shared by every runner) ---
    policy: ControlPolicy | None = None  # default: adaptive ("fixed" for the null provider)
    initial: int | None = Field(default=None, ge=1)  # default 10 (null: max_concurrency)
    min: int = Field(default=1, ge=1)
    max_concurrency: int | None = Field(default=None, ge=1)  # hard cap; default 50 (null 1000)
    rpm: int | None = Field(default=None, ge=1)  # fleet-wide requests per minute
    max_retry_after: float = Field(default=300.0, ge=0)  # seconds; longer ones are clamped
    window: float = Field(default=5.0, gt=0, le=3_600)  # seconds between fleet decisions

    @model_validator(mode="after")
    def _bounds_in_order(self) -> ProviderSettings:
        control = self.control()  # raises ValueError (a validation error) when out of order
        del control
        return self

    def control(self) -> ControllerConfig:
        """This provider's fleet-wide controller configuration, defaults resolved."""
        overhead_only = self.type == "null"  # measures the runner itself: never the bottleneck
        cap = self.max_concurrency or (NULL_PROVIDER_LIMIT if overhead_only else 50)
        initial = self.initial or (cap if overhead_only else min(10, cap))
        return ControllerConfig(
            policy=self.policy or ("fixed" if overhead_only else "adaptive"),
            initial=initial,
            min=min(self.min, initial),
            max_concurrency=cap,
            window=self.window,
            max_retry_after=self.max_retry_after,
        )

    @property
    def extra(self) -> dict[str, Any]:
        """Provider-specific parameters beyond the common keys."""
        return dict(self.model_extra or {})


class RunnerSettings(_Strict):
    """The runner process: identity, leases, retries, output."""

    executor_id: str | None = None
    group: str = "default"
    # Liveness is per runner: its heartbeat touches its own executors row only, and any
    # runner that finds one silent past stale_after releases that runner's subtasks.
    heartbeat_interval: float = Field(default=1.0, gt=0)  # seconds
    stale_after: float = Field(default=4.0, gt=0)  # seconds of heartbeat silence = dead
    # The backstop for rows no live runner holds (set at claim, never renewed).
    lease: float = Field(default=60.0, gt=0)
    poll_interval: float = Field(default=1.0, gt=0)
    retry_base: float = Field(default=1.0, ge=0)
    rate_limit_deferrals: int = Field(default=50, ge=0)
    output_dir: str | None = None
    metrics_port: int | None = Field(default=None, ge=0, le=65535)
    metrics_host: str = "127.0.0.1"  # loopback unless you mean to expose it
    shutdown_grace: float = Field(default=30.0, ge=0)
    outcome_batch: int = Field(default=500, ge=1)  # outcomes recorded per statement
    # seconds a provider is paused after refusing our credentials or model name
    misconfigured_pause: float = Field(default=60.0, gt=0)
    # Routing (`imgrun run --pool P --provider NAME`): what this runner claims. Empty: every
    # pool, and every configured provider that can serve it.
    pools: tuple[PoolName, ...] = ()
    providers: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _liveness(self) -> RunnerSettings:
        # A live runner must get at least two heartbeats in before the fleet declares it dead.
        if self.stale_after < 2 * self.heartbeat_interval:
            raise ValueError(
                f"stale_after ({self.stale_after:g} s) must be at least twice"
                f" heartbeat_interval ({self.heartbeat_interval:g} s)"
            )
        return self


class RetentionSettings(_Strict):
    """Automatic pruning by the runners: finished tasks, old errors and alert events."""

    older_than: float = 0.0  # seconds (or "30d"); 0 = off
    images: bool = False  # also delete the pruned subtasks' image files
    interval: float = 3_600.0  # seconds (or "1h") between prunes; 0 = off
    batch: int = Field(default=1_000, ge=1, le=100_000)  # rows deleted per transaction

    @field_validator("older_than", "interval", mode="before")
    @classmethod
    def _duration(cls, value: object) -> float:
        return parse_duration(value)

    @property
    def enabled(self) -> bool:
        """Both a cutoff and an interval are set."""
        return self.older_than > 0 and self.interval > 0


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


class WebhookSettings(_Strict):
    """One `[[alerts.webhooks]]`: where to POST which events, signed with a secret from the env."""

    url: str = Field(min_length=1, max_length=2000)
    secret_env: str = Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")  # the NAME, never the secret
    events: tuple[EventName, ...] = Field(default=ALL_EVENTS, min_length=1)
    name: str | None = Field(default=None, max_length=100)  # for logs; default: the URL's host
    timeout: float = Field(default=10.0, gt=0, le=120)  # seconds per delivery attempt

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("expected an http:// or https:// URL")
        return url

    @property
    def label(self) -> str:
        """How logs name this hook: never by its full URL, which may hold a secret."""
        return self.name or urlsplit(self.url).hostname or "webhook"


class AlertSettings(_Strict):
    """Webhook alerts: delivery schedule and the watchdog's thresholds (seconds)."""

    webhooks: tuple[WebhookSettings, ...] = ()
    interval: float = Field(default=2.0, gt=0)  # how often due deliveries are looked for
    retry_base: float = Field(default=5.0, gt=0)  # retry n waits retry_base × 2^n …
    retry_max_delay: float = Field(default=3600.0, gt=0)  # … at most this long
    max_age: float = Field(default=86400.0, gt=0)  # then the event is given up
    lease: float = Field(default=120.0, gt=0)  # a claimed event is free again after this
    retention: float = Field(default=7 * 86400.0, gt=0)  # delivered events are kept this long
    watchdog_interval: float = Field(default=15.0, gt=0)
    runner_lost_after: float = Field(default=40.0, gt=0)  # heartbeat silence that means lost
    degraded_window: float = Field(default=300.0, gt=0)
    degraded_share: float = Field(default=0.5, gt=0, le=1)  # 429/5xx ÷ (those + completions)
    degraded_min_events: int = Field(default=20, ge=1)  # 429/5xx needed in the window
    degraded_cooldown: float = Field(default=900.0, ge=0)  # per provider, between alerts

    @model_validator(mode="after")
    def _lease_outlasts_a_delivery(self) -> AlertSettings:
        slowest = max((hook.timeout for hook in self.webhooks), default=0.0)
        if self.lease <= slowest:
            raise ValueError(f"lease ({self.lease}) must exceed every webhook timeout ({slowest})")
        return self


class ApiSettings(_Strict):
    """`imgrun serve`: where it listens and how much it accepts."""

    host: str = "127.0.0.1"
    port: int = Field(default=8700, ge=0, le=65535)
    max_body: int = Field(default=1 << 20, ge=1024, le=64 << 20)  # bytes of one request body
    request_timeout: float = Field(default=60.0, gt=0)  # seconds, body upload included
    max_event_streams: int = Field(default=100, ge=1)  # concurrent /v1/events clients
    event_stream_seconds: float = Field(default=3600.0, gt=0)  # then the client reconnects
    events_interval: float = Field(default=1.0, gt=0)  # how often /v1/events looks for changes


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
    alerts: AlertSettings = Field(default_factory=AlertSettings)
    api: ApiSettings = Field(default_factory=ApiSettings)
    retention: RetentionSettings = Field(default_factory=RetentionSettings)

    def pool(self, name: str) -> PoolConfig:
        """Settings of pool `name`."""
        return self.pools[name]  # type: ignore[index]  # callers pass validated pool names

    def with_runner(self, **settings: object) -> Config:
        """This config with `[runner]` settings replaced (flags), validated; UserError if bad."""
        data = self.model_dump()
        data["runner"] |= {k: v for k, v in settings.items() if v not in (None, ())}
        try:
            return Config.model_validate(data)
        except ValidationError as exc:
            raise UserError(describe_validation_error(exc)) from None

    def routes(self) -> dict[str, list[str]]:
        """pool -> the providers this runner claims for in it (only configured ones)."""
        pools = self.runner.pools or POOL_NAMES
        wanted = self.runner.providers or tuple(self.providers)
        return {
            pool: [
                name
                for name in wanted
                if name in self.providers and pool in PROVIDER_POOLS[self.providers[name].type]
            ]
            for pool in pools
        }

    @model_validator(mode="after")
    def _routes_resolve(self) -> Config:
        unknown = [name for name in self.runner.providers if name not in self.providers]
        if unknown:
            raise ValueError(
                f"runner.providers: {', '.join(unknown)} has no [providers.{unknown[0]}] section"
            )
        routes = self.routes()
        for name in self.runner.providers:
            if not any(name in served for served in routes.values()):
                kind = self.providers[name].type
                raise ValueError(
                    f"runner.providers: {name} (type {kind}) serves none of the pools "
                    f"{', '.join(routes)}"
                )
        return self


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
    # IMGRUN_SECTION__KEY settings (see env_overrides); a value may hold a URL with
    # credentials, so these stay out of repr and dumps too.
    overrides: dict[str, str] = Field(default_factory=dict, repr=False, exclude=True)

    @classmethod
    def from_environ(cls, environ: Mapping[str, str]) -> Environment:
        """Read imgrun's variables from `environ` (API keys come later, from with_api_keys)."""
        home = Path(environ.get("IMGRUN_HOME") or default_home()).expanduser()
        config_path = Path(environ.get("IMGRUN_CONFIG") or home / "imgrun.toml").expanduser()
        return cls(
            home=home,
            config_path=config_path,
            database_url=environ.get("IMGRUN_DATABASE_URL") or None,
            overrides={
                name: value
                for name, value in environ.items()
                if name.startswith(ENV_PREFIX) and ENV_NESTING in name
            },
        )

    def with_api_keys(self, config: Config, environ: Mapping[str, str]) -> Environment:
        """A copy holding the secrets `config` names (API keys, webhook secrets), no others."""
        names = {p.api_key_env for p in config.providers.values() if p.api_key_env}
        names |= {hook.secret_env for hook in config.alerts.webhooks if hook.secret_env}
        keys = {name: environ[name] for name in sorted(names) if name in environ}
        return self.model_copy(update={"secrets": keys})

    def api_key(self, settings: ProviderSettings) -> str | None:
        """The provider's API key, from the variable its config names."""
        return self.secrets.get(settings.api_key_env) if settings.api_key_env else None

    def secret(self, name: str) -> str | None:
        """The value of the variable `name` (a webhook secret), if set and not empty."""
        return self.secrets.get(name) or None


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
    if not where and not prefix and first["type"] == "value_error":
        return message  # a check of the whole config names the keys it is about
    location = f"{prefix}{where}" if where else prefix.rstrip(".") or "value"
    return f"{location}: {message}"


def env_overrides(environ: Mapping[str, str]) -> dict[str, Any]:
    """Settings from IMGRUN_SECTION__KEY[__KEY…] variables (lists and tables as JSON)."""
    # Only names with the nesting separator are settings: IMGRUN_HOME, IMGRUN_CONFIG and
    # IMGRUN_DATABASE_URL name where things are, and every setting lives in a section.
    settings: dict[str, Any] = {}
    for name, raw in sorted(environ.items()):
        if not name.startswith(ENV_PREFIX) or ENV_NESTING not in name or raw == "":
            continue
        path = name[len(ENV_PREFIX) :].lower().split(ENV_NESTING)
        if not all(path):
            raise UserError(f"{name}: empty key in the variable name")
        node = settings
        for part in path[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise UserError(f"{name}: {'.'.join(path[:-1])} is set as a value elsewhere")
        node[path[-1]] = _env_value(name, raw)
    return settings


def _env_value(name: str, raw: str) -> Any:
    if raw.lstrip()[:1] not in ("[", "{"):
        return raw  # pydantic turns "80" into 80 and "true" into True where the field says so
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise UserError(f"{name}: malformed JSON: {exc.msg}") from None


def _env_name(error: ValidationError, environ: Mapping[str, str]) -> str | None:
    """The variable that set the first invalid field, if one did."""
    loc = [str(part) for part in error.errors()[0]["loc"] if not isinstance(part, int)]
    for depth in range(len(loc), 0, -1):
        name = ENV_PREFIX + ENV_NESTING.join(loc[:depth]).upper()
        if environ.get(name):
            return name
    # An unknown section or key: the variable names something below it.
    below = ENV_PREFIX + ENV_NESTING.join(loc).upper() + ENV_NESTING
    return next((name for name in sorted(environ) if name.startswith(below)), None)


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
    """Defaults ← TOML file (if present) ← IMGRUN_* variables ← `overrides` (from flags)."""
    data: dict[str, Any] = Config().model_dump(exclude_unset=False)
    if env.config_path.exists():
        from_file = _read_toml(env.config_path)
        # A [providers.X] table replaces nothing but X; pools merge key by key.
        data = merge_settings(data, from_file)
    data = merge_settings(data, env_overrides(env.overrides))
    if overrides:
        data = merge_settings(data, overrides)
    try:
        return Config.model_validate(data)
    except ValidationError as exc:
        variable = _env_name(exc, env.overrides)
        where = f"config ({variable})" if variable else "config"
        raise UserError(f"{where} {describe_validation_error(exc)}") from None
