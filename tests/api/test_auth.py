"""Bearer tokens guard every route but /healthz; tokens are stored only as hashes."""

from __future__ import annotations

import aiohttp
import pytest
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from db import api_queries
from db.engine import make_engine
from db.store import PgStore
from runner.api.app import build_app
from runner.api.auth import hash_token, new_token
from runner.api.server import check_exposure
from runner.errors import UserError
from tests.api.conftest import Api

pytestmark = pytest.mark.anyio

ROUTES = [
    ("POST", "/v1/tasks"),
    ("GET", "/v1/tasks"),
    ("GET", "/v1/tasks/1"),
    ("POST", "/v1/tasks/1/cancel"),
    ("POST", "/v1/tasks/1/retry"),
    ("GET", "/v1/tasks/1/results"),
    ("GET", "/v1/images/1/1-0.png"),
    ("GET", "/v1/status"),
    ("GET", "/v1/errors"),
    ("GET", "/v1/events"),
    ("GET", "/v1/openapi.json"),
    ("GET", "/v1/nowhere"),
]
BAD_HEADERS = [
    {},
    {"Authorization": "Bearer imgrun_not-a-real-token"},
    {"Authorization": "Basic dGVzdGVyOnNlY3JldA=="},
    {"Authorization": "Bearer"},
    {"Authorization": "Bearer " + "x" * 5000},
]


@pytest.mark.parametrize("headers", BAD_HEADERS)
async def test_every_v1_route_refuses_without_a_valid_token(
    api: Api, engine: AsyncEngine, headers: dict[str, str]
) -> None:
    """401 with the JSON error naming Authorization, for every route; nothing is written."""
    async with aiohttp.ClientSession(base_url=api.url) as anonymous:
        for method, path in ROUTES:
            body = b'{"name": "x", "prompts": ["a"]}'
            kwargs = {"data": body, "headers": {**headers, "Content-Type": "application/json"}}
            async with anonymous.request(method, path, **kwargs) as response:
                assert response.status == 401, (method, path)
                assert response.headers["WWW-Authenticate"] == "Bearer"
                error = (await response.json())["error"]
                assert error == {"field": "Authorization", "message": error["message"]}
    async with engine.connect() as connection:
        assert await connection.scalar(text("SELECT count(*) FROM tasks")) == 0


async def test_healthz_needs_no_token_and_reports_the_database(api: Api) -> None:
    """200 with database true while PostgreSQL answers."""
    async with (
        aiohttp.ClientSession(base_url=api.url) as anonymous,
        anonymous.get("/healthz") as response,
    ):
        assert response.status == 200
        assert await response.json() == {"status": "ok", "database": True}


async def test_healthz_is_503_when_the_database_is_unreachable(api: Api) -> None:
    """An app whose database refuses connections says so (and still answers quickly)."""
    from aiohttp import web

    # Nothing listens on port 1: connections are refused at once.
    dead = make_engine("postgresql+asyncpg://nobody@127.0.0.1:1/none")
    runner = web.AppRunner(build_app(dead, api.config, api.images), access_log=None)
    await runner.setup()
    try:
        await web.TCPSite(runner, "127.0.0.1", 0).start()
        url = f"http://127.0.0.1:{runner.addresses[0][1]}/healthz"
        async with aiohttp.ClientSession() as client, client.get(url) as response:
            assert response.status == 503
            assert await response.json() == {"status": "unavailable", "database": False}
    finally:
        await runner.cleanup()
        await dead.dispose()


async def test_a_revoked_token_stops_working(api: Api, engine: AsyncEngine) -> None:
    """A second token works until it is revoked; the first is unaffected."""
    second = new_token()
    assert await api_queries.create_token(engine, "second", hash_token(second))
    auth = {"Authorization": f"Bearer {second}"}
    async with aiohttp.ClientSession(base_url=api.url, headers=auth) as client:
        async with client.get("/v1/tasks") as response:
            assert response.status == 200
        assert await api_queries.revoke_token(engine, "second")
        async with client.get("/v1/tasks") as response:
            assert response.status == 401
    async with api.client.get("/v1/tasks") as response:
        assert response.status == 200


async def test_only_a_hash_of_the_token_is_stored(api: Api, engine: AsyncEngine) -> None:
    """No column of api_tokens holds the token; its last use is recorded."""
    async with api.client.get("/v1/tasks") as response:
        assert response.status == 200
    async with engine.connect() as connection:
        rows = (await connection.execute(text("SELECT * FROM api_tokens"))).mappings().all()
    assert len(rows) == 1
    assert api.token not in repr(dict(rows[0]))
    assert rows[0]["token_hash"] == hash_token(api.token)
    assert rows[0]["last_used_at"] is not None


async def test_listening_beyond_loopback_needs_a_token(engine: AsyncEngine) -> None:
    """With no token: loopback is allowed, any other interface is refused; with one, both."""
    await check_exposure(PgStore(engine), "127.0.0.1")
    with pytest.raises(UserError, match="refusing to listen beyond loopback"):
        await check_exposure(PgStore(engine), "0.0.0.0")
    assert await api_queries.create_token(engine, "ops", hash_token(new_token()))
    await check_exposure(PgStore(engine), "0.0.0.0")
