"""The provider's request budget as one attempt saw it: the x-ratelimit-* of every response.

An attempt (one standard request, or a lumina submit, its polls and downloads) makes several
requests through adapters the runner cannot see into; the worker opens a `BudgetTracker` for
the attempt and the HTTP client notes each response's budget into whichever tracker is open
in its task. A context variable rather than a parameter: the provider interfaces stay as
they are, and concurrent attempts (separate tasks) never see each other's tracker.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

from workers.errors import ProviderError
from workers.headers import RateLimitInfo


def lowest(a: RateLimitInfo | None, b: RateLimitInfo | None) -> RateLimitInfo | None:
    """The tighter of two budgets (fewer requests remaining); None only if both are."""
    if a is None:
        return b
    if b is None:
        return a
    return b if b.remaining < a.remaining else a


class BudgetTracker:
    """The smallest x-ratelimit-remaining-requests one attempt saw, with its limit and reset."""

    def __init__(self) -> None:
        self.lowest: RateLimitInfo | None = None

    def note(self, info: RateLimitInfo | None) -> None:
        """Keep `info` if it is the tightest budget seen so far."""
        self.lowest = lowest(self.lowest, info)


_current: ContextVar[BudgetTracker | None] = ContextVar("imgrun_budget", default=None)


@contextmanager
def tracking() -> Iterator[BudgetTracker]:
    """Open a tracker for the attempt running in this task.

    A ProviderError leaving the block carries the tightest budget the attempt saw.
    """
    tracker = BudgetTracker()
    token = _current.set(tracker)
    try:
        yield tracker
    except ProviderError as exc:
        exc.ratelimit = lowest(exc.ratelimit, tracker.lowest)
        raise
    finally:
        _current.reset(token)


def note(info: RateLimitInfo | None) -> None:
    """Note a response's budget into the open tracker (none open: dropped)."""
    tracker = _current.get()
    if tracker is not None and info is not None:
        tracker.note(info)
