"""SQLAlchemy 2 typed models: tasks, subtasks, error_logs, executors, and the API/alerts tables."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.ext.asyncio import AsyncAttrs
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column

from workers.kinds import POOL_NAMES

# Stable constraint names keep migrations and `alembic check` deterministic.
NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

POOLS = POOL_NAMES
TASK_STATUSES = ("pending", "running", "completed", "failed", "partial", "canceled")
SUBTASK_STATUSES = ("pending", "processing", "completed", "failed", "canceled")
OUTBOX_STATES = ("pending", "delivered", "failed")

TZ = DateTime(timezone=True)


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Base(AsyncAttrs, DeclarativeBase):
    """Declarative base with the project's naming convention."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class Task(Base):
    """A submitted job: prompt templates × variables, expanded into subtasks."""

    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(_in("pool", POOLS), name="pool"),
        CheckConstraint(_in("status", TASK_STATUSES), name="status"),
        Index("ix_tasks_status_priority", "status", text("priority DESC"), "id"),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text)
    user_id: Mapped[str] = mapped_column(Text)
    pool: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(Text)
    priority: Mapped[int] = mapped_column(Integer, server_default="1")
    prompts: Mapped[list[str]] = mapped_column(JSONB)
    variables: Mapped[dict[str, list[str]]] = mapped_column(JSONB)
    ratio: Mapped[str] = mapped_column(String(8))
    seed: Mapped[int] = mapped_column(BigInteger)
    batch_size: Mapped[int] = mapped_column(Integer)
    polish: Mapped[bool] = mapped_column(Boolean, server_default=text("false"))
    max_retries: Mapped[int] = mapped_column(Integer, server_default="3")
    total_subtasks: Mapped[int] = mapped_column(Integer)
    total_images: Mapped[int] = mapped_column(Integer)
    # The turn after the task's last subtask: where a later task of the same user starts.
    turn_end: Mapped[int] = mapped_column(BigInteger, server_default="0")
    completed_subtasks: Mapped[int] = mapped_column(Integer, server_default="0")
    failed_subtasks: Mapped[int] = mapped_column(Integer, server_default="0")
    canceled_subtasks: Mapped[int] = mapped_column(Integer, server_default="0")
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(TZ)
    finished_at: Mapped[datetime | None] = mapped_column(TZ)


class Subtask(Base):
    """One provider call: a rendered prompt with its params; the unit that is claimed."""

    __tablename__ = "subtasks"
    __table_args__ = (
        CheckConstraint(_in("pool", POOLS), name="pool"),
        CheckConstraint(_in("status", SUBTASK_STATUSES), name="status"),
        # Also the index for every task-scoped query (detail, cancel, retry): one fewer
        # index to maintain keeps a 100k-subtask submit fast.
        UniqueConstraint("task_id", "ordinal"),
        # The claim is one scan of this partial index, in claim order: per pool and
        # provider, priority first, then the fair-share turn (tasks interleave), then id.
        Index(
            "ix_subtasks_claim",
            "pool",
            "provider",
            text("priority DESC"),
            "turn",
            "id",
            postgresql_where=text("status = 'pending'"),
        ),
        # The subtasks in flight, one index for all their readers (every claimed row goes
        # into each partial index it matches, so fewer is cheaper): a provider's count across
        # the fleet (what its limit bounds), the rows one runner process holds (released when
        # its heartbeat goes stale) and the reaper's lease backstop (a scan of the set).
        Index(
            "ix_subtasks_in_flight",
            "provider",
            "executor_id",
            postgresql_where=text("status = 'processing'"),
        ),
        # The status view's throughput window: a range scan over recent completions only
        # (not failed/canceled: a cancel stamps completed_at on a whole task at once), with
        # task_id carried so the per-task rate rarely needs the heap.
        Index(
            "ix_subtasks_completed_at",
            "completed_at",
            postgresql_include=["task_id"],
            postgresql_where=text("status = 'completed'"),
        ),
    )

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"))
    ordinal: Mapped[int] = mapped_column(Integer)
    pool: Mapped[str] = mapped_column(String(16))
    provider: Mapped[str] = mapped_column(Text)  # the task's, copied: claims route on it
    priority: Mapped[int] = mapped_column(Integer)
    # Fair share: the task's first turn plus the ordinal, so tasks of one priority interleave.
    turn: Mapped[int] = mapped_column(BigInteger, server_default="0")
    prompt: Mapped[str] = mapped_column(Text)
    params: Mapped[dict[str, Any]] = mapped_column(JSONB)
    status: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    retry_count: Mapped[int] = mapped_column(Integer, server_default="0")
    deferrals: Mapped[int] = mapped_column(Integer, server_default="0")
    run_after: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    executor_id: Mapped[str | None] = mapped_column(Text)
    lease_expires_at: Mapped[datetime | None] = mapped_column(TZ)
    external_id: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    started_at: Mapped[datetime | None] = mapped_column(TZ)
    completed_at: Mapped[datetime | None] = mapped_column(TZ)
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class ErrorLog(Base):
    """Aggregated failures: one row per (type, normalised message)."""

    __tablename__ = "error_logs"
    __table_args__ = (UniqueConstraint("error_type", "error_message"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    error_type: Mapped[str] = mapped_column(Text)
    error_message: Mapped[str] = mapped_column(Text)
    stack_trace: Mapped[str | None] = mapped_column(Text)
    pool: Mapped[str | None] = mapped_column(String(16))
    provider: Mapped[str | None] = mapped_column(Text)
    count: Mapped[int] = mapped_column(BigInteger, server_default="1")
    # Of `count`, the occurrences an in-attempt retry absorbed (the subtask went on).
    recovered: Mapped[int] = mapped_column(BigInteger, server_default="0")
    first_occurred_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    last_occurred_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    last_subtask_id: Mapped[int | None] = mapped_column(BigInteger)


class Executor(Base):
    """A registered runner process and its last heartbeat snapshot."""

    __tablename__ = "executors"
    __table_args__ = (Index("ix_executors_holder", "holder", unique=True),)

    id: Mapped[str] = mapped_column(Text, primary_key=True)
    # What this process writes into subtasks.executor_id: `<id>:<incarnation>`, new at
    # every start, so a restart under the same id never adopts the dead process's rows.
    # NULL (rows from before revision 0005): the id itself.
    holder: Mapped[str | None] = mapped_column(Text)
    group: Mapped[str] = mapped_column("group", Text, server_default="default")
    host: Mapped[str] = mapped_column(Text)
    pid: Mapped[int] = mapped_column(Integer)
    version: Mapped[str] = mapped_column(Text)
    state: Mapped[str] = mapped_column(String(16), server_default="running")
    started_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    heartbeat_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    stopped_at: Mapped[datetime | None] = mapped_column(TZ)
    pools: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))


class ApiToken(Base):
    """A bearer token for the HTTP API: only its sha256 is stored."""

    __tablename__ = "api_tokens"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    name: Mapped[str] = mapped_column(Text, unique=True)
    token_hash: Mapped[str] = mapped_column(String(64), unique=True)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    last_used_at: Mapped[datetime | None] = mapped_column(TZ)


class Submission(Base):
    """An idempotency key: the submit it guarded (request hash) and the task it created."""

    __tablename__ = "submissions"

    key: Mapped[str] = mapped_column(Text, primary_key=True)
    request_hash: Mapped[str] = mapped_column(String(64))
    # Indexed: deleting a task (pruning) finds its key without a scan.
    task_id: Mapped[int] = mapped_column(ForeignKey("tasks.id", ondelete="CASCADE"), index=True)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class Outbox(Base):
    """Alert events, written in the transaction that caused them; delivered at least once."""

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(_in("state", OUTBOX_STATES), name="state"),
        # The delivery claim is one scan of this partial index, in due order.
        Index("ix_outbox_due", "next_attempt_at", postgresql_where=text("state = 'pending'")),
        Index("ix_outbox_event_created_at", "event", "created_at"),
    )

    id: Mapped[uuid.UUID] = mapped_column(
        Uuid, primary_key=True, server_default=text("gen_random_uuid()")
    )
    event: Mapped[str] = mapped_column(Text)
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    state: Mapped[str] = mapped_column(String(16), server_default="pending")
    attempts: Mapped[int] = mapped_column(Integer, server_default="0")
    # Hashes of the webhooks that already have it, so a retry skips them.
    delivered_to: Mapped[list[str]] = mapped_column(
        ARRAY(Text), server_default=text("'{}'::text[]")
    )
    last_error: Mapped[str | None] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    next_attempt_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    delivered_at: Mapped[datetime | None] = mapped_column(TZ)


class ProviderPressure(Base):
    """429/5xx failures per provider over time (insert-only, from a trigger on error_logs)."""

    __tablename__ = "provider_pressure"

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    provider: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(TZ, server_default=func.now(), index=True)
    count: Mapped[int] = mapped_column(BigInteger)


class Provider(Base):
    """One provider's fleet-wide control: its limit, state and recent decisions."""

    __tablename__ = "providers"

    name: Mapped[str] = mapped_column(Text, primary_key=True)
    # The config's bounds, written by the runners (the last one to start wins).
    policy: Mapped[str] = mapped_column(String(16))
    min_limit: Mapped[int] = mapped_column(Integer)
    max_concurrency: Mapped[int] = mapped_column(Integer)
    rpm: Mapped[int | None] = mapped_column(Integer)
    # The controller's state (runner/policy/control_state.ControllerState as JSON); `limit`
    # is a copy of state.limit the claim reads.
    limit: Mapped[int] = mapped_column(Integer)
    state: Mapped[dict[str, Any]] = mapped_column(JSONB)
    cooldown_until: Mapped[datetime | None] = mapped_column(TZ)
    # Newest first, a few dozen: {at, from_limit, to_limit, reason}.
    decisions: Mapped[list[dict[str, Any]]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb")
    )
    # The current window began here; the runner that moves it on (compare-and-set) decides.
    window_started_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    # rpm token bucket: tokens left at tokens_at.
    tokens: Mapped[float | None] = mapped_column(Float)
    tokens_at: Mapped[datetime | None] = mapped_column(TZ)
    updated_at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())


class ProviderReport(Base):
    """What one runner saw of a provider over a short span; the window's decider sums them."""

    __tablename__ = "provider_reports"
    __table_args__ = (Index("ix_provider_reports_provider_at", "provider", "at"),)

    id: Mapped[int] = mapped_column(BigInteger, primary_key=True)
    provider: Mapped[str] = mapped_column(Text)
    executor_id: Mapped[str] = mapped_column(Text)
    at: Mapped[datetime] = mapped_column(TZ, server_default=func.now())
    completions: Mapped[int] = mapped_column(Integer, server_default="0")
    rate_limited: Mapped[int] = mapped_column(Integer, server_default="0")
    unavailable: Mapped[int] = mapped_column(Integer, server_default="0")
    timeouts: Mapped[int] = mapped_column(Integer, server_default="0")
    server_errors: Mapped[int] = mapped_column(Integer, server_default="0")
    # Latencies (seconds) of a bounded sample of the span's completions.
    latencies: Mapped[list[float]] = mapped_column(
        ARRAY(Float), server_default=text("'{}'::double precision[]")
    )
    ratelimit_remaining: Mapped[int | None] = mapped_column(Integer)
    ratelimit_limit: Mapped[int | None] = mapped_column(Integer)
    ratelimit_reset: Mapped[float | None] = mapped_column(Float)
