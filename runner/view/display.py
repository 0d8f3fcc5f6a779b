"""The status view: a StatusSnapshot in, a rich renderable out (pure: no I/O, no clock)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from runner.view.model import (
    ErrorSummary,
    ExecutorStatus,
    PoolStatus,
    StatusSnapshot,
    TaskProgress,
)
from runner.view.provider_panel import providers_panel
from runner.view.tables import STATUS_STYLE, age

BLOCKS = "▁▂▃▄▅▆▇█"
NARROW = 120  # columns; below this the bars and sparklines shrink
DECISIONS_SHOWN = 5


def duration(seconds: float | None) -> str:
    """Compact duration like 45s, 3m20s, 2h05m, 3d4h; '-' when unknown."""
    if seconds is None:
        return "-"
    s = round(max(0.0, seconds))
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    if s < 86400:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 86400}d{s % 86400 // 3600}h"


def rate(per_min: float) -> str:
    """'812/min', '3.2/min', or '-' for nothing."""
    if per_min <= 0:
        return "-"
    return f"{per_min:,.0f}/min" if per_min >= 10 else f"{per_min:.1f}/min"


def sparkline(values: Sequence[int], width: int) -> Text:
    """`values` resampled to at most `width` block characters, 0 to their max (blank: 0)."""
    shown = list(values)
    if len(shown) > width > 1:
        # Evenly spaced samples that keep both ends (the newest value matters most).
        step = (len(shown) - 1) / (width - 1)
        shown = [shown[round(i * step)] for i in range(width)]
    # Scaled to the series' own peak, not the pool's max: a 20 → 25 step must be visible.
    top = max([*shown, 1])
    chars = [
        " " if v <= 0 else BLOCKS[min(len(BLOCKS) - 1, (v * len(BLOCKS) - 1) // top)] for v in shown
    ]
    return Text("".join(chars), style="cyan")


def bar(task: TaskProgress, width: int) -> Text:
    """A progress bar: completed green, failed red, canceled grey, the rest dim."""
    total = max(task.total, 1)
    cells = [
        (round(width * task.completed / total), "green"),
        (round(width * task.failed / total), "red"),
        (round(width * task.canceled / total), "bright_black"),
    ]
    used = 0
    text = Text()
    for count, style in cells:
        count = min(count, width - used)
        text.append("━" * count, style=style)
        used += count
    text.append("━" * (width - used), style="grey23")
    return text


def _header(snapshot: StatusSnapshot) -> Text:
    live = sum(e.state == "running" and not e.stale for e in snapshot.executors)
    stale = sum(e.stale for e in snapshot.executors)
    lost = sum(e.state == "lost" for e in snapshot.executors)  # marked by the alerts watchdog
    text = Text.assemble(
        ("imgrun status", "bold"),
        f"  {snapshot.at:%Y-%m-%d %H:%M:%S %Z}  ·  ",
        (f"{live} live runner{'s' if live != 1 else ''}", "green" if live else "yellow"),
    )
    if stale:
        text.append(f", {stale} stale", style="bold red")
    if lost:
        text.append(f", {lost} lost", style="bold red")
    text.append(
        f"  ·  {snapshot.active_tasks} active task{'s' if snapshot.active_tasks != 1 else ''}"
    )
    return text


def _pool_row(pool: PoolStatus, spark_width: int) -> list[RenderableType]:
    if pool.executors:
        limit = Text(f"{pool.limit}/{pool.max}", style="bold")
        running = str(pool.running)
    else:
        limit = Text("no runner", style="yellow")
        running = "-"
    pending = f"{pool.pending:,}"
    if pool.processing != pool.running and pool.processing:
        running += f" ({pool.processing} leased)"
    policy = Text(pool.policy or "-")
    if pool.paused_for > 0:
        policy.append(f" paused {duration(pool.paused_for)}", style="bold yellow")
    return [
        Text(pool.name, style="bold"),
        limit,
        running,
        pending,
        policy,
        sparkline(pool.limit_history, spark_width),
        rate(pool.images_per_min),
    ]


def _table() -> Table:
    # Adjacent cells share one space of padding so 10 columns still fit in 100.
    return Table(
        box=box.SIMPLE_HEAD, expand=True, collapse_padding=True, pad_edge=False, show_edge=False
    )


def _pools(snapshot: StatusSnapshot, spark_width: int) -> Panel:
    table = _table()
    table.add_column("pool", no_wrap=True, min_width=8)
    table.add_column("limit/max", justify="right", no_wrap=True)
    table.add_column("running", justify="right", no_wrap=True)
    table.add_column("pending", justify="right", no_wrap=True)
    table.add_column("policy", ratio=1)
    table.add_column("limit, 10 min", no_wrap=True, min_width=spark_width)
    table.add_column("images", justify="right", no_wrap=True)
    for pool in snapshot.pools:
        table.add_row(*_pool_row(pool, spark_width))
    parts: list[RenderableType] = [table]
    decisions = sorted(
        ((d, p.name) for p in snapshot.pools for d in p.decisions),
        key=lambda item: item[0].at,
        reverse=True,
    )[:DECISIONS_SHOWN]
    if decisions:
        grid = Table.grid(padding=(0, 2))
        grid.add_column(justify="right", style="dim", no_wrap=True)
        grid.add_column(no_wrap=True)
        grid.add_column(style="dim", no_wrap=True, max_width=32, overflow="ellipsis")
        grid.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
        for decision, pool_name in decisions:
            grid.add_row(
                f"{age(decision.at, snapshot.at)} ago",
                pool_name,
                decision.executor_id,
                decision.reason,
            )
        parts += [Text("scaling decisions", style="bold dim"), grid]
    return Panel(Group(*parts), title="pools", title_align="left", border_style="blue")


def _throughput(snapshot: StatusSnapshot) -> Text:
    t = snapshot.throughput
    text = Text.assemble(
        ("throughput ", "bold"),
        (f"{t.images_per_min_1m:,.1f}", "bold green"),
        " img/min (1m) · ",
        (f"{t.images_per_min_5m:,.1f}", "bold green"),
        " img/min (5m) · ",
        f"{t.subtasks_per_min_5m:,.1f} subtasks/min · queue ",
        (f"{t.remaining_images:,}", "bold"),
        " images · ETA ",
    )
    if t.remaining_images == 0:
        text.append("done", style="green")
    elif t.eta_seconds is None:
        text.append("- (nothing completing)", style="yellow")
    else:
        text.append(duration(t.eta_seconds), style="bold cyan")
    return text


def _task_row(task: TaskProgress, bar_width: int, now: datetime) -> list[RenderableType]:
    finished = task.status not in ("pending", "running")
    percent = 100 * (task.total - task.remaining) / task.total if task.total else 100.0
    return [
        str(task.id),
        str(task.priority),
        Text(task.name, style="dim" if finished else "bold"),
        task.pool,
        bar(task, bar_width),
        f"{task.completed:,}/{task.total:,} {percent:3.0f}%",
        Text(f"{task.failed:,}", style="red") if task.failed else Text("0", style="dim"),
        rate(task.rate_per_min),
        f"{age(task.finished_at, now)} ago" if finished else duration(task.eta_seconds),
        Text(task.status, style=STATUS_STYLE.get(task.status, "")),
    ]


def _tasks(snapshot: StatusSnapshot, bar_width: int) -> Panel:
    table = _table()
    table.add_column("id", justify="right", no_wrap=True)
    table.add_column("prio", justify="right", no_wrap=True)
    table.add_column("name", overflow="ellipsis", no_wrap=True, ratio=1, min_width=14)
    table.add_column("pool", no_wrap=True)
    table.add_column("progress", no_wrap=True, min_width=bar_width)
    table.add_column("done/total", justify="right", no_wrap=True)
    table.add_column("failed", justify="right", no_wrap=True)
    table.add_column("rate", justify="right", no_wrap=True)
    table.add_column("ETA", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    for task in snapshot.tasks:
        table.add_row(*_task_row(task, bar_width, snapshot.at))
    parts: list[RenderableType] = [table]
    if not snapshot.tasks:
        parts.append(Text("no active tasks", style="dim"))
    hidden = snapshot.active_tasks - len(snapshot.tasks)
    if hidden > 0:
        parts.append(Text(f"… and {hidden:,} more active tasks", style="dim"))
    if snapshot.recent:
        # Same table, below a rule: the columns stay aligned with the active tasks.
        table.add_section()
        for task in snapshot.recent:
            table.add_row(*_task_row(task, bar_width, snapshot.at))
    return Panel(Group(*parts), title="tasks", title_align="left", border_style="blue")


def _errors(errors: Sequence[ErrorSummary], now: datetime) -> Panel:
    table = _table()
    table.add_column("count", justify="right", no_wrap=True)
    table.add_column("type", no_wrap=True)
    table.add_column("message", overflow="ellipsis", no_wrap=True, ratio=1)
    table.add_column("pool", no_wrap=True)
    table.add_column("last seen", justify="right", no_wrap=True)
    for error in errors:
        table.add_row(
            Text(
                f"{error.count:,}"
                + (f" ({error.recovered:,} recovered)" if error.recovered else ""),
                style="red",
            ),
            error.error_type,
            error.message,
            error.pool or "-",
            f"{age(error.last_seen, now)} ago",
        )
    return Panel(table, title="top errors", title_align="left", border_style="red")


def _executor_pools(executor: ExecutorStatus) -> str:
    parts = [f"{name} {snap.running}/{snap.limit}" for name, snap in sorted(executor.pools.items())]
    return "  ".join(parts) or "-"


def _executors(snapshot: StatusSnapshot) -> Panel:
    table = _table()
    table.add_column("executor", overflow="ellipsis", no_wrap=True, ratio=1, min_width=16)
    table.add_column("host", overflow="ellipsis", no_wrap=True, max_width=24)
    table.add_column("pid", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("heartbeat", justify="right", no_wrap=True)
    table.add_column("running/limit", no_wrap=True)
    table.add_column("up", justify="right", no_wrap=True)
    for e in snapshot.executors:
        if e.stale or e.state == "lost":
            state = Text("STALE" if e.stale else "LOST", style="bold red")
            beat = Text(f"{duration(e.heartbeat_age)} ago", style="bold red")
        else:
            state = Text(e.state, style="green" if e.state == "running" else "dim")
            beat = Text(f"{duration(e.heartbeat_age)} ago")
        table.add_row(
            Text(e.id, style="red" if e.stale else ""),
            e.host,
            str(e.pid),
            state,
            beat,
            _executor_pools(e),
            age(e.started_at, snapshot.at),
        )
    body: RenderableType = table if snapshot.executors else Text("no runners", style="yellow")
    return Panel(body, title="executors", title_align="left", border_style="blue")


def render(snapshot: StatusSnapshot, *, width: int | None = None) -> RenderableType:
    """The whole status view for one snapshot; `width` (columns) sizes bars and sparklines."""
    narrow = width is not None and width < NARROW
    spark_width = 16 if narrow else 30
    bar_width = 12 if narrow else 28
    parts: list[RenderableType] = [
        _header(snapshot),
        _pools(snapshot, spark_width),
    ]
    if snapshot.providers:
        parts.append(providers_panel(snapshot.providers, snapshot.at))
    parts += [
        _throughput(snapshot),
        _tasks(snapshot, bar_width),
    ]
    if snapshot.errors:
        parts.append(_errors(snapshot.errors, snapshot.at))
    parts.append(_executors(snapshot))
    return Group(*parts)
