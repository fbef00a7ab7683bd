"""provider_cache: NOTIFY roost_llm_providers when a provider changes in a way routing
depends on (added, removed, enabled, its order, model list, endpoint, key or
configuration), so every process drops its cache of the enabled providers
(roost.llm.routing).  Statement triggers: one notification per statement; a health
check (health_status, health_error, last_health_check_at, response_time, updated_at)
does not fire them.

Revision ID: 0990
Revises: 0980
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0990"
down_revision: str | Sequence[str] | None = "0980"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

EVENTS = ("INSERT OR DELETE OR UPDATE OF name, type, api_key_encrypted, base_url, model, "
          "weight, priority, enabled, config, models")


def upgrade() -> None:
    op.execute("""
CREATE FUNCTION roost_llm_providers_changed() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('roost_llm_providers', TG_OP);
  RETURN NULL;
END $$;
""")
    op.execute(f"CREATE TRIGGER llm_providers_notify AFTER {EVENTS} ON llm_providers "
               "FOR EACH STATEMENT EXECUTE FUNCTION roost_llm_providers_changed()")
    op.execute("CREATE TRIGGER llm_providers_notify_truncate AFTER TRUNCATE ON llm_providers "
               "FOR EACH STATEMENT EXECUTE FUNCTION roost_llm_providers_changed()")


def downgrade() -> None:
    op.execute("DROP TRIGGER llm_providers_notify_truncate ON llm_providers")
    op.execute("DROP TRIGGER llm_providers_notify ON llm_providers")
    op.execute("DROP FUNCTION roost_llm_providers_changed()")
