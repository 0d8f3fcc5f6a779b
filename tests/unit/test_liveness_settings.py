"""[runner] heartbeat_interval and stale_after: defaults, and a pair that cannot work refused."""

from __future__ import annotations

from pathlib import Path

import pytest

from runner.config import Environment, RunnerSettings, load_config
from runner.errors import UserError


def test_defaults_beat_every_second_and_call_a_runner_dead_after_four() -> None:
    """The defaults the README documents: 1 s heartbeats, dead after 4 s of silence."""
    settings = RunnerSettings()
    assert (settings.heartbeat_interval, settings.stale_after) == (1.0, 4.0)


@pytest.mark.parametrize(
    ("toml", "ok"),
    [
        ("[runner]\nheartbeat_interval = 1\nstale_after = 2\n", True),
        ("[runner]\nheartbeat_interval = 1\nstale_after = 1.5\n", False),
        ("[runner]\nheartbeat_interval = 5\n", False),  # the default 4 s is too short for it
        ("[runner]\nstale_after = 0\n", False),
    ],
)
def test_a_runner_must_be_able_to_beat_twice_before_it_is_called_dead(
    tmp_path: Path, toml: str, ok: bool
) -> None:
    """stale_after below two heartbeats is a one-line config error naming the keys."""
    path = tmp_path / "imgrun.toml"
    path.write_text(toml)
    env = Environment(home=tmp_path, config_path=path, database_url=None, overrides={})
    if ok:
        assert load_config(env).runner.stale_after == 2.0
        return
    with pytest.raises(UserError) as caught:
        load_config(env)
    message = str(caught.value)
    assert "stale_after" in message and "\n" not in message
