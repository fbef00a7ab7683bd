"""system_prompts: versioned system prompts (seed 001's columns) per scope (a user, a
group, the factory), labels pointing at versions, an immutability trigger, the usage
functions chat and agent runs call, row-level security; runs.system_prompt_id and
chat_sessions.system_prompt_id (the version used).

Revision ID: 0870
Revises: 0860
Create Date: 2026-12-02
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0870"
down_revision: str | Sequence[str] | None = "0860"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

JSONB = postgresql.JSONB(astext_type=sa.Text())
SCOPE_SQL = "COALESCE(user_id, group_id, '00000000-0000-0000-0000-000000000000'::uuid)"
ONE_SCOPE = ("(is_factory_default AND user_id IS NULL AND group_id IS NULL) OR "
             "(NOT is_factory_default AND num_nonnulls(user_id, group_id) = 1)")

# Reading: your own rows, your groups' rows, the factory's (administrators: all).
# Writing: your own rows; a group's rows when you administer the group; the factory's
# only as an administrator.
VISIBLE = "(roost_row_visible(user_id, group_id) OR (user_id IS NULL AND group_id IS NULL))"
WRITABLE = ("(roost_is_admin() OR (user_id IS NOT NULL AND user_id = roost_current_user_id()) "
            "OR (group_id IS NOT NULL AND roost_group_role(group_id) = 'admin'))")

FUNCTIONS = (
    # A version's text is fixed: new text is a new version (docs/prompts.md).
    r"""
CREATE FUNCTION roost_system_prompts_immutable() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  IF NEW.prompt_text IS DISTINCT FROM OLD.prompt_text
     OR NEW.variables IS DISTINCT FROM OLD.variables
     OR NEW.prompt_key IS DISTINCT FROM OLD.prompt_key
     OR NEW.version IS DISTINCT FROM OLD.version
     OR NEW.user_id IS DISTINCT FROM OLD.user_id
     OR NEW.group_id IS DISTINCT FROM OLD.group_id
     OR NEW.is_factory_default IS DISTINCT FROM OLD.is_factory_default THEN
    RAISE EXCEPTION 'system prompt versions are immutable: publish a new version'
      USING ERRCODE = 'integrity_constraint_violation';
  END IF;
  RETURN NEW;
END $$;
""",
    """
CREATE TRIGGER system_prompts_immutable BEFORE UPDATE ON system_prompts
  FOR EACH ROW EXECUTE FUNCTION roost_system_prompts_immutable();
""",
    # Usage counters: a user's chat reply or run uses a factory or group version it may
    # read but not write, so these run as the owner and touch only the counters.
    r"""
CREATE FUNCTION roost_prompt_used(p_id uuid) RETURNS void
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  UPDATE system_prompts SET usage_count = usage_count + 1, last_used_at = now()
   WHERE id = p_id;
$$;
""",
    r"""
CREATE FUNCTION roost_prompt_outcome(p_id uuid, p_success boolean) RETURNS void
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  UPDATE system_prompts
     SET success_rate = (COALESCE(success_rate, 0) * outcome_count
                         + CASE WHEN p_success THEN 1 ELSE 0 END) / (outcome_count + 1),
         outcome_count = outcome_count + 1
   WHERE id = p_id;
$$;
""",
    r"""
CREATE FUNCTION roost_prompt_rated(p_id uuid, p_rating double precision,
                                   p_previous double precision DEFAULT NULL) RETURNS void
  LANGUAGE sql SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  -- p_previous: a changed rating replaces the one it counted before.
  UPDATE system_prompts
     SET average_satisfaction = CASE
           WHEN p_previous IS NOT NULL AND rating_count > 0
             THEN (average_satisfaction * rating_count - p_previous + p_rating) / rating_count
           ELSE (COALESCE(average_satisfaction, 0) * rating_count + p_rating)
                / (rating_count + 1) END,
         rating_count = rating_count
                        + CASE WHEN p_previous IS NOT NULL AND rating_count > 0 THEN 0 ELSE 1 END
   WHERE id = p_id;
$$;
""",
)


def upgrade() -> None:
    op.create_table(
        "system_prompts",
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("group_id", sa.UUID(), nullable=True),
        sa.Column("scope_id", sa.UUID(), sa.Computed(SCOPE_SQL, persisted=True), nullable=False),
        sa.Column("prompt_key", sa.String(length=200), nullable=False),
        sa.Column("prompt_category", sa.String(length=100), server_default=sa.text("'general'"),
                  nullable=False),
        sa.Column("prompt_name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("prompt_text", sa.Text(), nullable=False),
        sa.Column("variables", JSONB, server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("is_factory_default", sa.Boolean(), server_default=sa.text("false"),
                  nullable=False),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("version", sa.Integer(), server_default=sa.text("1"), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("usage_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("average_satisfaction", sa.Float(), nullable=True),
        sa.Column("rating_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("success_rate", sa.Float(), nullable=True),
        sa.Column("outcome_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint(ONE_SCOPE, name=op.f("ck_system_prompts_one_scope")),
        sa.CheckConstraint("version >= 1", name=op.f("ck_system_prompts_version_positive")),
        sa.CheckConstraint("prompt_key ~ '^[a-z0-9][a-z0-9._-]{0,199}$'",
                           name=op.f("ck_system_prompts_key_format")),
        sa.CheckConstraint("success_rate IS NULL OR (success_rate >= 0 AND success_rate <= 1)",
                           name=op.f("ck_system_prompts_success_rate_range")),
        sa.ForeignKeyConstraint(["created_by"], ["users.id"],
                                name=op.f("fk_system_prompts_created_by_users"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"],
                                name=op.f("fk_system_prompts_group_id_groups"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_system_prompts_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_prompts")),
    )
    op.create_index("uq_system_prompts_scope_key_version", "system_prompts",
                    ["scope_id", "prompt_key", "version"], unique=True)
    op.create_index("ix_system_prompts_user_id", "system_prompts", ["user_id"])
    op.create_index("ix_system_prompts_group_id", "system_prompts", ["group_id"])
    op.create_index("ix_system_prompts_key_category", "system_prompts",
                    ["prompt_key", "prompt_category"])
    op.create_index("ix_system_prompts_created", "system_prompts", ["created_at", "id"])
    op.create_table(
        "system_prompt_labels",
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("group_id", sa.UUID(), nullable=True),
        sa.Column("scope_id", sa.UUID(), sa.Computed(SCOPE_SQL, persisted=True), nullable=False),
        sa.Column("prompt_key", sa.String(length=200), nullable=False),
        sa.Column("label", sa.String(length=64), nullable=False),
        sa.Column("prompt_id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("label ~ '^[a-z0-9][a-z0-9._-]{0,63}$'",
                           name=op.f("ck_system_prompt_labels_label_format")),
        sa.CheckConstraint("num_nonnulls(user_id, group_id) <= 1",
                           name=op.f("ck_system_prompt_labels_one_scope")),
        sa.ForeignKeyConstraint(["group_id"], ["groups.id"],
                                name=op.f("fk_system_prompt_labels_group_id_groups"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["prompt_id"], ["system_prompts.id"],
                                name=op.f("fk_system_prompt_labels_prompt_id_system_prompts"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_system_prompt_labels_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_system_prompt_labels")),
    )
    op.create_index("uq_system_prompt_labels_scope_key_label", "system_prompt_labels",
                    ["scope_id", "prompt_key", "label"], unique=True)
    op.create_index("ix_system_prompt_labels_prompt_id", "system_prompt_labels", ["prompt_id"])
    op.create_index("ix_system_prompt_labels_user_id", "system_prompt_labels", ["user_id"])
    op.create_index("ix_system_prompt_labels_group_id", "system_prompt_labels", ["group_id"])
    for statement in FUNCTIONS:
        op.execute(statement)
    for table in ("system_prompts", "system_prompt_labels"):
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {table}_select ON {table} FOR SELECT USING ({VISIBLE})")
        op.execute(f"CREATE POLICY {table}_insert ON {table} FOR INSERT WITH CHECK ({WRITABLE})")
        op.execute(f"CREATE POLICY {table}_update ON {table} FOR UPDATE USING ({WRITABLE}) "
                   f"WITH CHECK ({WRITABLE})")
        op.execute(f"CREATE POLICY {table}_delete ON {table} FOR DELETE USING ({WRITABLE})")

    _seed_agent_system()

    op.add_column("runs", sa.Column("system_prompt_id", sa.UUID(), nullable=True))
    op.create_foreign_key(op.f("fk_runs_system_prompt_id_system_prompts"), "runs",
                          "system_prompts", ["system_prompt_id"], ["id"], ondelete="SET NULL")
    op.create_index("ix_runs_system_prompt_id", "runs", ["system_prompt_id"],
                    postgresql_where=sa.text("system_prompt_id IS NOT NULL"))
    op.add_column("chat_sessions", sa.Column("system_prompt_id", sa.UUID(), nullable=True))
    op.create_foreign_key(op.f("fk_chat_sessions_system_prompt_id_system_prompts"),
                          "chat_sessions", "system_prompts", ["system_prompt_id"], ["id"],
                          ondelete="SET NULL")
    op.create_index("ix_chat_sessions_system_prompt_id", "chat_sessions", ["system_prompt_id"],
                    postgresql_where=sa.text("system_prompt_id IS NOT NULL"))


# The factory default agents name with config.system_prompt_key; the same text as
# roost.prompts.service.AGENT_SYSTEM (start-up publishes a new version when that changes;
# chat.system comes from ROOST_CHAT_SYSTEM_PROMPT at start-up).
AGENT_SYSTEM_TEXT = ("You are {{agent_name}}, an agent working for {{user_name}}. Today is "
                     "{{date}}. Use the tools you are given when they help; say what you did "
                     "and what you could not do.")
AGENT_SYSTEM_VARIABLES = (
    '[{"name": "agent_name", "type": "string", "required": true, "default": null, '
    '"description": "The agent\'s name"}, '
    '{"name": "user_name", "type": "string", "required": false, "default": "the user", '
    '"description": "The run\'s user"}, '
    '{"name": "date", "type": "string", "required": false, "default": null, '
    '"description": "Today\'s date (UTC, ISO 8601)"}]')


def _seed_agent_system() -> None:
    prompt_id = "0193a000-0000-7000-8000-000000000870"
    op.get_bind().execute(sa.text("""
        INSERT INTO system_prompts (id, prompt_key, prompt_category, prompt_name, description,
                                    prompt_text, variables, is_factory_default, version)
        VALUES (CAST(:id AS uuid), 'agent.system', 'agents', 'Agent instructions',
                'For agents that set config.system_prompt_key to agent.system', :text,
                CAST(:variables AS jsonb), true, 1)"""),
        {"id": prompt_id, "text": AGENT_SYSTEM_TEXT, "variables": AGENT_SYSTEM_VARIABLES})
    op.get_bind().execute(sa.text("""
        INSERT INTO system_prompt_labels (id, prompt_key, label, prompt_id)
        VALUES (gen_random_uuid(), 'agent.system', 'production', CAST(:id AS uuid))"""),
        {"id": prompt_id})


def downgrade() -> None:
    op.drop_index("ix_chat_sessions_system_prompt_id", table_name="chat_sessions",
                  postgresql_where=sa.text("system_prompt_id IS NOT NULL"))
    op.drop_constraint(op.f("fk_chat_sessions_system_prompt_id_system_prompts"),
                       "chat_sessions", type_="foreignkey")
    op.drop_column("chat_sessions", "system_prompt_id")
    op.drop_index("ix_runs_system_prompt_id", table_name="runs",
                  postgresql_where=sa.text("system_prompt_id IS NOT NULL"))
    op.drop_constraint(op.f("fk_runs_system_prompt_id_system_prompts"), "runs",
                       type_="foreignkey")
    op.drop_column("runs", "system_prompt_id")
    op.drop_table("system_prompt_labels")
    op.drop_table("system_prompts")
    for fn in ("roost_prompt_rated(uuid, double precision, double precision)",
               "roost_prompt_outcome(uuid, boolean)", "roost_prompt_used(uuid)",
               "roost_system_prompts_immutable()"):
        op.execute(f"DROP FUNCTION IF EXISTS {fn}")
