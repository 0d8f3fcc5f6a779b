"""The values that cross the store seam: plain frozen records, no database types."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal


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


@dataclass(frozen=True)
class ClaimedSubtask:
    """A subtask this runner now holds a lease on."""

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


@dataclass(frozen=True)
class Outcome:
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
