"""``roost_subscription_owned()``: how many agents, documents or agent runs since a time
the users a subscription pays for own, for a plan's count limits.

A plan's ``max_agents``, ``max_documents`` and ``runs_per_day`` are how many *the
subscriber* may have.  They were counted per user in the user's own scope: a group's
plan of ``max_agents: 5`` let every member make five (row-level security hides the
other members' agents from each of them).  The function runs as its owner and counts
the rows of every user the subscription pays for: its user, or the group's members
whose payer it is (no live subscription of their own and no older live subscription of
another of their groups: ``roost.billing.credits._PAYER_SQL``'s order).  It answers only
for a subscription the caller may read (administrators and the system any).

Revision ID: 1440
Revises: 1430
Create Date: 2026-12-07
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "1440"
down_revision: str | Sequence[str] | None = "1430"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.execute(r"""
CREATE FUNCTION roost_subscription_payees(p_subscription uuid) RETURNS SETOF uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT s.user_id FROM subscriptions s
  WHERE s.id = p_subscription AND s.user_id IS NOT NULL
  UNION ALL
  SELECT m.user_id FROM subscriptions s
  JOIN user_group_memberships m ON m.group_id = s.group_id
  WHERE s.id = p_subscription
    AND NOT EXISTS (SELECT 1 FROM subscriptions own
                    WHERE own.user_id = m.user_id AND own.status <> 'canceled')
    AND NOT EXISTS (SELECT 1 FROM user_group_memberships other
                    JOIN subscriptions o ON o.group_id = other.group_id
                    WHERE other.user_id = m.user_id AND o.status <> 'canceled'
                      AND (o.created_at, o.id) < (s.created_at, s.id))
$$;
""")
    op.execute(r"""
CREATE FUNCTION roost_subscription_owned(p_subscription uuid, p_what text,
                                         p_since timestamptz, p_except uuid)
RETURNS bigint
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  WITH payees AS (SELECT roost_subscription_payees(p_subscription) AS user_id)
  SELECT CASE p_what
    WHEN 'agents' THEN (SELECT count(*) FROM agents a
                        WHERE a.user_id IN (SELECT user_id FROM payees))
    WHEN 'documents' THEN (SELECT count(*) FROM documents d
                           WHERE d.user_id IN (SELECT user_id FROM payees))
    WHEN 'runs' THEN (SELECT count(*) FROM runs r
                      WHERE r.user_id IN (SELECT user_id FROM payees) AND r.kind = 'agent'
                        AND r.created_at >= p_since AND r.id IS DISTINCT FROM p_except)
  END
  WHERE EXISTS (SELECT 1 FROM subscriptions s WHERE s.id = p_subscription
                AND (roost_current_user_id() IS NULL OR roost_is_admin()
                     OR roost_row_visible(s.user_id, s.group_id)))
$$;
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION IF EXISTS roost_subscription_owned(uuid, text, timestamptz, uuid)")
    op.execute("DROP FUNCTION IF EXISTS roost_subscription_payees(uuid)")
