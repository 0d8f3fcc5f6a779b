"""A runner the alerts watchdog marked lost stays visible, in red, in `imgrun status`."""

from __future__ import annotations

from io import StringIO

import pytest
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from runner.alerts.watchdog import Watchdog
from runner.config import AlertSettings
from runner.status_read import load_status
from runner.view.display import render
from tests.status.conftest import Seeded

pytestmark = pytest.mark.anyio


async def test_a_lost_runner_is_shown_lost_in_red(engine: AsyncEngine, seeded: Seeded) -> None:
    """runner-stale (60 s silent) becomes LOST: bold red row, counted in the header."""
    (lost,) = await Watchdog(PgStore(engine), AlertSettings(runner_lost_after=40)).step()
    assert lost["executor_id"] == "runner-stale"
    snapshot = await load_status(PgStore(engine), now=seeded.now)
    console = Console(record=True, width=140, file=StringIO())
    console.print(render(snapshot, width=140))
    out = console.export_text()
    assert "2 live runners, 1 lost" in out and "1 stale" not in out
    segments = list(Console(width=140, file=StringIO()).render(render(snapshot, width=140)))
    (word,) = [s for s in segments if s.text.strip() == "LOST"]
    assert word.style is not None and word.style.bold
    assert word.style.color is not None and word.style.color.name == "red"
