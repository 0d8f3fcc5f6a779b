"""How much a provider may send us, and how much of what it says we repeat. Pure."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

# A batch of 16 large PNGs as base64 fits; a provider streaming forever does not.
MAX_RESPONSE_BYTES = 64 * 1024 * 1024  # bytes of one response body (option max_response_bytes)
MAX_ERROR_BODY_BYTES = 64 * 1024  # bytes of an error response read for its message
MAX_PROVIDER_TEXT = 300  # characters of provider text (error, status) kept in a message
MAX_EXTERNAL_ID = 200  # characters of a job id (stored in the database, put in URLs)
MAX_IMAGE_REF = 2_048  # characters of an image URL or reference from a job's status
CANCEL_TIMEOUT = 10.0  # seconds for the best-effort cancel of a job we give up on

# Options every HTTP provider type accepts under [providers.NAME], with their defaults.
COMMON_OPTIONS: dict[str, Any] = {"max_response_bytes": MAX_RESPONSE_BYTES}


def clip(text: str, limit: int = MAX_PROVIDER_TEXT) -> str:
    """`text` cut to `limit` characters (marked with …); redact before clipping, never after."""
    return text if len(text) <= limit else text[:limit] + "…"


def max_response_bytes(options: Mapping[str, Any]) -> int:
    """The validated max_response_bytes option."""
    value = options["max_response_bytes"]
    if type(value) is not int or value < 1:
        raise ValueError(f"max_response_bytes must be a positive integer, got {clip(repr(value))}")
    return value
