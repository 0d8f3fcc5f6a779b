"""API and alerts: tokens, idempotency keys, the alert outbox and its triggers

Revision ID: 0003
Revises: 0002
Create Date: 2026-11-25

The triggers write alert events in the same transaction as the change that causes them,
so no runner statement had to change: a task reaching a final status (task.finished), a
new aggregated error (error.new), and 429/5xx counts per provider (the input of the
provider.degraded watchdog; insert-only, so concurrent runners never wait on each other).
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0003"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TASK_FINISHED = """
CREATE FUNCTION imgrun_task_finished() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO outbox (event, payload, created_at) VALUES ('task.finished', jsonb_build_object(
        'task_id', NEW.id, 'name', NEW.name, 'user_id', NEW.user_id, 'pool', NEW.pool,
        'provider', NEW.provider, 'status', NEW.status,
        'total_subtasks', NEW.total_subtasks, 'completed_subtasks', NEW.completed_subtasks,
        'failed_subtasks', NEW.failed_subtasks, 'canceled_subtasks', NEW.canceled_subtasks,
        'total_images', NEW.total_images, 'images', NEW.completed_subtasks * NEW.batch_size,
        'created_at', NEW.created_at, 'started_at', NEW.started_at,
        'finished_at', NEW.finished_at,
        'duration_seconds', round(CAST(extract(epoch FROM
            coalesce(NEW.finished_at, now()) - coalesce(NEW.started_at, NEW.created_at))
            AS numeric), 3)
    ), clock_timestamp());
    RETURN NULL;
END $$
"""

TASK_FINISHED_TRIGGER = """
CREATE TRIGGER imgrun_task_finished AFTER UPDATE OF status ON tasks FOR EACH ROW
    WHEN (NEW.status IN ('completed', 'failed', 'partial', 'canceled')
          AND OLD.status IS DISTINCT FROM NEW.status)
    EXECUTE FUNCTION imgrun_task_finished();
"""

ERROR_NEW = """
CREATE FUNCTION imgrun_error_new() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    -- The runner records the subtask's (redacted) error before aggregating it.
    INSERT INTO outbox (event, payload, created_at) VALUES ('error.new', jsonb_build_object(
        'error_type', NEW.error_type, 'fingerprint', NEW.error_message,
        'sample', coalesce(
            (SELECT left(error, 500) FROM subtasks WHERE id = NEW.last_subtask_id),
            left(NEW.error_message, 500)),
        'pool', NEW.pool, 'provider', NEW.provider, 'subtask_id', NEW.last_subtask_id,
        'count', NEW.count, 'first_occurred_at', NEW.first_occurred_at
    ), clock_timestamp());
    RETURN NULL;
END $$
"""

ERROR_NEW_TRIGGER = """
CREATE TRIGGER imgrun_error_new AFTER INSERT ON error_logs FOR EACH ROW
    EXECUTE FUNCTION imgrun_error_new();
"""

PROVIDER_PRESSURE = r"""
CREATE FUNCTION imgrun_provider_pressure() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    delta bigint := NEW.count - CASE WHEN TG_OP = 'UPDATE' THEN OLD.count ELSE 0 END;
BEGIN
    -- Backpressure (429, 503 + Retry-After) and server errors; fingerprints keep the code.
    IF delta > 0 AND NEW.provider IS NOT NULL
       AND (NEW.error_type = 'RateLimited' OR NEW.error_message ~ 'HTTP 5\d\d') THEN
        INSERT INTO provider_pressure (provider, at, count)
        VALUES (NEW.provider, clock_timestamp(), delta);
    END IF;
    RETURN NULL;
END $$
"""

PROVIDER_PRESSURE_TRIGGER = """
CREATE TRIGGER imgrun_provider_pressure AFTER INSERT OR UPDATE OF count ON error_logs
    FOR EACH ROW EXECUTE FUNCTION imgrun_provider_pressure();
"""

TRIGGERS = (
    ("tasks", "imgrun_task_finished"),
    ("error_logs", "imgrun_error_new"),
    ("error_logs", "imgrun_provider_pressure"),
)


def _tables() -> None:
    _api_tokens()
    _submissions()
    _outbox()
    _provider_pressure()


def _api_tokens() -> None:
    op.create_table(
        "api_tokens",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("name", sa.Text(), nullable=False),
        sa.Column("token_hash", sa.String(length=64), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_api_tokens")),
        sa.UniqueConstraint("name", name=op.f("uq_api_tokens_name")),
        sa.UniqueConstraint("token_hash", name=op.f("uq_api_tokens_token_hash")),
    )


def _submissions() -> None:
    op.create_table(
        "submissions",
        sa.Column("key", sa.Text(), nullable=False),
        sa.Column("request_hash", sa.String(length=64), nullable=False),
        sa.Column("task_id", sa.BigInteger(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name=op.f("fk_submissions_task_id_tasks"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("key", name=op.f("pk_submissions")),
    )
    op.create_index("ix_submissions_task_id", "submissions", ["task_id"], unique=False)


def _outbox() -> None:
    op.create_table(
        "outbox",
        sa.Column("id", sa.Uuid(), server_default=sa.text("gen_random_uuid()"), nullable=False),
        sa.Column("event", sa.Text(), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("state", sa.String(length=16), server_default="pending", nullable=False),
        sa.Column("attempts", sa.Integer(), server_default="0", nullable=False),
        sa.Column(
            "delivered_to",
            postgresql.ARRAY(sa.Text()),
            server_default=sa.text("'{}'::text[]"),
            nullable=False,
        ),
        sa.Column("last_error", sa.Text(), nullable=True),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "next_attempt_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column("delivered_at", sa.DateTime(timezone=True), nullable=True),
        sa.CheckConstraint(
            "state IN ('pending', 'delivered', 'failed')", name=op.f("ck_outbox_state")
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_outbox")),
    )
    op.create_index(
        "ix_outbox_due",
        "outbox",
        ["next_attempt_at"],
        unique=False,
        postgresql_where=sa.text("state = 'pending'"),
    )
    op.create_index("ix_outbox_event_created_at", "outbox", ["event", "created_at"], unique=False)


def _provider_pressure() -> None:
    op.create_table(
        "provider_pressure",
        sa.Column("id", sa.BigInteger(), nullable=False),
        sa.Column("provider", sa.Text(), nullable=False),
        sa.Column(
            "at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False
        ),
        sa.Column("count", sa.BigInteger(), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_provider_pressure")),
    )
    op.create_index("ix_provider_pressure_at", "provider_pressure", ["at"], unique=False)


def upgrade() -> None:
    """Apply this revision."""
    _tables()
    # One statement per execute: asyncpg prepares each and refuses several at once.
    for statement in (
        TASK_FINISHED,
        TASK_FINISHED_TRIGGER,
        ERROR_NEW,
        ERROR_NEW_TRIGGER,
        PROVIDER_PRESSURE,
        PROVIDER_PRESSURE_TRIGGER,
    ):
        op.execute(statement)


def downgrade() -> None:
    """Revert this revision."""
    for table, name in TRIGGERS:
        op.execute(f"DROP TRIGGER IF EXISTS {name} ON {table}")
        op.execute(f"DROP FUNCTION IF EXISTS {name}()")
    op.drop_index("ix_provider_pressure_at", table_name="provider_pressure")
    op.drop_table("provider_pressure")
    op.drop_index("ix_outbox_event_created_at", table_name="outbox")
    op.drop_index(
        "ix_outbox_due", table_name="outbox", postgresql_where=sa.text("state = 'pending'")
    )
    op.drop_table("outbox")
    op.drop_index("ix_submissions_task_id", table_name="submissions")
    op.drop_table("submissions")
    op.drop_table("api_tokens")
