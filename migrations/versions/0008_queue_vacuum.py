"""The queue table vacuumed as fast as it churns

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-25

Every claim and every outcome leaves a dead version of a subtask row, and its entries in the
partial indexes the claim reads in order (ix_subtasks_claim) and counts (ix_subtasks_in_flight)
stay until a vacuum removes them: each claim walks over more of them, and a runner draining a
200,000-subtask backlog at 15,000/s slowed to half its speed before the default thresholds
(20 % of the table) let autovacuum in. Vacuum subtasks after 2 % of it changed, unthrottled.
(The embedded server also checks every 2 s instead of every minute: `autovacuum_naptime` is
a server setting; see the README for an external server.)
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0008"
down_revision: str | None = "0007"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    """Per-table autovacuum settings for subtasks."""
    op.execute(
        "ALTER TABLE subtasks SET"
        " (autovacuum_vacuum_scale_factor = 0.02, autovacuum_vacuum_cost_delay = 0)"
    )


def downgrade() -> None:
    """Back to the server's defaults."""
    op.execute(
        "ALTER TABLE subtasks RESET (autovacuum_vacuum_scale_factor, autovacuum_vacuum_cost_delay)"
    )
