"""Run alembic migrations from inside imgrun, serialised across processes."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import text
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncEngine

import migrations

# Any constant works; it only has to be the same in every imgrun process.
MIGRATION_LOCK = 7_305_100_001


def alembic_config(connection: Connection | None = None) -> Config:
    """An alembic Config that needs no alembic.ini (works from an installed package)."""
    config = Config()
    config.set_main_option("script_location", str(Path(migrations.__file__).parent))
    if connection is not None:
        config.attributes["connection"] = connection
    return config


async def migrate(engine: AsyncEngine, revision: str = "head") -> None:
    """Upgrade (or downgrade, for a revision like "base") under an advisory lock."""

    def run(connection: Connection) -> None:
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
