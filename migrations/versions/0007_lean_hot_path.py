"""Less server work per subtask: one in-flight index, and the claim planned once

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-25

Both hot-path updates (claim: pending -> processing; outcome: processing -> done) change
`status`, so neither is HOT: each new row version is inserted into every index whose
predicate it satisfies. Three partial indexes covered the same small in-flight set (by
provider, by holder, by lease); a claimed row went into all three. One index on
(provider, executor_id) now serves the fleet-wide count (provider prefix), a holder's rows
(PostgreSQL 18 skips over the few providers) and the lease backstop (a scan of the in-flight
set, bounded by the fleet's pool limits, every few seconds).

imgrun_claim()'s statements were re-planned at each call: PL/pgSQL's plan cache kept a
custom plan for the pick (its LIMIT is a variable, so the generic plan never looked
cheaper). Its plans are now generic, made once per connection; the pick's generic plan is
the same ordered scan of ix_subtasks_claim (tests/db/test_fair_share.py checks it).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0007"
down_revision: str | None = "0006"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

PROCESSING = sa.text("status = 'processing'")
CLAIM_SIGNATURE = "imgrun_claim(text, text, int, text, float8)"


def upgrade() -> None:
    """Apply this revision."""
    op.drop_index("ix_subtasks_holder", table_name="subtasks", postgresql_where=PROCESSING)
    op.drop_index("ix_subtasks_lease", table_name="subtasks", postgresql_where=PROCESSING)
    op.drop_index("ix_subtasks_in_flight", table_name="subtasks", postgresql_where=PROCESSING)
    op.create_index(
        "ix_subtasks_in_flight",
        "subtasks",
        ["provider", "executor_id"],
        unique=False,
        postgresql_where=PROCESSING,
    )
    op.execute(f"ALTER FUNCTION {CLAIM_SIGNATURE} SET plan_cache_mode = force_generic_plan")


def downgrade() -> None:
    """Revert this revision."""
    op.execute(f"ALTER FUNCTION {CLAIM_SIGNATURE} RESET plan_cache_mode")
    op.drop_index("ix_subtasks_in_flight", table_name="subtasks", postgresql_where=PROCESSING)
    op.create_index("ix_subtasks_in_flight", "subtasks", ["provider"], postgresql_where=PROCESSING)
    op.create_index(
        "ix_subtasks_lease", "subtasks", ["lease_expires_at"], postgresql_where=PROCESSING
    )
    op.create_index("ix_subtasks_holder", "subtasks", ["executor_id"], postgresql_where=PROCESSING)
