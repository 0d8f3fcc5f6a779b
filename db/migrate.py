"""Run alembic migrations from inside imgrun, serialised across processes."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import ProgrammingError

import migrations

if TYPE_CHECKING:
    from alembic.config import Config
    from sqlalchemy.ext.asyncio import AsyncEngine  # annotations only: submit's quick path

# The newest revision in migrations/versions (a test keeps it in step). Knowing it lets
# every command skip importing alembic when the schema is already current.
HEAD = "0009"

# Any constant works; it only has to be the same in every imgrun process.
MIGRATION_LOCK = 7_305_100_001


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config that needs no alembic.ini (works from an installed package)."""
    from alembic.config import Config

    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def current_revision(engine: AsyncEngine) -> str | None:
    """The schema's alembic revision, or None for an empty database."""
    async with engine.connect() as connection:
        try:
            revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
            return str(revision) if revision is not None else None
        except ProgrammingError:
            return None


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade (or downgrade, for a revision like "base") under an advisory lock."""
    if revision == "head" and await current_revision(engine) == HEAD:
        return

    def run(connection: Connection) -> None:
        from alembic import command

        config = alembic_config(connection)
        if revision == "base" or revision.startswith("-"):
            command.downgrade(config, revision)
        else:
            command.upgrade(config, revision)

    async with engine.begin() as connection:
        # Two runners starting at once must not both create the schema.
        await connection.execute(
            text("SELECT pg_advisory_xact_lock(:key)"), {"key": MIGRATION_LOCK}
        )
        await connection.run_sync(run)
