"""A database that falls behind, for real: a trigger that sleeps in outcome transactions.

Shared by the backlog and journal tests: slow down (or hang) every flush, see that a
runner's flush is stuck, and end a dead runner's statements (a server notices a vanished
client only when it next talks to it).
"""

from __future__ import annotations

from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from tests.runner.conftest import wait_until


def slow_flush_sql(seconds: float) -> str:
    """A trigger that makes each transaction completing subtasks sleep `seconds`, once."""
    return f"""
    CREATE FUNCTION slow_flush() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        IF current_setting('test.slept', true) IS DISTINCT FROM 'yes' THEN
            PERFORM set_config('test.slept', 'yes', true);
            PERFORM pg_sleep({seconds});
        END IF;
        RETURN NEW;
    END $$;
    CREATE TRIGGER slow_flush BEFORE UPDATE ON subtasks FOR EACH ROW
        WHEN (OLD.status = 'processing' AND NEW.status = 'completed')
        EXECUTE FUNCTION slow_flush();
    """


async def slow_down_flushes(engine: AsyncEngine, seconds: float) -> None:
    """Install the trigger (one statement at a time: asyncpg prepares each)."""
    async with engine.begin() as connection:
        raw = await connection.get_raw_connection()
        assert raw.driver_connection is not None
        await raw.driver_connection.execute(slow_flush_sql(seconds))


async def terminate_other_backends(engine: AsyncEngine) -> None:
    """End the dead runner's hung statements (the server has not noticed it left)."""

    async def gone() -> bool:
        async with engine.connect() as connection:
            left = await connection.scalar(
                text(
                    "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity"
                    " WHERE datname = current_database() AND pid <> pg_backend_pid()"
                    " AND backend_type = 'client backend'"
                )
            )
        return not left

    await wait_until(gone, timeout=30, every=0.2)


async def flush_hung(engine: AsyncEngine) -> bool:
    """A runner's outcome statement is asleep in the trigger."""
    async with engine.connect() as connection:
        waiting = await connection.scalar(
            text(
                "SELECT count(*) FROM pg_stat_activity WHERE state = 'active'"
                " AND query LIKE '%unnest%' AND wait_event = 'PgSleep'"
            )
        )
    return bool(waiting)
