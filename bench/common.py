"""Shared bench helpers: a throwaway embedded server and fresh databases on it."""

from __future__ import annotations

import contextlib
import statistics
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import asyncpg
from sqlalchemy.engine import make_url

from db.embedded import EmbeddedPostgres

IMGRUN = [sys.executable, "-m", "runner"]


@contextlib.contextmanager
def embedded_server() -> Iterator[str]:
    """A private embedded server for the benchmark; stopped on exit."""
    with tempfile.TemporaryDirectory(prefix="imgrun-bench-") as tmp:
        server = EmbeddedPostgres(Path(tmp) / "home")
        url = server.start()
        try:
            yield url
        finally:
            server.release()


async def fresh_database(server_url: str, name: str) -> str:
    """Drop and create database `name`; return its URL."""
    admin_url = make_url(server_url).set(drivername="postgresql", database="postgres")
    admin = await asyncpg.connect(admin_url.render_as_string(hide_password=False))
    try:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.execute(f"CREATE DATABASE {name}")
    finally:
        await admin.close()
    return make_url(server_url).set(database=name).render_as_string(hide_password=False)


def median(values: list[float]) -> float:
    """Median of a non-empty list."""
    return statistics.median(values)


async def queue_synthetic(
    url: str,
    name: str,
    n: int,
    *,
    pool: str = "standard",
    provider: str = "sim",
    max_retries: int = 3,
    priority: int = 1,
    upgrade: bool = True,
) -> int:
    """A database (migrated unless `upgrade` is False) with one task of `n` plain subtasks.

    Returns the task id.
    """
    from db.engine import open_engine
    from db.queries import NewTask, submit_task

    task = NewTask(
        name=name,
        user_id="bench",
        pool=pool,
        provider=provider,
        priority=priority,
        prompts=[f"{name} {{i}}"],
        variables={},
        ratio="1:1",
        seed=0,
        batch_size=1,
        polish=False,
        max_retries=max_retries,
        total_subtasks=n,
        total_images=n,
    )
    rows = ((i, f"{name} {i}", f'{{"seed": {i}, "ratio": "1:1"}}') for i in range(n))
    async with open_engine(url, upgrade=upgrade) as engine:
        return await submit_task(engine, task, rows)


async def server_cpu(url: str) -> float:
    """CPU seconds the server (postmaster, live backends, exited ones) has used so far."""
    import psutil

    connection = await asyncpg.connect(url.replace("postgresql+asyncpg://", "postgresql://", 1))
    try:
        data_directory = await connection.fetchval("SHOW data_directory")
    finally:
        await connection.close()
    pid = int((Path(data_directory) / "postmaster.pid").read_text().split()[0])
    postmaster = psutil.Process(pid)
    # Exited backends are the postmaster's reaped children: their CPU is in children_*.
    times = postmaster.cpu_times()
    total = times.user + times.system + times.children_user + times.children_system
    for child in postmaster.children():
        try:
            child_times = child.cpu_times()
        except psutil.NoSuchProcess:
            continue  # exited between the listing and the read: counted once reaped
        total += child_times.user + child_times.system
    return total
