"""Secrets stay out of the settings object's repr and out of database-URL errors."""

from __future__ import annotations

from pathlib import Path

import pytest

from db.engine import DatabaseURLError, normalise_url
from runner.config import Config, Environment, ProviderSettings

SECRET = "s3cr3t-Pa55"


def environ(home: Path) -> dict[str, str]:
    """A process environment with a provider key, an unrelated secret and a database password."""
    return {
        "IMGRUN_HOME": str(home),
        "IMGRUN_DATABASE_URL": f"postgresql://app:{SECRET}-db@db.example/imgrun",
        "DALLE_KEY": f"{SECRET}-api",
        "AWS_SECRET_ACCESS_KEY": f"{SECRET}-aws",
        "PATH": "/usr/bin",
    }


def config_with_key() -> Config:
    """The default config plus a provider whose key lives in DALLE_KEY."""
    dalle = ProviderSettings(type="openai", base_url="https://x.example", api_key_env="DALLE_KEY")
    return Config(providers={"dalle": dalle})


def test_environment_holds_only_the_named_keys(tmp_path: Path) -> None:
    """Only variables named by api_key_env are kept; the rest of the environment is not."""
    env = Environment.from_environ(environ(tmp_path))
    assert env.secrets == {}
    env = env.with_api_keys(config_with_key(), environ(tmp_path))
    assert env.secrets == {"DALLE_KEY": f"{SECRET}-api"}
    assert env.api_key(config_with_key().providers["dalle"]) == f"{SECRET}-api"


def shown(env: Environment) -> list[str]:
    """Every way a settings object ends up in a log line or an error."""
    return [repr(env), str(env), str(env.model_dump()), env.model_dump_json()]


def test_environment_never_shows_a_secret(tmp_path: Path) -> None:
    """repr, str, model_dump and JSON of the settings object contain no key and no DB password."""
    env = Environment.from_environ(environ(tmp_path))
    assert env.database_url and SECRET in env.database_url  # it is there, just never shown
    assert all("home" in text for text in shown(env))  # the harmless fields still show
    assert not any(SECRET in text for text in shown(env))
    with_key = env.with_api_keys(config_with_key(), environ(tmp_path))
    assert not any(SECRET in text for text in shown(with_key))


@pytest.mark.parametrize(
    ("url", "complaint"),
    [
        (f"not a url {SECRET}", "not a database URL"),
        (f"postgresql://app:{SECRET}@db.example:notaport/imgrun", "not a database URL"),
        (f"postgresql://app:{SECRET}@[::1/imgrun", "not a database URL"),
        (f"mysql://app:{SECRET}@db.example/imgrun", "needs a PostgreSQL URL, not mysql"),
        (f"postgresql://app:{SECRET}@db.example/imgrun?foo=1", "unknown query parameter 'foo'"),
    ],
)
def test_bad_database_url_is_named_not_echoed(url: str, complaint: str) -> None:
    """Every rejection names the problem and never quotes the URL or its password."""
    with pytest.raises(DatabaseURLError) as caught:
        normalise_url(url)
    message = str(caught.value)
    assert message.startswith("IMGRUN_DATABASE_URL: ") and complaint in message
    assert SECRET not in message and "\n" not in message


def test_libpq_sslmode_is_accepted() -> None:
    """`?sslmode=require` (libpq's spelling) becomes asyncpg's `ssl`, instead of a traceback."""
    url = normalise_url("postgres://app:pw@db.example:6432/imgrun?sslmode=require")
    assert url == "postgresql+asyncpg://app:pw@db.example:6432/imgrun?ssl=require"
