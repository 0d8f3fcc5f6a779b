"""The HTTP servers imgrun runs (the API, a runner's metrics): one recipe, bounded in time."""

from __future__ import annotations

from aiohttp import web

# Seconds a connection may sit without a whole request: idle between keep-alive requests, or
# trickling its headers. aiohttp's keep-alive timer (an hour by default) is also its only
# bound on a request that never completes its headers (a slowloris), so it is set short.
IDLE_TIMEOUT = 15.0


def app_runner(app: web.Application, *, idle_timeout: float = IDLE_TIMEOUT) -> web.AppRunner:
    """An AppRunner for `app`: no access log, connections without a request closed."""
    return web.AppRunner(app, access_log=None, keepalive_timeout=idle_timeout)
