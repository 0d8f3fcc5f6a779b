"""What every `imgrun` command shares: the consoles, the App object, JSON output."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import anyio
import click
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from db.engine import database_url, open_engine
from db.store import PgStore
from runner.config import Config, Environment
from runner.jsonable import jsonable

T = TypeVar("T")

out = Console()
err = Console(stderr=True)


class App:
    """What every command needs: the environment read at start-up and the merged config."""

    def __init__(self, env: Environment, config: Config) -> None:
        self.env = env
        self.config = config

    def with_engine(
        self, work: Callable[[AsyncEngine], Awaitable[T]], *, upgrade: bool = True
    ) -> T:
        """Run `work` on an engine to the configured (or embedded) database."""

        async def main(url: str) -> T:
            async with open_engine(url, upgrade=upgrade) as engine:
                return await work(engine)

        with database_url(self.env.home, self.env.database_url) as url:
            return anyio.run(main, url)

    def with_store(self, work: Callable[[PgStore], Awaitable[T]], *, upgrade: bool = True) -> T:
        """Run `work` on the store over the configured (or embedded) database."""
        return self.with_engine(lambda engine: work(PgStore(engine)), upgrade=upgrade)


pass_app = click.make_pass_decorator(App)


def print_json(data: Any) -> None:
    """Machine output: one JSON document on stdout."""
    click.echo(json.dumps(jsonable(data), indent=2, sort_keys=True))
