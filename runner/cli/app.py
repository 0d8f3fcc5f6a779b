"""What every `imgrun` command shares: the consoles, the App object, JSON output."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable, Iterable
from typing import TYPE_CHECKING, Any, TypeVar

import anyio
import click
from rich.console import Console

from db.records import NewTask, SubtaskRow
from db.url import database_url
from runner.config import Config, Environment
from runner.jsonable import jsonable

# The engine, the store and their SQLAlchemy ORM are imported when a command uses them:
# they cost a short process like `imgrun submit` ~0.3 s of CPU (see PERFORMANCE.md).
if TYPE_CHECKING:
    from sqlalchemy.ext.asyncio import AsyncEngine

    from db.store import PgStore

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

        from db.engine import open_engine

        async def main(url: str) -> T:
            async with open_engine(url, upgrade=upgrade) as engine:
                return await work(engine)

        with database_url(self.env.home, self.env.database_url) as url:
            return anyio.run(main, url)

    def with_store(self, work: Callable[[PgStore], Awaitable[T]], *, upgrade: bool = True) -> T:
        """Run `work` on the store over the configured (or embedded) database."""
        from db.store import PgStore

        return self.with_engine(lambda engine: work(PgStore(engine)), upgrade=upgrade)

    def submit_quick(
        self,
        task: NewTask,
        subtasks: Iterable[SubtaskRow],
        on_progress: Callable[[int], None] | None = None,
    ) -> int | None:
        """Submit on one bare asyncpg connection; None (nothing written) if the schema is old."""
        import asyncpg

        from db.submit_queries import connect_args, schema_is_current, submit_on

        async def main(url: str) -> int | None:
            connection = await asyncpg.connect(**connect_args(url))
            try:
                if not await schema_is_current(connection):
                    return None  # the engine's path migrates first
                return await submit_on(connection, task, subtasks, on_progress=on_progress)
            finally:
                await connection.close()

        with database_url(self.env.home, self.env.database_url) as url:
            return anyio.run(main, url)


pass_app = click.make_pass_decorator(App)


def print_json(data: Any) -> None:
    """Machine output: one JSON document on stdout."""
    click.echo(json.dumps(jsonable(data), indent=2, sort_keys=True))
