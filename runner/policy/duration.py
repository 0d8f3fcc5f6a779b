"""Durations as an operator writes them: "30d", "12h", "90m", "45s", or seconds (pure)."""

from __future__ import annotations

import math
import re

UNITS = {"s": 1, "m": 60, "h": 3_600, "d": 86_400}  # seconds per unit
MAX_DURATION = 100 * 365 * 86_400  # seconds; a century: past it a cutoff means nothing
MAX_TEXT = 32  # characters; a duration is a few digits and a unit, never a page

# Digits with an optional fraction, then an optional unit (none: seconds).
_DURATION = re.compile(r"([0-9]{1,12}(?:\.[0-9]{1,9})?) ?([smhd]?)")


def parse_duration(value: object) -> float:
    """Seconds in `value` ("30d", "1.5h", "600", 600); raises ValueError saying what is wrong."""
    if isinstance(value, bool) or not isinstance(value, (int, float, str)):
        raise ValueError(f"expected a duration such as 30d, 12h, 90m or 45s, got {_show(value)}")
    seconds = _parse_text(value) if isinstance(value, str) else float(value)
    if not math.isfinite(seconds) or seconds < 0:
        raise ValueError(f"a duration must be a finite number of seconds >= 0, got {_show(value)}")
    if seconds > MAX_DURATION:
        limit = MAX_DURATION // 86_400
        raise ValueError(f"a duration must be at most {limit}d, got {_show(value)}")
    return seconds


def _parse_text(text: str) -> float:
    match = _DURATION.fullmatch(text.strip().lower()) if len(text) <= MAX_TEXT else None
    if match is None:
        raise ValueError(f"expected a duration such as 30d, 12h, 90m or 45s, got {_show(text)}")
    number, unit = match.groups()
    return float(number) * UNITS[unit or "s"]


def _show(value: object) -> str:
    # Clipped: the message is one line whatever the operator typed.
    shown = repr(value)
    return shown if len(shown) <= 40 else shown[:37] + "..."
