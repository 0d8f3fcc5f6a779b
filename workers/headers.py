"""Pure parsing (and, for the sim, formatting) of providers' rate-limit headers.

One source for `Retry-After` and OpenAI's `x-ratelimit-*-requests`: the HTTP client, the
concurrency controller and the sim all use these. Header values come from the network, so
every parser bounds the text it looks at and answers None rather than raising.
"""

from __future__ import annotations

import email.utils
import math
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC

MAX_HEADER_CHARS = 64  # longer values are not a number or a date: ignored unparsed
# Longer than any real rate-limit window (OpenAI's longest reset is a day); a larger value is
# a broken or hostile header, not advice, so it is treated as absent rather than obeyed.
ABSURD_SECONDS = 86_400.0
MAX_COUNT = 10**12  # x-ratelimit counts above this are nonsense

_DELTA = re.compile(r"[0-9]{1,12}(?:\.[0-9]{1,9})?")
_COUNT = re.compile(r"[0-9]{1,13}")
# Go-style durations as OpenAI sends them: "1s", "6m0s", "20ms", "1h2m3.5s", "17.28s".
_NUM = r"[0-9]{1,12}(?:\.[0-9]{1,9})?"
_DURATION = re.compile(
    rf"(?:(?P<h>{_NUM})h)?(?:(?P<m>{_NUM})m(?!s))?(?:(?P<s>{_NUM})s)?(?:(?P<ms>{_NUM})ms)?"
)
_UNIT_SECONDS = {"h": 3600.0, "m": 60.0, "s": 1.0, "ms": 0.001}


def parse_retry_after(value: str | None, now_wall: float | None = None) -> float | None:
    """Seconds from a Retry-After (delta-seconds or HTTP-date); None if absent, bad or absurd.

    `now_wall` is the wall clock (Unix seconds) an HTTP-date is measured from; pass it to keep
    the call pure, else the clock is read. A date in the past means "now": 0.0.
    """
    if not value or len(value) > MAX_HEADER_CHARS:
        return None
    value = value.strip()
    if _DELTA.fullmatch(value):
        seconds = float(value)
    else:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError, IndexError, OverflowError):
            return None
        if when.tzinfo is None:  # RFC 9110 dates are GMT
            when = when.replace(tzinfo=UTC)
        now = time.time() if now_wall is None else now_wall
        seconds = max(0.0, when.timestamp() - now)
    return seconds if math.isfinite(seconds) and seconds <= ABSURD_SECONDS else None


def parse_duration(value: str | None) -> float | None:
    """Seconds from an x-ratelimit-reset value ("6m0s", "20ms", "1.5s" or bare seconds)."""
    if not value or len(value) > MAX_HEADER_CHARS:
        return None
    value = value.strip()
    if _DELTA.fullmatch(value):
        seconds = float(value)
    else:
        match = _DURATION.fullmatch(value)
        if match is None or not any(match.groupdict().values()):
            return None
        seconds = sum(
            float(amount) * _UNIT_SECONDS[unit]
            for unit, amount in match.groupdict().items()
            if amount is not None
        )
    return seconds if seconds <= ABSURD_SECONDS else None


def format_duration(seconds: float) -> str:
    """A Go-style duration as OpenAI writes it: "20ms", "1s", "6m0s", "1h2m3.5s"."""
    if seconds < 1:
        return f"{max(0, round(seconds * 1000))}ms"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    text = f"{round(secs, 3):g}s"
    if hours or minutes:
        text = f"{int(minutes)}m{text}"
    if hours:
        text = f"{int(hours)}h{text}"
    return text


def _count(value: str | None) -> int | None:
    if not value or len(value) > MAX_HEADER_CHARS or not _COUNT.fullmatch(value.strip()):
        return None
    count = int(value)
    return count if count <= MAX_COUNT else None


@dataclass(frozen=True)
class RateLimitInfo:
    """What a response's x-ratelimit-*-requests headers say about the request budget."""

    remaining: int  # requests left in the provider's window
    limit: int | None = None  # the window's size (requests per minute for OpenAI)
    reset: float | None = None  # seconds until the budget is full again


def parse_ratelimit(headers: Mapping[str, str]) -> RateLimitInfo | None:
    """The request budget from OpenAI-style headers; None without a usable `remaining`.

    `headers` must look names up case-insensitively (aiohttp's are) or use lower case.
    """
    remaining = _count(headers.get("x-ratelimit-remaining-requests"))
    if remaining is None:
        return None
    limit = _count(headers.get("x-ratelimit-limit-requests"))
    reset = parse_duration(headers.get("x-ratelimit-reset-requests"))
    return RateLimitInfo(remaining=remaining, limit=limit or None, reset=reset)
