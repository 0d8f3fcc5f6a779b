"""Query and path parameters, checked: a bad one is a 400 naming it (pure)."""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

from runner.api.errors import ApiError

_INT = re.compile(r"-?[0-9]{1,19}")

MAX_ID = 2**63 - 1  # bigint: a larger id cannot exist, so it is "not found", not an error


def int_param(
    query: Mapping[str, str], name: str, *, default: int | None, low: int, high: int
) -> int | None:
    """An integer query parameter within [low, high], or `default` when absent."""
    raw = query.get(name)
    if raw is None or raw == "":
        return default
    value = int(raw) if _INT.fullmatch(raw) else None
    if value is None or not low <= value <= high:
        raise ApiError(400, f"expected an integer from {low} to {high}", name)
    return value


def choice_param(query: Mapping[str, str], name: str, choices: Iterable[str]) -> str | None:
    """One of `choices`, or None when absent."""
    raw = query.get(name)
    if raw is None or raw == "":
        return None
    allowed = tuple(choices)
    if raw not in allowed:
        raise ApiError(400, f"expected one of {', '.join(allowed)}", name)
    return raw


def path_id(raw: str, what: str = "task") -> int:
    """A numeric id from the path (the route already matched digits); too large is a 404."""
    if len(raw) > 19 or int(raw) > MAX_ID:
        raise ApiError(404, f"{what} {raw}: not found")
    return int(raw)
