"""``roost_subscription_usage()``: a subscription's ledger totals for one period, summed
over every row charged to it, for whoever may read the subscription.

An invoice preview is asked by the subscriber: for a group subscription, any member.
Summed in the caller's scope, the ledger's row-level security (``roost_row_visible
(user_id)``) hid the other members' rows, so each member's draft billed only their own
usage while the issued invoice (summed by the job, unscoped) billed everyone's.  The
function runs as its owner (row-level security does not apply to it) and answers only
when the caller may read the subscription itself (``roost_row_visible(user_id,
group_id)``, administrators every one); otherwise no rows.

Revision ID: 1340
Revises: 1330
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1340"
down_revision: str | Sequence[str] | None = "1330"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(r"""
CREATE FUNCTION roost_subscription_usage(p_subscription uuid, p_start timestamptz,
                                         p_end timestamptz)
RETURNS TABLE (model varchar, request_type varchar, currency varchar, requests bigint,
               tokens_input bigint, tokens_output bigint, credits bigint, cost numeric)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT u.model, u.request_type, u.currency, count(*),
         coalesce(sum(u.tokens_input), 0), coalesce(sum(u.tokens_output), 0),
         coalesce(sum(u.credits_used), 0), coalesce(sum(u.cost), 0)
  FROM usage_records u
  WHERE u.subscription_id = p_subscription
    AND u.created_at >= p_start AND u.created_at < p_end
    AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = p_subscription
                AND (roost_is_admin() OR roost_row_visible(s.user_id, s.group_id)))
  GROUP BY u.model, u.request_type, u.currency
$$;
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS roost_subscription_usage(uuid, timestamptz, timestamptz)")
