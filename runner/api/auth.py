"""Bearer tokens: made once, stored as a sha256 hash, checked on every request but /healthz."""

from __future__ import annotations

import hashlib
import re
import secrets

from aiohttp import web

from runner.api.context import STORE, TOKEN_NAME
from runner.api.errors import ApiError, Handler
from runner.errors import UserError

TOKEN_PREFIX = "imgrun_"
PUBLIC_PATHS = frozenset({"/healthz"})
MAX_TOKEN_LEN = 200  # a longer Authorization value is refused before it is hashed
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")


def new_token() -> str:
    """A fresh token: 256 random bits, recognisable by its prefix."""
    return TOKEN_PREFIX + secrets.token_urlsafe(32)


def hash_token(token: str) -> str:
    """What the database keeps of a token."""
    return hashlib.sha256(token.encode()).hexdigest()


def check_name(name: str) -> str:
    """A token name: 1-64 letters, digits, '_', '.', '-' (starting with a letter or digit)."""
    if not _NAME.fullmatch(name):
        raise UserError(f"token name {name!r}: use 1-64 letters, digits, '_', '.' or '-'")
    return name


def bearer(header: str | None) -> str | None:
    """The token of an `Authorization: Bearer …` header, or None."""
    if not header or len(header) > MAX_TOKEN_LEN + 10:
        return None
    scheme, _, token = header.strip().partition(" ")
    token = token.strip()
    if scheme.lower() != "bearer" or not token or " " in token:
        return None
    return token


@web.middleware
async def auth_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Every path except the public ones needs a valid bearer token (401 otherwise)."""
    if request.path in PUBLIC_PATHS:
        return await handler(request)
    token = bearer(request.headers.get("Authorization"))
    name = await request.app[STORE].token_name(hash_token(token)) if token else None
    if name is None:
        raise ApiError(401, "missing or invalid bearer token", "Authorization")
    request[TOKEN_NAME] = name
    return await handler(request)
