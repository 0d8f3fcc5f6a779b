"""Rate-limit headers: Retry-After and x-ratelimit-*, parsed without trusting the provider."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
from hypothesis import given
from hypothesis import strategies as st

from workers.headers import (
    ABSURD_SECONDS,
    RateLimitInfo,
    format_duration,
    parse_duration,
    parse_ratelimit,
    parse_retry_after,
)

NOW = datetime(2030, 1, 1, 12, 0, 0, tzinfo=UTC)
WALL = NOW.timestamp()


def http_date(delta: timedelta) -> str:
    """An RFC 9110 date `delta` from NOW."""
    return format_datetime(NOW + delta, usegmt=True)


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("7", 7.0),
        (" 7 ", 7.0),
        ("0", 0.0),  # legal; the controller still pauses a minimum
        ("1.5", 1.5),
        ("86400", 86_400.0),  # a day: long but believable
        (http_date(timedelta(seconds=30)), 30.0),
        (http_date(timedelta(seconds=-30)), 0.0),  # a past date means "now"
        ("Wed, 01 Jan 2030 12:02:00", 120.0),  # no zone: GMT per RFC 9110
        # Treated as absent: negative, not numbers, absurd, oversized, non-ASCII digits.
        ("-5", None),
        ("nan", None),
        ("NaN", None),
        ("inf", None),
        ("1e3", None),
        ("soon", None),
        ("", None),
        (None, None),
        ("86401", None),
        ("999999999", None),
        ("Fri, 31 Dec 9999 23:59:59 GMT", None),
        ("1" * 65, None),
        ("٣", None),
        ("Mon, 99 Foo 2030 99:99:99 GMT", None),
    ],
)
def test_retry_after(value: str | None, expected: float | None) -> None:
    """delta-seconds and HTTP-dates; anything negative, garbage or absurd is None."""
    assert parse_retry_after(value, now_wall=WALL) == expected


@given(st.text(max_size=80))
def test_retry_after_never_raises_and_stays_in_range(value: str) -> None:
    """Any header text gives None or a number in [0, one day]."""
    parsed = parse_retry_after(value, now_wall=WALL)
    assert parsed is None or 0 <= parsed <= ABSURD_SECONDS


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("1s", 1.0),
        ("6m0s", 360.0),
        ("20ms", 0.02),
        ("17.28s", 17.28),
        ("1h2m3.5s", 3723.5),
        ("2m", 120.0),
        ("12", 12.0),
        ("0ms", 0.0),
        ("", None),
        ("s", None),
        ("1x", None),
        ("-1s", None),
        ("25h", None),  # over a day: absurd
        ("1" * 65 + "s", None),
    ],
)
def test_duration(value: str, expected: float | None) -> None:
    """OpenAI's Go-style reset durations."""
    parsed = parse_duration(value)
    assert parsed == (pytest.approx(expected) if expected is not None else None)


@pytest.mark.parametrize(
    ("seconds", "text"),
    [
        (0.0, "0ms"),
        (0.02, "20ms"),
        (1.0, "1s"),
        (17.28, "17.28s"),
        (360, "6m0s"),
        (3723.5, "1h2m3.5s"),
    ],
)
def test_format_duration_writes_what_parse_reads(seconds: float, text: str) -> None:
    """The sim's headers use the same format the client parses."""
    assert format_duration(seconds) == text
    assert parse_duration(text) == pytest.approx(seconds)


def test_ratelimit_headers() -> None:
    """remaining is required; limit and reset are optional; junk is dropped, not raised."""
    full = {
        "x-ratelimit-limit-requests": "500",
        "x-ratelimit-remaining-requests": "499",
        "x-ratelimit-reset-requests": "120ms",
    }
    assert parse_ratelimit(full) == RateLimitInfo(remaining=499, limit=500, reset=0.12)
    assert parse_ratelimit({"x-ratelimit-remaining-requests": "3"}) == RateLimitInfo(3)
    junk = {**full, "x-ratelimit-limit-requests": "-1", "x-ratelimit-reset-requests": "later"}
    assert parse_ratelimit(junk) == RateLimitInfo(remaining=499)
    assert parse_ratelimit({**full, "x-ratelimit-limit-requests": "0"}) == RateLimitInfo(
        remaining=499, reset=0.12
    )
    assert parse_ratelimit({**full, "x-ratelimit-remaining-requests": "many"}) is None
    assert parse_ratelimit({**full, "x-ratelimit-remaining-requests": "9" * 14}) is None
    assert parse_ratelimit({}) is None
