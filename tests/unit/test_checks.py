"""validate_providers: every [providers.NAME] is checked at start, naming the bad key."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from runner.checks import validate_providers, validate_task_provider
from runner.config import MAX_CONFIG_BYTES, Config, Environment, ProviderSettings, load_config
from runner.errors import UserError


def env_with(tmp_path: Path, config: Config, **variables: str) -> Environment:
    """An environment whose process variables are `variables`."""
    env = Environment(home=tmp_path, config_path=tmp_path / "none.toml")
    return env.with_api_keys(config, variables)


def config_with(name: str, **section: Any) -> Config:
    """The default config plus one provider section."""
    return Config(providers={**Config().providers, name: ProviderSettings(**section)})


def check(tmp_path: Path, config: Config, **variables: str) -> None:
    """validate_providers on `config`, with `variables` as the environment."""
    validate_providers(config, env_with(tmp_path, config, **variables))


def test_defaults_and_a_full_valid_config_pass(tmp_path: Path) -> None:
    """The built-in config and one valid section of every type raise nothing."""
    check(tmp_path, Config())
    sections: dict[str, ProviderSettings] = {
        "sim2": ProviderSettings(type="sim", base_url="http://127.0.0.1:1", send_seed=False),
        "dalle": ProviderSettings(
            type="openai",
            base_url="https://api.example.com/v1",
            api_key_env="DALLE_KEY",
            response_format="url",
            body={"quality": "hd"},
        ),
        "queue": ProviderSettings(type="lumina", base_url="http://q.example", body={}),
        "comfy": ProviderSettings(
            type="comfyui", base_url="http://c.example:8188", steps=30, cfg=6, workflow=None
        ),
        "nothing": ProviderSettings(type="null", emit_png=True),
    }
    check(tmp_path, Config(providers=sections), DALLE_KEY="k")


@pytest.mark.parametrize(
    ("section", "message"),
    [
        (
            {"type": "sim", "colour": "red"},
            "config providers.bad.colour: unknown option; known: body, max_response_bytes,"
            " response_format, send_seed, sizes",
        ),
        (
            {"type": "openai", "respons_format": "url", "sise": 1},
            "config providers.bad.respons_format: unknown options respons_format, sise; known:"
            " body, max_response_bytes, response_format, send_seed, sizes",
        ),
        (
            {"type": "openai", "response_format": "png"},
            "config providers.bad.response_format: expected one of b64_json, url",
        ),
        ({"type": "comfyui", "steps": "30"}, "config providers.bad.steps: expected an integer"),
        ({"type": "comfyui", "cfg": True}, "config providers.bad.cfg: expected a number"),
        ({"type": "null", "emit_png": 1}, "config providers.bad.emit_png: expected true or false"),
        ({"type": "lumina", "body": "x"}, "config providers.bad.body: expected a table"),
        (
            {"type": "lumina", "base_url": "q.example/api"},
            "config providers.bad.base_url: not an http(s) URL with a host",
        ),
        (
            {"type": "openai", "base_url": "ftp://x.example"},
            "config providers.bad.base_url: not an http(s) URL with a host",
        ),
        (
            {"type": "openai", "base_url": "https://x.example", "api_key_env": "MISSING_KEY"},
            "config providers.bad.api_key_env: the variable MISSING_KEY is not set (or empty)",
        ),
    ],
)
def test_each_mistake_is_named(tmp_path: Path, section: dict[str, Any], message: str) -> None:
    """One line naming the key and what is wrong with it; values are never quoted."""
    with pytest.raises(UserError) as caught:
        check(tmp_path, config_with("bad", **section))
    assert str(caught.value) == message


def test_an_empty_key_variable_counts_as_missing(tmp_path: Path) -> None:
    """`DALLE_KEY=` (set but empty) would send no credentials: refused like an unset one."""
    config = config_with("d", type="openai", base_url="https://x.example", api_key_env="DALLE_KEY")
    with pytest.raises(UserError, match=r"providers\.d\.api_key_env"):
        check(tmp_path, config, DALLE_KEY="")


def test_submit_check_skips_keys_and_other_providers(tmp_path: Path) -> None:
    """A submit checks only its provider, and not the key (the runner's machine holds it)."""
    config = Config(
        providers={
            "dalle": ProviderSettings(
                type="openai", base_url="https://x.example", api_key_env="DALLE_KEY"
            ),
            "broken": ProviderSettings(type="sim", colour="red"),
        }
    )
    env = env_with(tmp_path, config)
    validate_task_provider(config, env, "dalle", "standard")
    with pytest.raises(UserError, match=r"^config providers\.broken\.colour: unknown option"):
        validate_task_provider(config, env, "broken", "standard")


def test_submit_check_refuses_a_pool_the_provider_cannot_serve(tmp_path: Path) -> None:
    """An openai-type provider has no queue protocol: a lumina task for it is refused."""
    config = config_with("dalle", type="openai", base_url="https://x.example")
    with pytest.raises(UserError) as caught:
        validate_task_provider(config, env_with(tmp_path, config), "dalle", "lumina")
    assert str(caught.value) == (
        "provider: 'dalle' (type openai) cannot serve the lumina pool; it serves: standard"
    )


def test_a_huge_key_is_cut_in_the_message(tmp_path: Path) -> None:
    """A hostile 100 KB option name is named, but only its first characters."""
    key = "k" * 100_000
    with pytest.raises(UserError) as caught:
        check(tmp_path, config_with("bad", type="sim", **{key: 1}))
    message = str(caught.value)
    assert message.startswith("config providers.bad.kkk") and len(message) < 1_000


@pytest.mark.parametrize(
    ("content", "complaint"),
    [
        ("# " + "x" * (MAX_CONFIG_BYTES + 10), f"larger than {MAX_CONFIG_BYTES:,} bytes"),
        ("a = " + "[" * 50_000 + "]" * 50_000, "nested too deeply"),
        ("[pools\n", "Expected ']'"),
        ("x = 1\n", "config x: unknown key"),
    ],
)
def test_config_file_is_bounded_and_named(tmp_path: Path, content: str, complaint: str) -> None:
    """Oversized, deeply nested or malformed config files are one-line UserErrors."""
    path = tmp_path / "imgrun.toml"
    path.write_text(content)
    with pytest.raises(UserError) as caught:
        load_config(Environment(home=tmp_path, config_path=path))
    assert complaint in str(caught.value) and "\n" not in str(caught.value)
