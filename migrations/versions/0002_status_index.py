"""status view: partial index on recent completions for the throughput window

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-24
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Apply this revision."""
    op.create_index(
        "ix_subtasks_completed_at",
        "subtasks",
        ["completed_at"],
        unique=False,
        postgresql_include=["task_id"],
        postgresql_where=sa.text("status = 'completed'"),
    )


def downgrade() -> None:
    """Revert this revision."""
    op.drop_index(
        "ix_subtasks_completed_at",
        table_name="subtasks",
        postgresql_where=sa.text("status = 'completed'"),
    )
