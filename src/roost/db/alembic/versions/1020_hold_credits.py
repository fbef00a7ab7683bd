"""hold_credits: ``roost_hold_credits(scope, id, user_id, amount, kind, reference, ttl)``,
which applies the caller's scope (``roost_apply_scope``, migration 1010), finds the
subscription that pays for ``user_id`` and holds ``amount`` of its credits in one
statement, and answers the payer's row with whether the hold was taken.

Sent alone, as its own implicit transaction, a hold is one round trip, committed as it
ends, and the payer's row is locked for that statement only: a hold taken in a
transaction of its own was ``BEGIN`` with the scope, the statement and ``COMMIT``, the
row locked until the ``COMMIT`` arrived (roost.billing.credits.reserve_alone,
docs/benchmarks.md "Credit reservations").

Revision ID: 1020
Revises: 1010
Create Date: 2026-12-04
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1020"
down_revision: str | Sequence[str] | None = "1010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The statement is roost.billing.credits._FIND_AND_HOLD as this revision wrote it (a
    # migration is history): the payer as _PAYER finds it (own subscription first, then a
    # group's, oldest first), the conditional UPDATE that holds only what the balance
    # covers on a subscription that may spend, and the reservation's row.
    op.execute("""
CREATE FUNCTION roost_hold_credits(
  p_scope jsonb, p_id uuid, p_user_id uuid, p_amount bigint, p_kind text, p_reference text,
  p_ttl double precision
) RETURNS TABLE (id uuid, status text, credits_limit bigint, balance bigint, limits jsonb,
                 plan_key text, held boolean)
LANGUAGE plpgsql AS $$
#variable_conflict use_column
BEGIN
  PERFORM roost_apply_scope(p_scope);
  RETURN QUERY
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
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION roost_hold_credits(jsonb, uuid, uuid, bigint, text, text, "
               "double precision)")
