"""Assembles a runner process: one HTTP session, providers, image store, executor, signals."""

from __future__ import annotations

import logging
import os
import secrets
import signal
import socket
from collections.abc import Awaitable, Callable, Mapping, Sequence
from functools import partial
from importlib.metadata import version
from pathlib import Path

import aiohttp
import anyio
from sqlalchemy.ext.asyncio import AsyncEngine

from db.records import ClaimedSubtask, Outcome
from db.store import PgStore
from runner.alerts.delivery import AlertDelivery
from runner.config import Config, Environment, PoolConfig
from runner.loop import duties
from runner.loop.executor import Executor, Identity, Work
from runner.loop.fleet import Fleet
from runner.loop.journal import Journal
from runner.loop.recorder import Discard
from runner.provider_settings import provider_config
from runner.serving import app_runner
from workers.errors import PermanentError
from workers.kinds import LUMINA, STANDARD, pool_kind
from workers.polling import PollSettings, run_polling
from workers.providers.base import QueueProvider, StandardProvider
from workers.providers.config import ProviderConfig, ProviderConfigError
from workers.providers.factory import build_provider
from workers.providers.http import make_session
from workers.providers.retry import RequestRetryPolicy
from workers.standard import run_standard
from workers.storage import ImageStore
from workers.types import ImageRequest, WorkResult, image_paths

log = logging.getLogger(__name__)


class Providers:
    """Adapters built on first use, one per (provider, pool), all on one session."""

    def __init__(self, config: Config, env: Environment, session: aiohttp.ClientSession) -> None:
        self.config = config
        self.env = env
        self.session = session
        # Told (provider, pool, error) of every error a provider's own retries absorb.
        self.on_retry: Callable[[str, str, BaseException], None] | None = None
        self._standard: dict[str, StandardProvider] = {}
        self._queue: dict[str, QueueProvider] = {}

    def _settings(
        self, name: str, pool: str
    ) -> tuple[ProviderConfig, str | None, RequestRetryPolicy]:
        settings = self.config.providers.get(name)
        if settings is None:
            raise PermanentError(f"provider {name!r} is not configured on this runner")

        def observe(exc: BaseException) -> None:
            self.absorbed(name, pool, exc)

        retry = RequestRetryPolicy(
            attempts=settings.request_attempts,
            wait_initial=settings.request_retry_wait,
            on_retry=observe,
        )
        return provider_config(name, settings), self.env.api_key(settings), retry

    def absorbed(self, name: str, pool: str, exc: BaseException) -> None:
        """Pass on an error the attempt went on past (an in-attempt retry, a failed poll)."""
        if self.on_retry is not None:
            self.on_retry(name, pool, exc)

    def standard(self, name: str) -> StandardProvider:
        """The adapter serving the standard pool; PermanentError if there is none."""
        if name not in self._standard:
            config, key, retry = self._settings(name, STANDARD.name)
            try:
                self._standard[name] = build_provider(
                    config, self.session, api_key=key, retry=retry
                )
            except ProviderConfigError as exc:
                raise PermanentError(str(exc)) from None
        return self._standard[name]

    def queue(self, name: str) -> QueueProvider:
        """The adapter serving the lumina pool; PermanentError if there is none."""
        if name not in self._queue:
            config, key, retry = self._settings(name, LUMINA.name)
            try:
                self._queue[name] = build_provider(
                    config, self.session, api_key=key, pool="lumina", retry=retry
                )
            except ProviderConfigError as exc:
                raise PermanentError(str(exc)) from None
        return self._queue[name]

    def secrets(self) -> tuple[str, ...]:
        """Every configured API key value, to redact from errors."""
        keys = (self.env.api_key(s) for s in self.config.providers.values())
        return tuple(k for k in keys if k)


def make_work(config: Config, providers: Providers, store: ImageStore) -> Work:
    """The function the executor calls for each claimed subtask."""
    lumina = config.pool(LUMINA.name)
    poll_settings = PollSettings(
        polling_interval=lumina.polling_interval,
        max_attempts=lumina.max_attempts,
        timeout=lumina.timeout,
    )

    async def work(
        row: ClaimedSubtask,
        request: ImageRequest,
        on_submitted: Callable[[str], Awaitable[None]],
        should_stop: Callable[[], Awaitable[bool]],
    ) -> WorkResult:
        if pool_kind(row.pool).polls:
            return await run_polling(
                providers.queue(row.provider),
                store,
                request,
                settings=poll_settings,
                external_id=row.external_id,
                on_submitted=on_submitted,
                should_stop=should_stop,
                on_absorbed=partial(providers.absorbed, row.provider, row.pool),
            )
        # The attempt's deadline (the pool's timeout) is kept by the executor's crew.
        return await run_standard(providers.standard(row.provider), store, request)

    return work


def make_discard(store: ImageStore) -> Discard:
    """Removes the images of completions the fence dropped."""

    async def discard(outcomes: Sequence[Outcome]) -> None:
        paths = [path for outcome in outcomes for path in image_paths(outcome.result)]
        removed = await store.discard(paths)
        if removed:
            log.info("removed %d images of attempts that were not recorded", removed)

    return discard


def output_dir(config: Config, env: Environment) -> Path:
    """Where images go: [runner] output_dir, else IMGRUN_HOME/output."""
    return Path(config.runner.output_dir or env.home / "output").expanduser()


def make_identity(config: Config) -> Identity:
    """This process's executor identity."""
    host = socket.gethostname()
    pid = os.getpid()
    executor_id = config.runner.executor_id or f"{host}-{pid}-{secrets.token_hex(2)}"
    return Identity(executor_id, config.runner.group, host, pid, version("imgrun"))


async def _serve_metrics(executor: Executor, host: str, port: int) -> None:
    """/metrics (Prometheus text format) and /healthz on loopback until cancelled."""
    from aiohttp import web

    async def metrics(_request: web.Request) -> web.Response:
        executor.metrics.observe_pools(executor.snapshot())
        return web.Response(
            body=executor.metrics.exposition(), content_type="text/plain", charset="utf-8"
        )

    async def healthz(_request: web.Request) -> web.Response:
        return web.json_response(
            {"executor_id": executor.executor_id, "stopping": executor.stop_requested.is_set()}
        )

    app = web.Application()
    app.router.add_get("/metrics", metrics)
    app.router.add_get("/healthz", healthz)
    runner = app_runner(app)
    await runner.setup()
    try:
        await web.TCPSite(runner, host, port).start()
        log.info("metrics on http://%s:%d/metrics", host, runner.addresses[0][1])
        await anyio.sleep_forever()
    finally:
        with anyio.CancelScope(shield=True):
            await runner.cleanup()


async def _signals(executor: Executor, scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGINT, signal.SIGTERM) as received:
        async for signum in received:
            if not executor.stop_requested.is_set():
                log.info(
                    "%s: finishing in-flight work (again to stop at once)",
                    signal.Signals(signum).name,
                )
                executor.request_stop()
            else:
                log.info(
                    "%s again: stopping now; leases cover the rest", signal.Signals(signum).name
                )
                executor.abort()
                scope.cancel()


def make_fleet(
    store: PgStore, executor_id: str, config: Config, routes: Mapping[str, Sequence[str]]
) -> Fleet:
    """This runner's side of the fleet-wide control of every provider it routes to."""
    serves: dict[str, list[str]] = {}
    for pool, names in routes.items():
        for name in names:
            serves.setdefault(name, []).append(pool)
    settings = {name: config.providers[name] for name in serves}
    return Fleet(
        store,
        executor_id,
        {name: (settings[name].control(), pools) for name, pools in serves.items()},
        rpm={name: s.rpm for name, s in settings.items()},
    )


async def serve(
    engine: AsyncEngine,
    config: Config,
    env: Environment,
    *,
    until_idle: bool = False,
    on_start: Callable[[Executor], None] | None = None,
) -> Executor:
    """Run a runner until a signal (or idle, with `until_idle`); returns the executor."""
    store = ImageStore(output_dir(config, env))
    # Built first: a webhook whose secret variable is unset stops the start (exit 2).
    database = PgStore(engine, lanes=True)
    alerts = AlertDelivery.from_config(database, config, env)
    routes = config.routes()
    pools: dict[str, PoolConfig] = {name: config.pool(name) for name in routes}
    async with make_session(limit=sum(p.max for p in pools.values()) + 10) as session:
        providers = Providers(config, env, session)
        identity = make_identity(config)
        executor = Executor(
            database,
            identity,
            config.runner,
            pools,
            make_work(config, providers, store),
            make_fleet(database, identity.executor_id, config, routes),
            routes,
            secrets=providers.secrets(),
            discard=make_discard(store),
            journal=Journal(env.home, identity.executor_id, identity.pid),
            until_idle=until_idle,
        )
        providers.on_retry = executor.observe_retry
        if on_start is not None:
            on_start(executor)
        async with anyio.create_task_group() as group:
            group.start_soon(_signals, executor, group.cancel_scope)
            group.start_soon(alerts.run, session)
            if config.retention.enabled:
                group.start_soon(
                    duties.retention_loop, database, config.retention, output_dir(config, env)
                )
            if config.runner.metrics_port is not None:
                group.start_soon(
                    _serve_metrics, executor, config.runner.metrics_host, config.runner.metrics_port
                )
            try:
                await executor.run()
            finally:
                await database.close()
            group.cancel_scope.cancel()
    return executor
