"""The aiohttp application: middlewares (errors, time limit, auth, body cap) and every route."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from db.store import PgStore
from runner.api import events, results, system, tasks
from runner.api.auth import auth_middleware
from runner.api.context import CONFIG, IMAGES, STORE, STREAMS
from runner.api.errors import error_middleware
from runner.api.limits import timeout_middleware
from runner.config import Config


def build_app(store: PgStore, config: Config, images: Path) -> web.Application:
    """The API over `store`, serving images the runners stored under `images`."""
    # client_max_size makes aiohttp refuse (413) a body above the cap while reading it.
    app = web.Application(
        middlewares=[error_middleware, timeout_middleware, auth_middleware],
        client_max_size=config.api.max_body,
    )
    app[STORE] = store
    app[CONFIG] = config
    app[IMAGES] = images
    app[STREAMS] = [0]
    for module in (tasks, results, system, events):
        app.router.add_routes(module.routes)
    return app
