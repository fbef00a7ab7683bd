"""hold_credits_async: ``roost_hold_credits`` commits its hold without waiting for the
WAL flush (``synchronous_commit = off`` for its own implicit transaction).

A hold is visible to every other transaction, and its row lock released, as soon as it
commits, flushed or not: what a concurrent hold sees, and so the guarantee that callers
cannot spend past a limit, does not depend on the flush.  Waiting for it only made the
durability of the hold itself part of every metered call's latency (2.7-3.8 ms per
``fdatasync`` on this machine's disk, up to two of them behind a busy group commit, and
the payer's row locked meanwhile).  What an unflushed hold risks is a crash of
PostgreSQL itself within ``3 x wal_writer_delay`` (0.6 s by default) of the commit: the
hold is then lost with the crash.  Its call's settlement (a durable commit, which also
flushes every hold committed before it) still charges the actual amount
(roost.billing.credits.settle: a hold it cannot find is charged without it), so no usage
is lost; what a lost hold does not do is keep those credits from other holds between
the restart and the settlement (docs/billing.md "Holds commit asynchronously").

Only ``reserve_alone`` calls this function, alone, as the statement of its own implicit
transaction: inside a larger transaction the setting would make that whole transaction's
commit asynchronous.

Revision ID: 1080
Revises: 1070
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1080"
down_revision: str | Sequence[str] | None = "1070"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(_FUNCTION.replace("%SYNC%", _ASYNC))


def downgrade() -> None:
    op.execute(_FUNCTION.replace("%SYNC%", ""))


_ASYNC = ("  -- A hold is not money: its commit does not wait for the WAL flush.\n"
          "  PERFORM set_config('synchronous_commit', 'off', true);\n")

# Migration 1020's function as it wrote it, with %SYNC% after the scope.
_FUNCTION = """
CREATE OR REPLACE FUNCTION roost_hold_credits(
  p_scope jsonb, p_id uuid, p_user_id uuid, p_amount bigint, p_kind text, p_reference text,
  p_ttl double precision
) RETURNS TABLE (id uuid, status text, credits_limit bigint, balance bigint, limits jsonb,
                 plan_key text, held boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM roost_apply_scope(p_scope);
%SYNC%  RETURN QUERY
  WITH payer AS (
    SELECT c.id, c.status, c.credits_limit, c.balance, p.limits, p.key AS plan_key FROM (
      SELECT s.id, s.status, s.credits_limit, s.plan_id, s.created_at, false AS via_group,
             s.credits_limit - s.credits_used - s.credits_reserved AS balance
      FROM subscriptions s WHERE s.user_id = p_user_id AND s.status <> 'canceled'
      UNION ALL
      SELECT s.id, s.status, s.credits_limit, s.plan_id, s.created_at, true,
             s.credits_limit - s.credits_used - s.credits_reserved
      FROM user_group_memberships m
      JOIN subscriptions s ON s.group_id = m.group_id AND s.status <> 'canceled'
      WHERE m.user_id = p_user_id
    ) c JOIN plans p ON p.id = c.plan_id
    ORDER BY c.via_group, c.created_at
    LIMIT 1
  ),
  held AS (
    UPDATE subscriptions s SET credits_reserved = s.credits_reserved + p_amount
    FROM payer
    WHERE s.id = payer.id AND s.status IN ('trialing', 'active', 'past_due')
      AND s.credits_used + s.credits_reserved + p_amount <= s.credits_limit
    RETURNING s.id
  ),
  reserved AS (
    INSERT INTO credit_reservations
      (id, subscription_id, user_id, kind, reference, amount, status, expires_at, created_at)
    SELECT p_id, held.id, p_user_id, p_kind, p_reference, p_amount, 'held',
           now() + make_interval(secs => p_ttl), now()
    FROM held
    RETURNING subscription_id
  )
  SELECT payer.id, payer.status::text, payer.credits_limit, payer.balance, payer.limits,
         payer.plan_key::text, EXISTS (SELECT 1 FROM reserved)
  FROM payer;
END $$;
"""
