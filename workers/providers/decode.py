"""Checks on what providers send back, shared by the adapters."""

from __future__ import annotations

import base64
import binascii
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # annotations only: checking a config (`imgrun submit`) skips aiohttp
    from workers.providers.http import HttpClient


def b64_image(http: HttpClient, where: str, value: Any) -> bytes:
    """Decode a base64 image field, or raise a malformed-response TransientError."""
    if not isinstance(value, str) or not value:
        raise http.malformed(where, "image field is not a string")
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise http.malformed(where, "image is not valid base64") from None


def expect_count(http: HttpClient, where: str, items: Any, count: int) -> list[Any]:
    """A list of exactly `count` entries, or a malformed-response TransientError."""
    if not isinstance(items, list) or len(items) != count:
        got = len(items) if isinstance(items, list) else type(items).__name__
        raise http.malformed(where, f"expected {count} images, got {got}")
    return items
