"""Errors that are the user's to fix: shown as one line, exit status 2."""

from __future__ import annotations


class UserError(Exception):
    """Bad input (spec, config, flags, ids): the message names what is wrong."""
