"""Duration parsing for retention: units s/m/h/d, plain seconds, and every bad shape refused."""

from __future__ import annotations

import pytest

from runner.policy.duration import MAX_DURATION, parse_duration


@pytest.mark.parametrize(
    ("text", "seconds"),
    [
        ("30d", 30 * 86_400),
        ("12h", 12 * 3_600),
        ("90m", 90 * 60),
        ("45s", 45),
        ("600", 600),
        ("1.5h", 5_400),
        (" 2D ", 2 * 86_400),
        ("0", 0),
        (3600, 3_600),
        (0.5, 0.5),
    ],
)
def test_durations_in_each_unit(text: object, seconds: float) -> None:
    """Each unit multiplies by its length in seconds; a bare number is seconds."""
    assert parse_duration(text) == seconds


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "d",
        "30x",
        "30 days",
        "-5d",
        "1e3",
        "3d4h",
        "nan",
        "inf",
        "٣d",
        "x" * 10_000,
        -1,
        float("nan"),
        float("inf"),
        True,
        None,
        [1],
        "1" * 13,
    ],
)
def test_bad_durations_are_refused_in_one_line(bad: object) -> None:
    """Unknown units, signs, exponents, non-numbers and huge input raise ValueError, one line."""
    with pytest.raises(ValueError) as caught:
        parse_duration(bad)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 200


def test_durations_are_capped() -> None:
    """Past a century a cutoff is a typo: refused rather than silently meaning 'never'."""
    assert parse_duration(f"{MAX_DURATION // 86_400}d") == MAX_DURATION
    with pytest.raises(ValueError, match="at most"):
        parse_duration(f"{MAX_DURATION // 86_400 + 1}d")
