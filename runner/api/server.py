"""`imgrun serve`: the API on a TCP port plus alert delivery, until SIGINT/SIGTERM."""

from __future__ import annotations

import ipaddress
import logging
import signal
from collections.abc import Callable

import anyio
from aiohttp import web
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from runner.alerts.delivery import AlertDelivery
from runner.api.app import build_app
from runner.config import Config, Environment
from runner.errors import UserError
from runner.loop.service import output_dir
from runner.serving import app_runner

log = logging.getLogger(__name__)


def is_loopback(host: str) -> bool:
    """Whether `host` is only reachable from this machine."""
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False  # a name could resolve to anything


async def check_exposure(store: PgStore, host: str) -> None:
    """Refuse to listen beyond loopback while no token exists (UserError)."""
    if not is_loopback(host) and not await store.has_tokens():
        raise UserError(
            f"--host {host}: refusing to listen beyond loopback with no API token;"
            " create one first with `imgrun token create NAME`"
        )


async def serve_api(
    engine: AsyncEngine,
    config: Config,
    env: Environment,
    *,
    host: str,
    port: int,
    on_ready: Callable[[str], None] | None = None,
) -> None:
    """Serve until SIGINT/SIGTERM; alert delivery (and its watchdog) runs alongside."""
    store = PgStore(engine)
    await check_exposure(store, host)
    delivery = AlertDelivery.from_config(store, config, env)  # fails early on a missing secret
    if not await store.has_tokens():
        log.warning("no API tokens yet: every /v1 request gets 401 until `imgrun token create`")
    runner = app_runner(build_app(store, config, output_dir(config, env)))
    await runner.setup()
    try:
        site = web.TCPSite(runner, host, port)
        try:
            await site.start()
        except OSError as exc:
            raise UserError(f"--host {host} --port {port}: cannot listen: {exc.strerror}") from None
        bound = runner.addresses[0]
        url = f"http://{host if ':' not in host else f'[{host}]'}:{bound[1]}"
        log.info("API on %s (alerts to %d webhooks)", url, len(delivery.hooks))
        if on_ready is not None:
            on_ready(url)
        async with anyio.create_task_group() as group:
            group.start_soon(_stop_on_signal, group.cancel_scope)
            group.start_soon(delivery.run)
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


async def _stop_on_signal(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for signum in received:
            log.info("%s: stopping the API", signal.Signals(signum).name)
            scope.cancel()
            return
