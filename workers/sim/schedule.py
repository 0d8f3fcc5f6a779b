"""A capacity that moves on a schedule: "0:40,60:10,120:40" (seconds since start → slots).

Pure: parsing and checking, and a cursor that says which step is due at a given time.
"""

from __future__ import annotations

import math

MAX_CAPACITY = 100_000  # service slots; more is a typo, not a GPU farm
MAX_SCHEDULE_STEPS = 1_000
_MAX_TEXT = 20 * MAX_SCHEDULE_STEPS  # characters of a --capacity-schedule value

Steps = tuple[tuple[float, int], ...]


def check_schedule(steps: Steps) -> None:
    """Raise ValueError unless times are finite, >= 0 and ascending and slots in range."""
    if len(steps) > MAX_SCHEDULE_STEPS:
        raise ValueError(f"capacity schedule has more than {MAX_SCHEDULE_STEPS} steps")
    previous = -math.inf
    for at, capacity in steps:
        if not (math.isfinite(at) and at >= 0 and at > previous):
            raise ValueError(
                f"capacity schedule: times must be ascending seconds from 0, got {at:g}"
            )
        if not 1 <= capacity <= MAX_CAPACITY:
            raise ValueError(f"capacity schedule: slots must be 1..{MAX_CAPACITY}, got {capacity}")
        previous = at


def parse_schedule(text: str) -> Steps:
    """Parse "0:40,60:10,120:40" into checked (seconds, slots) steps."""
    if len(text) > _MAX_TEXT:
        raise ValueError(f"capacity schedule is longer than {_MAX_TEXT} characters")
    steps: list[tuple[float, int]] = []
    for part in text.split(","):
        at, sep, slots = part.strip().partition(":")
        try:
            if not sep:
                raise ValueError(part)
            steps.append((float(at), int(slots)))
        except ValueError:
            raise ValueError(
                f"capacity schedule: {part.strip()[:40]!r} is not SECONDS:SLOTS (e.g. 0:40,60:10)"
            ) from None
    result = tuple(steps)
    check_schedule(result)
    return result


class ScheduleCursor:
    """Walks a schedule against a clock started at `start`; each step is handed out once."""

    def __init__(self, steps: Steps, start: float) -> None:
        check_schedule(steps)
        self._steps = steps
        self._start = start
        self._next = 0

    def due(self, now: float) -> int | None:
        """The slots of the latest step reached since the last call, or None if none was."""
        capacity = None
        while self._next < len(self._steps) and self._start + self._steps[self._next][0] <= now:
            capacity = self._steps[self._next][1]
            self._next += 1
        return capacity

    def next_at(self) -> float | None:
        """Clock time of the next step not yet handed out, or None when all were."""
        if self._next >= len(self._steps):
            return None
        return self._start + self._steps[self._next][0]
