"""prompt_cache: NOTIFY roost_prompts when anything a prompt resolution depends on
changes (labels, a version's is_active, group memberships), so every process drops its
cache of resolutions (roost.prompts.cache).  Statement triggers: one notification per
statement, and none for the usage counters every chat reply and run bumps.

Revision ID: 0900
Revises: 0890
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0900"
down_revision: str | Sequence[str] | None = "0890"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (trigger, table, events): what a resolution reads.
TRIGGERS: tuple[tuple[str, str, str], ...] = (
    ("system_prompt_labels_notify", "system_prompt_labels", "INSERT OR UPDATE OR DELETE"),
    ("system_prompts_notify", "system_prompts", "UPDATE OF is_active OR DELETE"),
    ("user_group_memberships_prompts_notify", "user_group_memberships",
     "INSERT OR UPDATE OR DELETE"),
)


def upgrade() -> None:
    op.execute("""
CREATE FUNCTION roost_prompts_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('roost_prompts', TG_TABLE_NAME);
  RETURN NULL;
END $$;
""")
    for name, table, events in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} AFTER {events} ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION roost_prompts_changed()")
        op.execute(f"CREATE TRIGGER {name}_truncate AFTER TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION roost_prompts_changed()")


def downgrade() -> None:
    for name, table, _events in TRIGGERS:
        op.execute(f"DROP TRIGGER {name}_truncate ON {table}")
        op.execute(f"DROP TRIGGER {name} ON {table}")
    op.execute("DROP FUNCTION roost_prompts_changed()")
