"""Typed keys for what the API's handlers share through the aiohttp application."""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

from db.store import PgStore
from runner.config import Config

STORE = web.AppKey("store", PgStore)
CONFIG = web.AppKey("config", Config)
IMAGES = web.AppKey("images", Path)  # the output directory the runners write images to
STREAMS = web.AppKey("streams", list[int])  # open /v1/events streams (a one-item counter)
TOKEN_NAME = web.RequestKey("token_name", str)  # who made the request (set by auth)
