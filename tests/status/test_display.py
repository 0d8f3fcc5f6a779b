"""render() shows every element of the snapshot, fits 100–160 columns, and is pure."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime, timedelta
from io import StringIO

import pytest
from rich.console import Console
from sqlalchemy.ext.asyncio import AsyncEngine

from db.store import PgStore
from runner.status_read import load_status
from runner.view.display import bar, duration, render, sparkline
from runner.view.model import StatusSnapshot, TaskProgress
from tests.status.conftest import Seeded

pytestmark = pytest.mark.anyio


@pytest.fixture
async def snapshot(engine: AsyncEngine, seeded: Seeded) -> StatusSnapshot:
    """The seeded database's snapshot."""
    return await load_status(PgStore(engine), now=seeded.now)


def text_of(snapshot: StatusSnapshot, width: int) -> str:
    """The view as plain text on a recording console `width` columns wide."""
    console = Console(record=True, width=width, file=StringIO())
    console.print(render(snapshot, width=width))
    return console.export_text()


async def test_every_element_is_shown(snapshot: StatusSnapshot) -> None:
    """Pools with limit/max, a reason, throughput, task progress, an error, executors, stale."""
    out = text_of(snapshot, 140)
    for expected in (
        "standard",
        "25/100",
        "lumina",
        "6/40",
        "adaptive/queue-depth",
        "paused 4s",
        "rate_limited: 4 → 2 (×0.5)",
        "pending 30 > 2×limit 10, latency ok: 10 → 15",
        "3.0 img/min (1m)",
        "2.2 img/min (5m)",  # alpha 1.2 + lumina 2 per 118 s
        "queue 19 images",
        "ETA 8m34s",  # 19 images at 2.217/min
        "lumina posters",
        "2/6  33%",
        "alpha portraits",
        "4/10  50%",
        "8m20s",
        "finished batch",
        "request timed out after <n>s",
        "TimeoutError",
        "runner-live",
        "runner-stale",
        "STALE",
        "1m00s ago",
        "2 live runners, 1 stale",
    ):
        assert expected in out, expected
    assert "runner-ancient" not in out


async def test_stale_executor_is_red(snapshot: StatusSnapshot) -> None:
    """The stale flag is rendered in bold red (style, not just a word)."""
    console = Console(width=140, file=StringIO())
    segments = list(console.render(render(snapshot, width=140)))
    stale = [s for s in segments if s.text.strip() == "STALE"]
    assert stale
    assert stale[0].style is not None
    assert stale[0].style.color is not None and stale[0].style.color.name == "red"
    assert stale[0].style.bold


@pytest.mark.parametrize("width", [100, 120, 160])
async def test_fits_the_width_and_keeps_names_readable(
    snapshot: StatusSnapshot, width: int
) -> None:
    """No line overflows; the key names survive narrow terminals."""
    out = text_of(snapshot, width)
    assert max(len(line) for line in out.splitlines()) <= width
    for expected in ("standard", "lumina posters", "runner-stale", "STALE", "ETA"):
        assert expected in out


def test_sparkline_resamples_and_scales_to_its_peak() -> None:
    """Both ends survive resampling; the peak is a full block and zero is blank."""
    assert sparkline([0, 4, 8], 3).plain == " ▄█"
    assert sparkline(list(range(1, 41)), 10).plain[-1] == "█"
    assert len(sparkline(list(range(40)), 10).plain) == 10
    assert sparkline([], 10).plain == ""


def test_bar_splits_completed_failed_canceled_and_rest() -> None:
    """Cells in proportion, in order, always exactly `width` long."""
    now = datetime(2026, 1, 1, tzinfo=UTC)
    task = TaskProgress(
        id=1, name="t", pool="standard", provider="sim", priority=1, status="running",
        total=10, completed=5, failed=2, canceled=1, batch_size=1, total_images=10,
        rate_per_min=0.0, eta_seconds=None, created_at=now, started_at=now, finished_at=None,
    )  # fmt: skip
    rendered = bar(task, 20)
    assert rendered.plain == "━" * 20
    styles = [str(span.style) for span in rendered.spans]
    assert styles == ["green", "red", "bright_black", "grey23"]
    assert [span.end - span.start for span in rendered.spans] == [10, 4, 2, 4]


def test_duration() -> None:
    """Compact, monotone units; unknown is a dash."""
    assert [duration(s) for s in (None, 0, 59.6, 200, 7500, 90000)] == [
        "-",
        "0s",
        "1m00s",
        "3m20s",
        "2h05m",
        "1d1h",
    ]


async def test_empty_snapshot_renders(engine: AsyncEngine) -> None:
    """A brand-new database: no runners, no tasks, nothing breaks."""
    out = text_of(await load_status(PgStore(engine)), 120)
    assert "no active tasks" in out
    assert "no runners" in out
    assert "no runner" in out  # the pools say so too
    assert "top errors" not in out


def test_render_is_pure() -> None:
    """Rendering reads only the snapshot: the same input gives the same output."""
    at = datetime(2026, 1, 1, tzinfo=UTC)
    from runner.view.model import Throughput

    snapshot = StatusSnapshot(
        at=at,
        stale_after=15.0,
        pools=(),
        throughput=Throughput(0, 0, 0, 0, 0, 0.0),
        active_tasks=0,
        tasks=(),
        recent=(),
        errors=(),
        executors=(),
    )
    assert text_of(snapshot, 120) == text_of(snapshot, 120)
    assert "2026-01-01 00:00:00" in text_of(snapshot, 120)
    # The header's time is the snapshot's, not the clock's: move it and the text follows.
    later = text_of(replace(snapshot, at=at + timedelta(hours=1, minutes=2)), 120)
    assert "2026-01-01 01:02:00" in later and "2026-01-01 00:00:00" not in later


async def test_live_view_fits_a_short_terminal(snapshot: StatusSnapshot) -> None:
    """Trimmed to the height: finished tasks go first, then the lowest-priority active one."""
    from runner.cli.status_view import fit

    console = Console(width=140, height=200, file=StringIO())
    full = len(console.render_lines(fit(console, snapshot, 200), console.options, pad=False))
    trimmed = fit(console, snapshot, full - 4)
    lines = console.render_lines(trimmed, console.options, pad=False)
    assert len(lines) <= full - 4
    console.print(trimmed)
    out = console.file.getvalue()  # type: ignore[attr-defined]
    assert "finished batch" not in out
    assert "lumina posters" in out
    assert "runner-stale" in out  # the executors stay on screen
