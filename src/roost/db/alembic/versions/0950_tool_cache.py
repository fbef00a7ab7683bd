"""tool_cache: NOTIFY roost_tools when a tool or an MCP server changes in a way a call
depends on (enabled, available, schema, owner, how the server is reached), so every
process drops its cache of the tools it calls (roost.tools.calls).  Statement triggers:
one notification per statement; a server's health checks and a tool's embedding do not
fire them.

Revision ID: 0950
Revises: 0940
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0950"
down_revision: str | Sequence[str] | None = "0940"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# (trigger, table, events): what a call reads.  A new server has no tools yet (their
# inserts fire), so a server's INSERT needs none.
TRIGGERS: tuple[tuple[str, str, str], ...] = (
    ("tools_notify", "tools",
     "INSERT OR DELETE OR UPDATE OF user_id, mcp_server_id, kind, name, input_schema, "
     "enabled, available"),
    ("mcp_servers_notify", "mcp_servers",
     "DELETE OR UPDATE OF user_id, name, transport, url, command, args, env_encrypted, "
     "headers_encrypted, enabled, last_synced_at"),
)


def upgrade() -> None:
    op.execute("""
CREATE FUNCTION roost_tools_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('roost_tools', TG_TABLE_NAME);
  RETURN NULL;
END $$;
""")
    for name, table, events in TRIGGERS:
        op.execute(f"CREATE TRIGGER {name} AFTER {events} ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION roost_tools_changed()")
        op.execute(f"CREATE TRIGGER {name}_truncate AFTER TRUNCATE ON {table} "
                   "FOR EACH STATEMENT EXECUTE FUNCTION roost_tools_changed()")


def downgrade() -> None:
    for name, table, _events in TRIGGERS:
        op.execute(f"DROP TRIGGER {name}_truncate ON {table}")
        op.execute(f"DROP TRIGGER {name} ON {table}")
    op.execute("DROP FUNCTION roost_tools_changed()")
