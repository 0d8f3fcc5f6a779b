"""Every config key can come from an IMGRUN_SECTION__KEY variable; precedence is kept."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.config import Environment, env_overrides, load_config
from runner.errors import UserError


def _env(tmp_path: Path, variables: dict[str, str], toml: str | None = None) -> Environment:
    config_path = tmp_path / "imgrun.toml"
    if toml is not None:
        config_path.write_text(toml)
    return Environment(
        home=tmp_path, config_path=config_path, database_url=None, overrides=variables
    )


def test_nested_names_become_nested_settings() -> None:
    """Sections and keys split on '__', lower-cased; JSON values for lists and tables."""
    settings = env_overrides(
        {
            "IMGRUN_POOLS__STANDARD__MAX": "80",
            "IMGRUN_PROVIDERS__DALLE__BASE_URL": "https://api.example.com",
            "IMGRUN_ALERTS__WEBHOOKS": '[{"url": "https://h.example.com", "secret_env": "S"}]',
            "IMGRUN_HOME": "/srv/imgrun",  # not a setting: no section
            "IMGRUN_DATABASE_URL": "postgresql://x",
            "PATH": "/bin",
            "IMGRUN_RUNNER__GROUP": "",  # empty: unset
        }
    )
    assert settings == {
        "pools": {"standard": {"max": "80"}},
        "providers": {"dalle": {"base_url": "https://api.example.com"}},
        "alerts": {"webhooks": [{"url": "https://h.example.com", "secret_env": "S"}]},
    }


def test_environment_beats_the_file_and_flags_beat_both(tmp_path: Path) -> None:
    """defaults ← TOML ← IMGRUN_* ← flags."""
    toml = "[pools.standard]\nmax = 60\nstep = 7\n[runner]\nlease = 30\n"
    env = _env(
        tmp_path,
        {"IMGRUN_POOLS__STANDARD__MAX": "80", "IMGRUN_RUNNER__LEASE": "45"},
        toml,
    )
    config = load_config(env, {"runner": {"lease": 90}})
    standard = config.pools["standard"]
    assert (standard.max, standard.step, standard.initial) == (80, 7, 10)
    assert config.runner.lease == 90


def test_a_provider_and_webhooks_entirely_from_the_environment(tmp_path: Path) -> None:
    """A container can configure a provider and alerts without any file."""
    env = _env(
        tmp_path,
        {
            "IMGRUN_PROVIDERS__DALLE__TYPE": "openai",
            "IMGRUN_PROVIDERS__DALLE__BASE_URL": "https://api.example.com",
            "IMGRUN_PROVIDERS__DALLE__API_KEY_ENV": "DALLE_KEY",
            "IMGRUN_PROVIDERS__DALLE__QUALITY": "hd",  # an extra param
            "IMGRUN_ALERTS__WEBHOOKS": (
                '[{"url": "https://h.example.com/x", "secret_env": "HOOK",'
                ' "events": ["error.new"]}]'
            ),
        },
    )
    config = load_config(env)
    dalle = config.providers["dalle"]
    assert (dalle.type, dalle.api_key_env, dalle.extra) == (
        "openai",
        "DALLE_KEY",
        {"quality": "hd"},
    )
    assert "sim" in config.providers  # the built-in ones are still there
    (hook,) = config.alerts.webhooks
    assert hook.events == ("error.new",) and hook.secret_env == "HOOK"


@pytest.mark.parametrize(
    ("variables", "message"),
    [
        ({"IMGRUN_RUNNER__LEASE": "-1"}, "IMGRUN_RUNNER__LEASE"),
        ({"IMGRUN_POOLS__STANDARD__MAX": "lots"}, "IMGRUN_POOLS__STANDARD__MAX"),
        ({"IMGRUN_POOLS__STANDARD__MAXX": "5"}, "IMGRUN_POOLS__STANDARD__MAXX"),
        ({"IMGRUN_NOPE__X": "1"}, "IMGRUN_NOPE__X"),
        ({"IMGRUN_ALERTS__WEBHOOKS": "[{"}, "IMGRUN_ALERTS__WEBHOOKS: malformed JSON"),
        (
            {"IMGRUN_ALERTS__WEBHOOKS": '[{"url": "ftp://x", "secret_env": "S"}]'},
            "IMGRUN_ALERTS__WEBHOOKS",
        ),
        ({"IMGRUN_RUNNER____LEASE": "1"}, "empty key"),
    ],
)
def test_a_bad_variable_is_one_line_naming_it(
    tmp_path: Path, variables: dict[str, str], message: str
) -> None:
    """The error names the variable that set the bad value."""
    with pytest.raises(UserError) as caught:
        load_config(_env(tmp_path, variables))
    text = str(caught.value)
    assert message in text and "\n" not in text


def test_secrets_stay_names(tmp_path: Path) -> None:
    """A webhook's secret is read from the variable it names, never stored in the config."""
    env = _env(
        tmp_path,
        {
            "IMGRUN_ALERTS__WEBHOOKS": '[{"url": "https://h.example.com", "secret_env": "HOOK"}]',
            "HOOK": "s3cr3t-value",
        },
    )
    config = load_config(env)
    assert "s3cr3t-value" not in config.model_dump_json()
    # Secrets come from the process environment, and only those the config names.
    env = env.with_api_keys(config, {"HOOK": "s3cr3t-value", "OTHER": "x"})
    assert env.secret(config.alerts.webhooks[0].secret_env) == "s3cr3t-value"
    assert env.secret("OTHER") is None
