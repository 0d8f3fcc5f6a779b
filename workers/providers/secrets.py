"""Keeps API keys out of messages built from provider responses."""

from __future__ import annotations

import re
from collections.abc import Iterable

# Credentials a server might echo back even when we don't know them (e.g. a proxy's key).
_PATTERNS = [
    re.compile(r"(?i)(bearer\s+)[^\s\"',;]+"),
    re.compile(r"(?i)(api[_-]?key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"),
    re.compile(r"(?i)(x-api-key[\"']?\s*[:=]\s*[\"']?)[^\s\"',;&]+"),
]
MASK = "***"


class Redactor:
    """Replaces the known secrets, and anything shaped like a credential, with ***."""

    def __init__(self, secrets: Iterable[str | None] = ()) -> None:
        # Longest first, so a key that contains another is masked whole.
        self._secrets = sorted({s for s in secrets if s}, key=len, reverse=True)

    def __call__(self, text: str) -> str:
        """Return `text` with every secret masked."""
        for secret in self._secrets:
            text = text.replace(secret, MASK)
        for pattern in _PATTERNS:
            text = pattern.sub(rf"\g<1>{MASK}", text)
        return text
