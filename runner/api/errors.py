"""API errors: `{"error": {"field", "message"}}` for every failure, from any layer."""

from __future__ import annotations

import logging
import re
from collections.abc import Awaitable, Callable
from typing import Any

from aiohttp import web

from runner.api.context import CONFIG

log = logging.getLogger(__name__)

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

# "prompts[0]: unknown placeholder {x}" names its field first (runner.errors.UserError style).
_FIELD = re.compile(r"(?P<field>[A-Za-z_][\w.\[\]-]*|prompts × variables): (?P<message>.+)", re.S)

STATUS_MESSAGES = {
    400: "bad request",
    401: "missing or invalid bearer token",
    404: "not found",
    405: "method not allowed",
    413: "request body too large",
    415: "unsupported media type",
}


class ApiError(Exception):
    """A response the client caused: status, one-line message, the field at fault (or None)."""

    def __init__(self, status: int, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.message = message
        self.field = field


def split_field(message: str) -> tuple[str | None, str]:
    """'variables.x: not used' → ('variables.x', 'not used'); no field prefix → (None, message)."""
    match = _FIELD.fullmatch(message.strip())
    if match is None:
        return None, message.strip()
    return match["field"], match["message"]


def error_body(message: str, field: str | None = None) -> dict[str, Any]:
    """The JSON document of an error."""
    return {"error": {"field": field, "message": " ".join(message.split())}}


def error_response(
    status: int, message: str, field: str | None = None, headers: dict[str, str] | None = None
) -> web.Response:
    """An error as a JSON response."""
    return web.json_response(error_body(message, field), status=status, headers=headers)


@web.middleware
async def error_middleware(request: web.Request, handler: Handler) -> web.StreamResponse:
    """Turn ApiError, aiohttp's HTTP errors and unexpected failures into JSON errors."""
    try:
        return await handler(request)
    except ApiError as exc:
        headers = {"WWW-Authenticate": "Bearer"} if exc.status == 401 else None
        return error_response(exc.status, exc.message, exc.field, headers)
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        message = STATUS_MESSAGES.get(exc.status, exc.reason)
        if exc.status == 413:
            message = f"request body too large (limit {request.app[CONFIG].api.max_body} bytes)"
        return error_response(exc.status, message)
    except Exception:
        # The client gets no detail (it could hold internals); the log gets the traceback.
        log.exception("%s %s failed", request.method, request.path)
        return error_response(500, "internal error")
