"""Errors that are the user's to fix: shown as one line, exit status 2."""

from __future__ import annotations

SHOWN_CHARS = 60  # characters of user text echoed in an error message


class UserError(Exception):
    """Bad input (spec, config, flags, ids): the message names what is wrong."""


def shown(value: object, limit: int = SHOWN_CHARS) -> str:
    """User text fit for a one-line message: clipped, control characters escaped."""
    text = str(value)
    clipped = len(text) > limit
    # Escaping (not dropping) keeps a NUL or a newline visible as what is wrong.
    safe = "".join(
        c if c.isprintable() else c.encode("unicode_escape", "backslashreplace").decode("ascii")
        for c in text[:limit]
    )
    return safe + "…" if clipped else safe


def one_line(message: str, limit: int = 1_000) -> str:
    """Last line of defence for the exit-2 contract: one line, bounded length."""
    flat = " ".join(message.split())
    return flat if len(flat) <= limit else flat[:limit] + "…"
