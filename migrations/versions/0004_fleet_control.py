"""Fleet-wide provider control: providers and their reports, routing and fair-share keys

Revision ID: 0004
Revises: 0003
Create Date: 2026-11-25

Subtasks carry their task's provider (claims route and count in-flight work per provider)
and a fair-share turn (tasks of one priority interleave). The claim index is rebuilt on
(pool, provider, priority DESC, turn, id). Error aggregates count recovered occurrences.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0004"
down_revision: str | None = "0003"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PENDING = sa.text("status = 'pending'")
PROCESSING = sa.text("status = 'processing'")


def upgrade() -> None:
    """Apply this revision."""
    _subtasks_and_tasks()
    _providers()
    _provider_reports()
    op.add_column(
        "error_logs", sa.Column("recovered", sa.BigInteger(), server_default="0", nullable=False)
    )


def _subtasks_and_tasks() -> None:
    op.add_column("subtasks", sa.Column("provider", sa.Text(), nullable=True))
    op.execute("UPDATE subtasks s SET provider = t.provider FROM tasks t WHERE t.id = s.task_id")
    op.alter_column("subtasks", "provider", nullable=False)
    # Existing rows keep turn 0: they come first within their priority, in id order, as before.
    op.add_column(
        "subtasks", sa.Column("turn", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.add_column(
        "tasks", sa.Column("turn_end", sa.BigInteger(), server_default="0", nullable=False)
    )
    op.drop_index("ix_subtasks_claim", table_name="subtasks", postgresql_where=PENDING)
    op.create_index(
        "ix_subtasks_claim",
        "subtasks",
        ["pool", "provider", sa.text("priority DESC"), "turn", "id"],
        unique=False,
        postgresql_where=PENDING,
    )
    op.create_index(
        "ix_subtasks_in_flight",
        "subtasks",
        ["provider"],
        unique=False,
        postgresql_where=PROCESSING,
    )


def _providers() -> None:
    op.create_table(
        "providers",
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("policy", sa.String(length=16), nullable=False),
        sa.Column("min_limit", sa.Integer(), nullable=False),
        sa.Column("max_concurrency", sa.Integer(), nullable=False),
        sa.Column("rpm", sa.Integer(), nullable=True),
        sa.Column("limit", sa.Integer(), nullable=False),
        sa.Column("state", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("cooldown_until", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "decisions",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "window_started_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("tokens", sa.Float(), nullable=True),
        sa.Column("tokens_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.PrimaryKeyConstraint("name", name=op.f("pk_providers")),
    )


def _provider_reports() -> None:
    op.create_table(
        "provider_reports",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column("executor_id", sa.Text(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("completions", sa.Integer(), server_default="0", nullable=False),
        sa.Column("rate_limited", sa.Integer(), server_default="0", nullable=False),
        sa.Column("unavailable", sa.Integer(), server_default="0", nullable=False),
        sa.Column("timeouts", sa.Integer(), server_default="0", nullable=False),
        sa.Column("server_errors", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "latencies",
            postgresql.ARRAY(sa.Float()),
            server_default=sa.text("'{}'::double precision[]"),
            nullable=False,
        ),
        sa.Column("ratelimit_remaining", sa.Integer(), nullable=True),
        sa.Column("ratelimit_limit", sa.Integer(), nullable=True),
        sa.Column("ratelimit_reset", sa.Float(), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_reports")),
    )
    op.create_index(
        "ix_provider_reports_provider_at", "provider_reports", ["provider", "at"], unique=False
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_provider_reports_provider_at", table_name="provider_reports")
    op.drop_table("provider_reports")
    op.drop_table("providers")
    op.drop_column("error_logs", "recovered")
    op.drop_index("ix_subtasks_in_flight", table_name="subtasks", postgresql_where=PROCESSING)
    op.drop_index("ix_subtasks_claim", table_name="subtasks", postgresql_where=PENDING)
    op.create_index(
        "ix_subtasks_claim",
        "subtasks",
        ["pool", sa.text("priority DESC"), "id"],
        unique=False,
        postgresql_where=PENDING,
    )
    op.drop_column("tasks", "turn_end")
    op.drop_column("subtasks", "turn")
    op.drop_column("subtasks", "provider")
