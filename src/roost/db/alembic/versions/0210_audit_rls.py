"""Audit log under row-level security: users read their own records, admins all.

The chain trigger becomes SECURITY DEFINER so that an insert made as ``roost_app``
still links to the newest row of *any* tenant; ``roost_app`` itself may only insert
and read what the policy admits, and never update, delete or truncate.

Revision ID: 0210
Revises: 0200
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0210"
down_revision: str | Sequence[str] | None = "0200"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_IF_APP_ROLE = """
DO $$ BEGIN
  IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'roost_app') THEN
    {body}
  END IF;
END $$;
"""


def upgrade() -> None:
    # search_path pinned: a SECURITY DEFINER function must not resolve names through a
    # schema the caller controls.
    op.execute("ALTER FUNCTION roost_audit_chain() SECURITY DEFINER SET search_path = public")
    op.execute("ALTER TABLE audit_logs ENABLE ROW LEVEL SECURITY")
    op.execute(
        "CREATE POLICY audit_logs_select ON audit_logs FOR SELECT "
        "USING (roost_is_admin() OR user_id = roost_current_user_id())"
    )
    op.execute("CREATE POLICY audit_logs_insert ON audit_logs FOR INSERT WITH CHECK (true)")
    op.execute(_IF_APP_ROLE.format(
        body="REVOKE UPDATE, DELETE, TRUNCATE ON audit_logs FROM roost_app;"
    ))


def downgrade() -> None:
    op.execute(_IF_APP_ROLE.format(body="GRANT UPDATE, DELETE ON audit_logs TO roost_app;"))
    op.execute("DROP POLICY audit_logs_insert ON audit_logs")
    op.execute("DROP POLICY audit_logs_select ON audit_logs")
    op.execute("ALTER TABLE audit_logs DISABLE ROW LEVEL SECURITY")
    op.execute("ALTER FUNCTION roost_audit_chain() SECURITY INVOKER RESET search_path")
