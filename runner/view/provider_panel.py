"""The providers panel of the status view: fleet-wide limit, load and decisions (pure)."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta

from rich import box
from rich.console import Group, RenderableType
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from runner.view.model import ProviderStatus
from runner.view.tables import age

DECISIONS_SHOWN = 3  # per provider, newest first
HIGH_429_SHARE = 0.02  # above this the share is shown in red: the controller should keep under


def share(value: float | None) -> Text:
    """The 429 share as a percentage; '-' without requests."""
    if value is None:
        return Text("-")
    return Text(f"{value:.1%}", style="bold red" if value > HIGH_429_SHARE else "")


def latency(seconds: float | None) -> str:
    """'420 ms', '3.2 s' or '-'."""
    if seconds is None:
        return "-"
    return f"{seconds * 1000:.0f} ms" if seconds < 1 else f"{seconds:.1f} s"


def _row(p: ProviderStatus, now: datetime) -> list[RenderableType]:
    limit = Text(str(p.limit), style="bold")
    limit.append(f" ({p.min_limit}..{p.max_concurrency})", style="dim")
    cooldown = Text("-")
    if p.cooldown_for > 0:
        cooldown = Text(f"paused {age(now - timedelta(seconds=p.cooldown_for), now)}", "yellow")
    return [
        Text(p.name, style="bold"),
        p.policy,
        limit,
        str(p.in_flight),
        cooldown,
        share(p.rate_limited_share),
        latency(p.latency_p50),
        "-" if p.rpm is None else f"{p.rpm:,}",
    ]


def _decisions(providers: Sequence[ProviderStatus], now: datetime) -> Table:
    grid = Table.grid(padding=(0, 2))
    grid.add_column(justify="right", style="dim", no_wrap=True)
    grid.add_column(no_wrap=True)
    grid.add_column(no_wrap=True, justify="right")
    grid.add_column(overflow="ellipsis", no_wrap=True, ratio=1)
    for p in providers:
        for d in p.decisions[:DECISIONS_SHOWN]:
            grid.add_row(f"{age(d.at, now)} ago", p.name, f"{d.from_limit}→{d.to_limit}", d.reason)
    return grid


def providers_panel(providers: Sequence[ProviderStatus], now: datetime) -> Panel:
    """One row per provider, then each provider's newest limit decisions with reasons."""
    table = Table(
        box=box.SIMPLE_HEAD, expand=True, collapse_padding=True, pad_edge=False, show_edge=False
    )
    table.add_column("provider", no_wrap=True, min_width=8, overflow="ellipsis", max_width=24)
    table.add_column("policy", no_wrap=True)
    table.add_column("limit (min..max)", justify="right", no_wrap=True)
    table.add_column("in flight", justify="right", no_wrap=True)
    table.add_column("cooldown", no_wrap=True)
    table.add_column("429s 1m", justify="right", no_wrap=True)
    table.add_column("p50", justify="right", no_wrap=True)
    table.add_column("rpm", justify="right", no_wrap=True)
    for p in providers:
        table.add_row(*_row(p, now))
    parts: list[RenderableType] = [table]
    if any(p.decisions for p in providers):
        parts += [Text("limit decisions", style="bold dim"), _decisions(providers, now)]
    return Panel(Group(*parts), title="providers", title_align="left", border_style="blue")
