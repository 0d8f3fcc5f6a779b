"""The claim as one server-side call: imgrun_claim(pool, provider, n, holder, lease)

Revision ID: 0006
Revises: 0005
Create Date: 2026-11-25

A claim used to be a transaction of three to five round trips (BEGIN, lock the provider's
row, the claim, the rpm tokens, COMMIT). The function does all of it in one call, run in
autocommit. Each statement of a VOLATILE plpgsql function takes a new snapshot (READ
COMMITTED), so the in-flight count that follows the provider row's lock sees every claim
committed before ours: the fleet-wide limit stays exact under concurrent claimers.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0006"
down_revision: str | None = "0005"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# No row at all: the provider is not registered. Otherwise the claimed rows in id order, each
# with the headroom (rows the limit and rpm budget allowed, at most n) and the cooldown left;
# one row with a NULL id when nothing was claimed.
CLAIM_FUNCTION = """
CREATE OR REPLACE FUNCTION imgrun_claim(
    p_pool text, p_provider text, p_n int, p_holder text, p_lease float8
) RETURNS TABLE (
    headroom int, cooldown float8, id bigint, task_id bigint, ordinal int, pool text,
    prompt text, params jsonb, attempts int, retry_count int, deferrals int,
    external_id text, provider text, max_retries int
) LANGUAGE plpgsql VOLATILE AS $$
#variable_conflict use_column
DECLARE
    b record;
    want int := p_n;
    avail float8;
    rate float8;
    room int;
    got bigint;
BEGIN
    -- Claims for one provider take turns on its row; what follows sees the ones before us.
    SELECT pr."limit", pr.rpm, pr.tokens,
           greatest(0, extract(epoch FROM pr.cooldown_until - now()))::float8 AS cool,
           extract(epoch FROM now() - pr.tokens_at)::float8 AS since
    INTO b FROM providers pr WHERE pr.name = p_provider FOR UPDATE;
    IF NOT FOUND THEN
        RETURN;
    END IF;
    IF b.cool > 0 THEN
        RETURN QUERY SELECT 0, b.cool, NULL::bigint, NULL::bigint, NULL::int, NULL::text,
            NULL::text, NULL::jsonb, NULL::int, NULL::int, NULL::int, NULL::text, NULL::text,
            NULL::int;
        RETURN;
    END IF;
    IF b.rpm IS NOT NULL THEN
        -- The rpm bucket refills rpm/60 a second, up to one second's worth (at least 1).
        rate := b.rpm / 60.0;
        avail := CASE WHEN b.tokens IS NULL OR b.since IS NULL THEN greatest(1.0, rate)
                       ELSE least(greatest(1.0, rate), b.tokens + greatest(0.0, b.since) * rate)
                  END;
        want := least(p_n, floor(avail)::int);
    END IF;
    SELECT greatest(0, least(want, b."limit" - count(*)))::int INTO room
    FROM subtasks s WHERE s.status = 'processing' AND s.provider = p_provider;

    RETURN QUERY
    WITH picked AS (
        SELECT s.id FROM subtasks s
        WHERE s.status = 'pending' AND s.pool = p_pool AND s.provider = p_provider
          AND s.run_after <= now()
        -- Priority first; within it the fair-share turn interleaves tasks (the claim index).
        ORDER BY s.priority DESC, s.turn, s.id
        LIMIT room
        FOR UPDATE SKIP LOCKED
    ), claimed AS (
        UPDATE subtasks s
        SET status = 'processing', executor_id = p_holder, attempts = s.attempts + 1,
            lease_expires_at = now() + make_interval(secs => p_lease),
            started_at = coalesce(s.started_at, now()), updated_at = now()
        -- An id list, not a join: with LIMIT a variable the planner cannot size "picked"
        -- and a cached generic plan may hash-join it against a scan of every subtask.
        WHERE s.id = ANY(ARRAY(SELECT pk.id FROM picked pk))
        RETURNING s.id, s.task_id, s.ordinal, s.pool, s.prompt, s.params, s.attempts,
                  s.retry_count, s.deferrals, s.external_id, s.provider
    ), started AS (
        UPDATE tasks t SET status = 'running', started_at = now()
        WHERE t.id IN (SELECT c.task_id FROM claimed c) AND t.status = 'pending'
    )
    SELECT room, 0::float8, c.id, c.task_id, c.ordinal, c.pool::text, c.prompt, c.params,
           c.attempts, c.retry_count, c.deferrals, c.external_id, c.provider, t.max_retries
    FROM claimed c JOIN tasks t ON t.id = c.task_id
    ORDER BY c.id;
    GET DIAGNOSTICS got = ROW_COUNT;
    IF got = 0 THEN
        -- Nothing claimed: one row still says whether the limit bound us.
        RETURN QUERY SELECT room, 0::float8, NULL::bigint, NULL::bigint, NULL::int,
            NULL::text, NULL::text, NULL::jsonb, NULL::int, NULL::int, NULL::int, NULL::text,
            NULL::text, NULL::int;
    END IF;
    IF b.rpm IS NOT NULL THEN
        UPDATE providers SET tokens = avail - got, tokens_at = now() WHERE name = p_provider;
    END IF;
END;
$$
"""


def upgrade() -> None:
    """Apply this revision."""
    op.execute(CLAIM_FUNCTION)


def downgrade() -> None:
    """Revert this revision."""
    op.execute("DROP FUNCTION IF EXISTS imgrun_claim(text, text, int, text, float8)")
