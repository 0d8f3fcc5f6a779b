"""initial schema: tasks, subtasks, error_logs, executors

Revision ID: 0001
Revises:
Create Date: 2026-11-23
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0001"
down_revision: str | None = None
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    _error_logs()
    _executors()
    _tasks()
    _subtasks()


def _error_logs() -> None:
    """Aggregated failures, one row per (type, fingerprint)."""
    op.create_table(
        "error_logs",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("error_type", sa.Text(), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("stack_trace", sa.Text(), nullable=True),
        sa.Column("pool", sa.String(length=16), nullable=True),
        sa.Column("provider", sa.Text(), nullable=True),
        sa.Column("count", sa.BigInteger(), server_default="1", nullable=False),
        sa.Column(
            "first_occurred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "last_occurred_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_subtask_id", sa.BigInteger(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_error_logs")),
        sa.UniqueConstraint(
            "error_type", "error_message", name=op.f("uq_error_logs_error_type_error_message")
        ),
    )


def _executors() -> None:
    """Registered runners and their heartbeats."""
    op.create_table(
        "executors",
        sa.Column("id", sa.Text(), nullable=False),
        sa.Column("group", sa.Text(), server_default="default", nullable=False),
        sa.Column("host", sa.Text(), nullable=False),
        sa.Column("pid", sa.Integer(), nullable=False),
        sa.Column("version", sa.Text(), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="running", nullable=False),
        sa.Column(
            "started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "heartbeat_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("stopped_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "pools",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_executors")),
    )


def _tasks() -> None:
    """Submitted tasks and their counters."""
    op.create_table(
        "tasks",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("user_id", sa.Text(), nullable=False),
        sa.Column("pool", sa.String(length=16), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("priority", sa.Integer(), server_default="1", nullable=False),
        sa.Column("prompts", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("variables", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("ratio", sa.String(length=8), nullable=False),
        sa.Column("seed", sa.BigInteger(), nullable=False),
        sa.Column("batch_size", sa.Integer(), nullable=False),
        sa.Column("polish", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("max_retries", sa.Integer(), server_default="3", nullable=False),
        sa.Column("total_subtasks", sa.Integer(), nullable=False),
        sa.Column("total_images", sa.Integer(), nullable=False),
        sa.Column("completed_subtasks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("failed_subtasks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("canceled_subtasks", sa.Integer(), server_default="0", nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint("pool IN ('standard', 'lumina')", name=op.f("ck_tasks_pool")),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'partial', 'canceled')",
            name=op.f("ck_tasks_status"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tasks")),
    )
    op.create_index(
        "ix_tasks_status_priority",
        "tasks",
        ["status", sa.literal_column("priority DESC"), "id"],
        unique=False,
    )


def _subtasks() -> None:
    """The unit that is claimed, with its claim, lease and throughput indexes."""
    op.create_table(
        "subtasks",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column("ordinal", sa.Integer(), nullable=False),
        sa.Column("pool", sa.String(length=16), nullable=False),
        sa.Column("priority", sa.Integer(), nullable=False),
        sa.Column("prompt", sa.Text(), nullable=False),
        sa.Column("params", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("status", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("retry_count", sa.Integer(), server_default="0", nullable=False),
        sa.Column("deferrals", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "run_after", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("executor_id", sa.Text(), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("external_id", sa.Text(), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint("pool IN ('standard', 'lumina')", name=op.f("ck_subtasks_pool")),
        sa.CheckConstraint(
            "status IN ('pending', 'processing', 'completed', 'failed', 'canceled')",
            name=op.f("ck_subtasks_status"),
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_subtasks_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_subtasks")),
        sa.UniqueConstraint("task_id", "ordinal", name=op.f("uq_subtasks_task_id_ordinal")),
    )
    _subtask_indexes()


def _subtask_indexes() -> None:
    """The claim index (one scan in claim order), the reaper's and the throughput view's."""
    op.create_index(
        "ix_subtasks_claim",
        "subtasks",
        ["pool", sa.literal_column("priority DESC"), "id"],
        unique=False,
        postgresql_where=sa.text("status = 'pending'"),
    )
    op.create_index(
        "ix_subtasks_lease",
        "subtasks",
        ["lease_expires_at"],
        unique=False,
        postgresql_where=sa.text("status = 'processing'"),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(
        "ix_subtasks_lease",
        table_name="subtasks",
        postgresql_where=sa.text("status = 'processing'"),
    )
    op.drop_index(
        "ix_subtasks_claim", table_name="subtasks", postgresql_where=sa.text("status = 'pending'")
    )
    op.drop_table("subtasks")
    op.drop_index("ix_tasks_status_priority", table_name="tasks")
    op.drop_table("tasks")
    op.drop_table("executors")
    op.drop_table("error_logs")
