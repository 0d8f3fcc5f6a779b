"""bench/status.py's figures (pure): per-round refresh latencies, and the summary table."""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass, field

TARGET_MS = 100.0


def p95(timings: list[float]) -> float:
    """95th percentile of sorted timings (nearest rank)."""
    return timings[max(0, math.ceil(0.95 * len(timings)) - 1)]


def spread(values: list[float], fmt: str = "{:.1f}") -> str:
    """`median (min–max)` of a non-empty list."""
    low, mid, high = min(values), statistics.median(values), max(values)
    return f"{fmt.format(mid)} ({fmt.format(low)}–{fmt.format(high)})"


@dataclass
class Rounds:
    """One mode's rounds: p50, p95 and max refresh ms per round, and completions/s if loaded."""

    mode: str
    target_rate: float | None = None  # completions/s asked of the load, if any
    p50_ms: list[float] = field(default_factory=list)
    p95_ms: list[float] = field(default_factory=list)
    max_ms: list[float] = field(default_factory=list)
    rate: list[float] = field(default_factory=list)
    refreshes: int = 0
    # CPU µs per completion in each loaded round: PostgreSQL's, and the load processes'.
    server_us: list[float] = field(default_factory=list)
    load_us: list[float] = field(default_factory=list)
    own_ms: list[float] = field(default_factory=list)  # this process's CPU per refresh

    def add(self, label: str, timings: list[float], rate: float | None = None) -> str:
        """Record one round of sorted timings; returns its line."""
        self.p50_ms.append(statistics.median(timings))
        self.p95_ms.append(p95(timings))
        self.max_ms.append(timings[-1])
        self.refreshes = len(timings)
        extra = ""
        if rate is not None:
            self.rate.append(rate)
            extra = f" while completing {rate:,.0f} subtasks/s"
        return (
            f"{label}: p50 {self.p50_ms[-1]:.1f} ms, p95 {self.p95_ms[-1]:.1f} ms,"
            f" max {self.max_ms[-1]:.1f} ms ({len(timings)} refreshes){extra}"
        )

    def add_cpu(self, server_us: float, load_us: float, own_ms: float) -> str:
        """Record one loaded round's CPU per completion and per refresh; returns its line."""
        self.server_us.append(server_us)
        self.load_us.append(load_us)
        self.own_ms.append(own_ms)
        return (
            f"  CPU per completion: PostgreSQL {server_us:.0f} µs (status reads included),"
            f" load processes {load_us:.0f} µs; status client {own_ms:.1f} ms per refresh"
        )

    def cpu_summary(self) -> str:
        """Medians (min–max) of the CPU per completion over the rounds."""
        return (
            f"{self.mode}: CPU per completion, PostgreSQL {spread(self.server_us, '{:.0f}')} µs,"
            f" load processes {spread(self.load_us, '{:.0f}')} µs;"
            f" status client CPU per refresh {spread(self.own_ms)} ms"
        )

    def row(self) -> str:
        """This mode's line of the summary table: medians over the rounds (min–max)."""
        asked = f" (asked {self.target_rate:,.0f})" if self.target_rate else ""
        rate = spread(self.rate, "{:,.0f}") + asked if self.rate else "—"
        verdict = "met" if statistics.median(self.p95_ms) <= TARGET_MS else "NOT met"
        return (
            f"| {self.mode} | {rate} | {spread(self.p50_ms)} | {spread(self.p95_ms)}"
            f" | {spread(self.max_ms)} | {len(self.p50_ms)} × {self.refreshes} | {verdict} |"
        )


HEADER = (
    "| mode | completions/s achieved | status p50 ms | status p95 ms | status max ms"
    " | rounds × refreshes | p95 ≤ 100 ms |\n|---|---|---|---|---|---|---|"
)


def table(modes: list[Rounds]) -> str:
    """The summary: one row per mode, each cell the median over rounds and its spread."""
    return "\n".join([HEADER, *(mode.row() for mode in modes)])
