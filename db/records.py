"""The values that cross the store seam: plain frozen records, no database types."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal, NamedTuple


class TaskIsCanceled(Exception):
    """A request (e.g. retry) that would bring a canceled task back to life."""

    def __init__(self, task_id: int) -> None:
        super().__init__(f"task {task_id} is canceled")
        self.task_id = task_id


@dataclass(frozen=True)
class NewTask:
    """A task row to insert, with counts already computed."""

    name: str
    user_id: str
    pool: str
    provider: str
    priority: int
    prompts: list[str]
    variables: dict[str, list[Any]]
    ratio: str
    seed: int
    batch_size: int
    polish: bool
    max_retries: int
    total_subtasks: int
    total_images: int


# (ordinal, rendered prompt, params as a JSON string): tuples, because 100k of them are copied.
SubtaskRow = tuple[int, str, str]


class ClaimedSubtask(NamedTuple):
    """A subtask this runner now holds a lease on.

    A named tuple, like the two records below it on the hot path: built straight from the
    claim's row, and a frozen dataclass's __init__ costs ~1.5 µs per subtask, four times it.
    """

    id: int
    task_id: int
    ordinal: int
    pool: str
    prompt: str
    params: dict[str, Any]
    attempts: int
    retry_count: int
    deferrals: int
    external_id: str | None
    provider: str
    max_retries: int


OutcomeKind = Literal["completed", "failed", "canceled", "retry", "defer", "release"]


class Outcome(NamedTuple):
    """How one attempt ended.

    kind: completed | failed | canceled (final); retry (spends the retry budget),
    defer (backpressure: does not), release (shutdown: the attempt is not counted).
    """

    subtask_id: int
    attempt: int
    kind: OutcomeKind
    executor_id: str
    result: dict[str, Any] | None = None
    error: str | None = None
    delay: float = 0.0
    reset_job: bool = False  # the async job is dead: the next attempt submits a new one


@dataclass(frozen=True)
class ExpiredLease:
    """A subtask whose runner stopped renewing its lease, with the counters to decide on."""

    id: int
    attempt: int
    executor_id: str
    retry_count: int
    deferrals: int
    max_retries: int
    pool: str
    provider: str


@dataclass(frozen=True)
class ErrorRecord:
    """One failure to aggregate (already redacted and fingerprinted)."""

    error_type: str
    fingerprint: str
    stack_trace: str | None
    pool: str
    provider: str
    subtask_id: int | None  # None if the error was not seen running a subtask
    recovered: bool = False  # an in-attempt retry absorbed it: the subtask went on


@dataclass(frozen=True)
class PruneCounts:
    """What a prune would remove now (a dry run): rows, and image files the rows name."""

    tasks: int
    subtasks: int
    images: int
    error_logs: int
    outbox: int


@dataclass(frozen=True)
class PrunedBatch:
    """One prune transaction: subtasks and tasks deleted, and the image paths they named."""

    subtasks: int
    tasks: int
    image_paths: tuple[str, ...]


@dataclass(frozen=True)
class ClaimBatch:
    """What one claim across a pool's providers got: rows, and why it got fewer than asked."""

    rows: list[ClaimedSubtask]
    # provider -> seconds it is still paused for (nothing was claimed for it)
    cooldowns: dict[str, float] = field(default_factory=dict)
    # the providers whose fleet-wide limit (or rpm budget) bounded the claim
    at_limit: frozenset[str] = frozenset()


@dataclass(frozen=True)
class ProviderBounds:
    """A provider's configured control, written to its fleet-wide row by each runner."""

    name: str
    policy: str
    min_limit: int
    max_concurrency: int
    rpm: int | None
    initial_state: dict[str, Any]  # the controller's first state, if the row is new


@dataclass(frozen=True)
class ProviderReport:
    """What one runner saw of a provider since its previous report."""

    provider: str
    completions: int = 0
    rate_limited: int = 0
    unavailable: int = 0
    timeouts: int = 0
    server_errors: int = 0
    latencies: tuple[float, ...] = ()  # seconds, a bounded sample
    ratelimit_remaining: int | None = None
    ratelimit_limit: int | None = None
    ratelimit_reset: float | None = None

    @property
    def empty(self) -> bool:
        """Nothing to report."""
        return not (
            self.completions
            or self.rate_limited
            or self.unavailable
            or self.timeouts
            or self.server_errors
            or self.ratelimit_remaining is not None
        )


@dataclass(frozen=True)
class ProviderWindow:
    """The whole fleet's view of a provider over one window, summed from the reports."""

    elapsed: float
    in_flight: int
    pending: int
    completions: int
    rate_limited: int
    unavailable: int
    timeouts: int
    server_errors: int
    latencies: tuple[float, ...]
    ratelimit_remaining: int | None
    ratelimit_limit: int | None
    ratelimit_reset: float | None


@dataclass(frozen=True)
class ControlChange:
    """A new controller state for a provider, and why (None: nothing worth recording)."""

    state: dict[str, Any]
    limit: int
    cooldown_until: float | None  # epoch seconds
    reason: str | None
