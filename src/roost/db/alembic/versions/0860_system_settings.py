"""system_settings: runtime system settings (typed, audited, NOTIFY-invalidated).

Seed 001's ``system_settings`` plus ``updated_by``.  Administrators only under row-level
security; ``roost_runtime_setting(key)`` (SECURITY DEFINER, search_path pinned) returns
one value to any transaction, so a user's request can apply an override it may not list.

Revision ID: 0860
Revises: 0850
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0860"
down_revision: str | Sequence[str] | None = "0850"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "system_settings",
        sa.Column("id", sa.Integer(), sa.Identity(always=False), nullable=False),
        sa.Column("key", sa.String(length=255), nullable=False),
        sa.Column("value", sa.Text(), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("updated_by", sa.Uuid(), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("length(key) > 0", name=op.f("ck_system_settings_key_not_blank")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_settings")),
        sa.UniqueConstraint("key", name=op.f("uq_system_settings_key")),
    )
    op.execute("ALTER TABLE system_settings ENABLE ROW LEVEL SECURITY")
    op.execute("CREATE POLICY system_settings_admin ON system_settings FOR ALL "
               "USING (roost_is_admin()) WITH CHECK (roost_is_admin())")
    op.execute("""
CREATE FUNCTION roost_runtime_setting(p_key text) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT value FROM system_settings WHERE key = p_key
$$;
""")


def downgrade() -> None:
    op.execute("DROP FUNCTION roost_runtime_setting(text)")
    op.drop_table("system_settings")
