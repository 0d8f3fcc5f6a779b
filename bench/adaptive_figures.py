"""Pure figures of bench/adaptive.py: rates from completion times, convergence, the table."""

from __future__ import annotations

import statistics
from collections.abc import Sequence
from dataclasses import dataclass

CONVERGE_SPAN = 5  # seconds of throughput averaged to call it converged
CONVERGE_SHARE = 0.9  # "within 10 % of the best"


@dataclass(frozen=True)
class Run:
    """One drain of a scenario by one policy: what the database and the sim saw."""

    label: str  # "adaptive", "queue-depth" or "fixed N"
    completed: int
    failed: int
    started: float  # epoch seconds of the first claim
    finished: float  # epoch seconds of the last completion
    completions: tuple[float, ...]  # epoch seconds of each completion
    requests: int  # HTTP requests the sim received
    rate_limited: int  # of which answered 429
    max_in_flight: int  # the sim's high-water mark
    max_concurrency: int  # the provider's configured hard cap

    @property
    def per_min(self) -> float:
        """Images per minute between the first claim and the last completion."""
        span = self.finished - self.started
        return 60 * self.completed / span if span > 0 else 0.0

    @property
    def share_429(self) -> float:
        """Share of the sim's requests answered 429."""
        return self.rate_limited / self.requests if self.requests else 0.0


def per_second(completions: Sequence[float], start: float, end: float) -> list[int]:
    """Completions in each whole second of [start, end)."""
    bins = [0] * max(0, int(end - start) + 1)
    for at in completions:
        i = int(at - start)
        if 0 <= i < len(bins):
            bins[i] += 1
    return bins


def steady_rate(run: Run, start: float | None = None, end: float | None = None) -> float:
    """Median completions/s over [start, end) (default: the run without its first and last 5 s)."""
    lo = start if start is not None else run.started + CONVERGE_SPAN
    hi = end if end is not None else run.finished - CONVERGE_SPAN
    bins = per_second(run.completions, lo, hi)[:-1] or [0]
    return float(statistics.median(bins))


def converge_after(
    completions: Sequence[float], event: float, target: float, until: float
) -> float | None:
    """Seconds after `event` until a CONVERGE_SPAN-second mean rate reaches 90 % of `target`."""
    bins = per_second(completions, event, until)
    for i in range(len(bins) - CONVERGE_SPAN + 1):
        if sum(bins[i : i + CONVERGE_SPAN]) / CONVERGE_SPAN >= CONVERGE_SHARE * target:
            return float(i)
    return None


def best(runs: Sequence[Run]) -> Run:
    """The fixed run with the most images per minute."""
    return max(runs, key=lambda r: r.per_min)


@dataclass(frozen=True)
class Row:
    """One line of the table: a policy's run against the best fixed concurrency."""

    scenario: str
    run: Run
    best: Run
    converge: tuple[float | None, ...]  # seconds, one per event (start, capacity changes)

    def cells(self) -> list[str]:
        """The row's printed cells."""
        ratio = self.run.per_min / self.best.per_min if self.best.per_min else 0.0
        converge = " / ".join("—" if c is None else f"{c:.0f} s" for c in self.converge)
        return [
            self.scenario,
            self.run.label,
            f"{self.run.per_min:,.0f}",
            f"{self.best.label} ({self.best.per_min:,.0f})",
            f"{ratio:.0%}",
            f"{self.run.share_429:.2%} ({self.run.rate_limited}/{self.run.requests})",
            str(self.run.failed),
            converge,
            f"{self.run.max_in_flight} ≤ {self.run.max_concurrency}"
            if self.run.max_in_flight <= self.run.max_concurrency
            else f"{self.run.max_in_flight} > {self.run.max_concurrency} (!)",
        ]


HEADER = [
    "scenario",
    "policy",
    "images/min",
    "best fixed (images/min)",
    "ratio",
    "429 share",
    "failed",
    "converge",
    "max in flight",
]


def markdown(rows: Sequence[Row]) -> str:
    """The table as GitHub markdown."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)
