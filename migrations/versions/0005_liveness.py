"""Liveness by runner: each process holds rows under its own holder; in-flight rows by holder

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-25

A runner process writes `<executor_id>:<incarnation>` into subtasks.executor_id; its
executors row records that holder, so a runner whose heartbeat went stale (or a restart
under the same id) is mapped to exactly the rows it held. Rows written before this
revision name the executor id itself: a NULL holder means "the id", so they still match.
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROCESSING = sa.text("status = 'processing'")


def upgrade() -> None:
    """Apply this revision."""
    op.add_column("executors", sa.Column("holder", sa.Text(), nullable=True))
    op.create_index("ix_executors_holder", "executors", ["holder"], unique=True)
    op.create_index(
        "ix_subtasks_holder",
        "subtasks",
        ["executor_id"],
        unique=False,
        postgresql_where=PROCESSING,
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index("ix_subtasks_holder", table_name="subtasks", postgresql_where=PROCESSING)
    op.drop_index("ix_executors_holder", table_name="executors")
    op.drop_column("executors", "holder")
