"""One claim across a pool's providers: imgrun_claim(pool, providers[], n, holder, lease)

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-25

A runner claimed for each of a pool's providers in turn, one round trip each, rotating which
went first. With two providers (a user's own beside the default `sim`) half the wake-ups of
an idle runner first asked the provider that had no work: a whole round trip (~0.7 ms here)
before the claim that started the subtask, and as much again on every refill of a busy pool.
The function now takes the pool's providers in the runner's order and claims for each in
turn, in one call: one round trip, one transaction (rows claimed for an earlier provider can
no longer be stranded by a failure at a later one).

For each provider asked it returns its claimed rows, then one status row (a NULL id): whether
its fleet-wide limit or rpm budget bounded the claim (only when the rows took all the room
they left: fewer means its queue ran dry), or the cooldown it is still paused for. An
unregistered provider gives nothing. All the providers' rows are locked first, in name order,
as register_providers does: two claims listing them in different orders never deadlock.

The one-provider function (0006) stays beside it: runners of the previous version, still
running while a new one migrates the database, keep claiming with it (an untyped second
argument resolves to the text overload; the new call casts to text[]). It locks one provider
row at a time, so it cannot close a lock cycle with the new one either.
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

CLAIM_FUNCTION = """
CREATE FUNCTION imgrun_claim(
    p_pool text, p_providers text[], p_n int, p_holder text, p_lease float8
) RETURNS TABLE (
    provider_name text, at_limit bool, cooldown float8, id bigint, task_id bigint, ordinal int,
    pool text, prompt text, params jsonb, attempts int, retry_count int, deferrals int,
    external_id text, provider text, max_retries int
) LANGUAGE plpgsql VOLATILE
-- Planned once per connection (see 0007): the pick's generic plan is the claim index's order.
SET plan_cache_mode = force_generic_plan
AS $$
#variable_conflict use_column
DECLARE
    p_provider text;
    b record;
    want int;
    avail float8;
    rate float8;
    room int;
    got bigint;
    total int := 0;
BEGIN
    -- Claims for one provider take turns on its row; what follows sees the ones before us.
    PERFORM 1 FROM providers pr WHERE pr.name = ANY(p_providers) ORDER BY pr.name FOR UPDATE;
    FOREACH p_provider IN ARRAY p_providers LOOP
        EXIT WHEN total >= p_n;
        want := p_n - total;
        SELECT pr."limit", pr.rpm, pr.tokens,
               greatest(0, extract(epoch FROM pr.cooldown_until - now()))::float8 AS cool,
               extract(epoch FROM now() - pr.tokens_at)::float8 AS since
        INTO b FROM providers pr WHERE pr.name = p_provider;
        CONTINUE WHEN NOT FOUND;  -- not registered yet: the runner registers it at start
        IF b.cool > 0 THEN
            RETURN QUERY SELECT p_provider, false, b.cool, NULL::bigint, NULL::bigint,
                NULL::int, NULL::text, NULL::text, NULL::jsonb, NULL::int, NULL::int,
                NULL::int, NULL::text, NULL::text, NULL::int;
            CONTINUE;
        END IF;
        IF b.rpm IS NOT NULL THEN
            -- The rpm bucket refills rpm/60 a second, up to one second's worth (at least 1).
            rate := b.rpm / 60.0;
            avail := CASE WHEN b.tokens IS NULL OR b.since IS NULL THEN greatest(1.0, rate)
                           ELSE least(greatest(1.0, rate), b.tokens + greatest(0.0, b.since) * rate)
                      END;
            want := least(want, floor(avail)::int);
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
        SELECT NULL::text, NULL::bool, NULL::float8, c.id, c.task_id, c.ordinal, c.pool::text,
               c.prompt, c.params, c.attempts, c.retry_count, c.deferrals, c.external_id,
               c.provider, t.max_retries
        FROM claimed c JOIN tasks t ON t.id = c.task_id
        ORDER BY c.id;
        GET DIAGNOSTICS got = ROW_COUNT;
        -- Bound by the limit (or rpm budget) only if the rows took all the room they left.
        RETURN QUERY SELECT p_provider, room < p_n - total AND got >= room, 0::float8,
            NULL::bigint, NULL::bigint, NULL::int, NULL::text, NULL::text, NULL::jsonb,
            NULL::int, NULL::int, NULL::int, NULL::text, NULL::text, NULL::int;
        IF b.rpm IS NOT NULL THEN
            UPDATE providers SET tokens = avail - got, tokens_at = now() WHERE name = p_provider;
        END IF;
        total := total + got;
    END LOOP;
END;
$$
"""


def upgrade() -> None:
    """The claim across providers, beside the claim for one (see above)."""
    op.execute(CLAIM_FUNCTION)


def downgrade() -> None:
    """Back to the claim for one provider only."""
    op.execute("DROP FUNCTION imgrun_claim(text, text[], int, text, float8)")
