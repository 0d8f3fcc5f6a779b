"""Counters behind GET /_sim/stats."""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from workers.sim.faults import Fault


@dataclass
class SimStats:
    """What the sim has seen; tests read it to prove retries, resumes and faults."""

    requests: int = 0
    by_key: Counter[str] = field(default_factory=Counter)
    # Generations that finished, per Idempotency-Key: a key seen twice here paid twice.
    generated_by_key: Counter[str] = field(default_factory=Counter)
    submissions_by_subtask: Counter[str] = field(default_factory=Counter)
    in_flight: int = 0
    max_in_flight: int = 0
    rate_limited: int = 0
    faults: Counter[str] = field(default_factory=Counter)
    images: int = 0  # PNGs rendered
    completed: int = 0  # images of generations that finished (answered 200 / job succeeded)
    canceled: int = 0

    def enter(self) -> None:
        """Count a request arriving."""
        self.requests += 1
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        """Count a request finishing."""
        self.in_flight -= 1

    def fault(self, fault: Fault) -> None:
        """Count an injected fault."""
        self.faults[fault.value] += 1

    def reset(self) -> None:
        """Zero every counter but keep the live in_flight gauge."""
        self.requests = self.rate_limited = self.images = self.completed = self.canceled = 0
        self.by_key.clear()
        self.generated_by_key.clear()
        self.submissions_by_subtask.clear()
        self.faults.clear()
        self.max_in_flight = self.in_flight

    def to_json(self, *, queued: int, busy: int) -> dict[str, Any]:
        """JSON body of GET /_sim/stats."""
        return {
            "requests": self.requests,
            "by_key": dict(self.by_key),
            "generated_by_key": dict(self.generated_by_key),
            "submissions_by_subtask": dict(self.submissions_by_subtask),
            "in_flight": self.in_flight,
            "max_in_flight": self.max_in_flight,
            "queued": queued,
            "busy": busy,
            "rate_limited": self.rate_limited,
            "faults": {f.value: self.faults[f.value] for f in Fault},
            "images": self.images,
            "completed": self.completed,
            "canceled": self.canceled,
        }
