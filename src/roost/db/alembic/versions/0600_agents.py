"""Agents: personas, their members and secrets, agents, runs and run steps, persona health
metrics, emails and attachments; foreign keys from earlier tables that named them.

Row-level security: ``roost_persona_role(persona)`` (SECURITY DEFINER, so the personas
and persona_members policies do not recurse into each other) is the caller's role in a
persona: ``owner`` (its ``owner_id``, or a member with that role), ``editor``,
``viewer`` or NULL.  Personas, their members, agents bound to them, their runs, steps,
mail and health metrics are visible to members; owners and editors change them; owners
manage members and delete.  A user's own agents and runs are theirs; public agents are
visible to everyone.  Secrets are visible (never their values: the API does not return
them) to owners and editors only.  Administrators see everything.

Revision ID: 0600
Revises: 0530
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql
from sqlalchemy.types import Text

revision: str = "0600"
down_revision: str | Sequence[str] | None = "0530"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The agents domain's built-in tool (roost.agents.mail runs it, inside agent runs only).
SEND_EMAIL_ID = uuid.UUID("019ad9a0-0000-7000-8000-000000000601")
SEND_EMAIL_DESCRIPTION = (
    "Send an email from your persona's address. to: recipient addresses; subject; body "
    "(plain text); in_reply_to: the id of an email in your mailbox to answer (threads the "
    "reply).")
SEND_EMAIL_SCHEMA = {
    "type": "object",
    "additionalProperties": False,
    "required": ["to", "subject", "body"],
    "properties": {
        "to": {"type": "array", "minItems": 1, "maxItems": 50,
               "items": {"type": "string", "minLength": 3, "maxLength": 320}},
        "cc": {"type": "array", "maxItems": 50,
               "items": {"type": "string", "minLength": 3, "maxLength": 320}},
        "subject": {"type": "string", "maxLength": 998, "pattern": "^[^\\r\\n\\x00]*$"},
        "body": {"type": "string", "maxLength": 1_000_000, "pattern": "^[^\\x00]*$"},
        "in_reply_to": {"type": "string", "format": "uuid"},
    },
}

PERSONA_ROLE = r"""
CREATE FUNCTION roost_persona_role(p_persona uuid) RETURNS text
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT CASE WHEN p.owner_id = roost_current_user_id() THEN 'owner'
              ELSE (SELECT m.role FROM persona_members m
                     WHERE m.persona_id = p.id AND m.user_id = roost_current_user_id())
         END
    FROM personas p WHERE p.id = p_persona
$$;
"""

_MEMBER = "roost_persona_role({col}) IS NOT NULL"
_EDITOR = "roost_persona_role({col}) IN ('owner', 'editor')"
_OWNER = "roost_persona_role({col}) = 'owner'"


def _member(col: str) -> str:
    return _MEMBER.format(col=col)


def _editor(col: str) -> str:
    return _EDITOR.format(col=col)


# (table, command, USING, WITH CHECK); administrators pass every policy.
POLICIES: tuple[tuple[str, str, str | None, str | None], ...] = (
    ("personas", "SELECT", f"owner_id = roost_current_user_id() OR {_member('id')}", None),
    ("personas", "INSERT", None, "roost_row_visible(owner_id)"),
    # An editor may change the persona, not who owns it.
    ("personas", "UPDATE", _editor("id"), f"{_editor('id')} AND owner_id = (SELECT roost_persona_owner(id))"),
    ("personas", "DELETE", _OWNER.format(col="id"), None),
    ("persona_members", "SELECT", f"user_id = roost_current_user_id() OR {_member('persona_id')}", None),
    ("persona_members", "INSERT", None, _OWNER.format(col="persona_id")),
    ("persona_members", "UPDATE", _OWNER.format(col="persona_id"), _OWNER.format(col="persona_id")),
    (
        "persona_members",
        "DELETE",
        f"user_id = roost_current_user_id() OR {_OWNER.format(col='persona_id')}",
        None,
    ),
    ("secrets", "ALL", _editor("persona_id"), _editor("persona_id")),
    (
        "agents",
        "SELECT",
        f"user_id = roost_current_user_id() OR is_public "
        f"OR (persona_id IS NOT NULL AND {_member('persona_id')})",
        None,
    ),
    (
        "agents",
        "INSERT",
        None,
        f"roost_row_visible(user_id) AND (persona_id IS NULL OR {_editor('persona_id')})",
    ),
    (
        "agents",
        "UPDATE",
        f"user_id = roost_current_user_id() OR (persona_id IS NOT NULL AND {_editor('persona_id')})",
        f"user_id = roost_current_user_id() OR (persona_id IS NOT NULL AND {_editor('persona_id')})",
    ),
    (
        "agents",
        "DELETE",
        f"user_id = roost_current_user_id() OR (persona_id IS NOT NULL AND {_editor('persona_id')})",
        None,
    ),
    *(
        (table, command, using, check)
        for table in ("runs", "run_steps")
        for command, using, check in (
            (
                "SELECT",
                f"roost_row_visible(user_id) OR (persona_id IS NOT NULL AND {_member('persona_id')})",
                None,
            ),
            ("INSERT", None, "roost_row_visible(user_id)"),
            ("UPDATE", "roost_row_visible(user_id)", "roost_row_visible(user_id)"),
            ("DELETE", "roost_row_visible(user_id)", None),
        )
    ),
    ("persona_health_metrics", "SELECT", _member("persona_id"), None),
    # Tools granted to a persona (0500 made them the granter's): its members see the
    # grants, its owners and editors make and change them.
    ("persona_tools", "SELECT", _member("persona_id"), None),
    ("persona_tools", "INSERT", None, _editor("persona_id")),
    ("persona_tools", "UPDATE", _editor("persona_id"), _editor("persona_id")),
    ("persona_tools", "DELETE", _editor("persona_id"), None),
    ("emails", "SELECT", _member("persona_id"), None),
    ("emails", "INSERT", None, _editor("persona_id")),
    ("emails", "UPDATE", _editor("persona_id"), _editor("persona_id")),
    ("emails", "DELETE", _editor("persona_id"), None),
    (
        "attachments",
        "SELECT",
        f"roost_row_visible(user_id) OR (persona_id IS NOT NULL AND {_member('persona_id')})",
        None,
    ),
    (
        "attachments",
        "INSERT",
        None,
        f"roost_row_visible(user_id) OR (persona_id IS NOT NULL AND {_editor('persona_id')})",
    ),
    (
        "attachments",
        "DELETE",
        f"roost_row_visible(user_id) OR (persona_id IS NOT NULL AND {_editor('persona_id')})",
        None,
    ),
)

PERSONA_OWNER = r"""
CREATE FUNCTION roost_persona_owner(p_persona uuid) RETURNS uuid
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT owner_id FROM personas WHERE id = p_persona
$$;
"""

# A persona's members (and owner) may see one another's usernames, as a group's members
# do: the users policy (migration 0200) shows a user only themself and co-members of groups.
PERSONA_USERNAMES = r"""
CREATE FUNCTION roost_persona_usernames(p_persona uuid)
RETURNS TABLE (user_id uuid, username text)
LANGUAGE sql STABLE SECURITY DEFINER SET search_path = pg_catalog, public AS $$
  SELECT u.id, u.username::text FROM users u
   WHERE (roost_is_admin() OR roost_persona_role(p_persona) IS NOT NULL)
     AND (u.id IN (SELECT m.user_id FROM persona_members m WHERE m.persona_id = p_persona)
          OR u.id = (SELECT p.owner_id FROM personas p WHERE p.id = p_persona))
$$;
"""

TABLES = (
    "personas",
    "persona_members",
    "secrets",
    "agents",
    "runs",
    "run_steps",
    "persona_health_metrics",
    "emails",
    "attachments",
)


def _policy_sql(index: int, table: str, command: str, using: str | None, check: str | None) -> str:
    sql = f"CREATE POLICY {table}_{command.lower()}_{index} ON {table} FOR {command}"
    if using is not None:
        sql += f" USING (roost_is_admin() OR {using})"
    if check is not None:
        sql += f" WITH CHECK (roost_is_admin() OR {check})"
    return sql


def upgrade() -> None:
    op.create_table(
        "personas",
        sa.Column("owner_id", sa.UUID(), nullable=False),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("system_prompt", sa.Text(), server_default=sa.text("''"), nullable=False),
        sa.Column("default_provider", sa.String(length=64), nullable=True),
        sa.Column("default_model", sa.String(length=255), nullable=True),
        sa.Column(
            "fallback_providers",
            postgresql.JSONB(astext_type=Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("email_address", sa.String(length=320), nullable=True),
        sa.Column("email_agent_id", sa.UUID(), nullable=True),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("container_id", sa.String(length=255), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("length(btrim(name)) > 0", name=op.f("ck_personas_name_not_blank")),
        sa.ForeignKeyConstraint(
            ["owner_id"], ["users.id"], name=op.f("fk_personas_owner_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_personas")),
    )
    op.create_index("ix_personas_name", "personas", ["name"], unique=False)
    op.create_index("ix_personas_owner_id", "personas", ["owner_id"], unique=False)
    op.create_index(
        "uq_personas_email_address",
        "personas",
        [sa.literal_column("lower(email_address)")],
        unique=True,
        postgresql_where=sa.text("email_address IS NOT NULL"),
    )
    op.create_table(
        "agents",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("persona_id", sa.UUID(), nullable=True),
        sa.Column("project_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("slug", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("avatar_url", sa.String(length=500), nullable=True),
        sa.Column("system_prompt", sa.Text(), nullable=True),
        sa.Column("preferred_provider", sa.String(length=64), nullable=True),
        sa.Column("preferred_model", sa.String(length=255), nullable=True),
        sa.Column(
            "tool_permissions",
            postgresql.JSONB(astext_type=Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "document_ids",
            postgresql.JSONB(astext_type=Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "config",
            postgresql.JSONB(astext_type=Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("is_active", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("is_public", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("slug ~ '^[a-z0-9][a-z0-9-]{0,99}$'", name=op.f("ck_agents_slug_format")),
        sa.ForeignKeyConstraint(
            ["persona_id"], ["personas.id"], name=op.f("fk_agents_persona_id_personas"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_agents_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_agents")),
    )
    op.create_index("ix_agents_persona_id", "agents", ["persona_id"], unique=False)
    op.create_index("ix_agents_project_id", "agents", ["project_id"], unique=False)
    op.create_index(
        "ix_agents_public_slug", "agents", ["slug"], unique=False, postgresql_where=sa.text("is_public")
    )
    op.create_index("uq_agents_owner_slug", "agents", ["user_id", "slug"], unique=True)
    op.create_foreign_key(
        op.f("fk_personas_email_agent_id_agents"),
        "personas",
        "agents",
        ["email_agent_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_table(
        "persona_health_metrics",
        sa.Column("persona_id", sa.UUID(), nullable=False),
        sa.Column("cpu_percent", sa.Numeric(precision=5, scale=2), nullable=True),
        sa.Column("memory_mb", sa.Integer(), nullable=True),
        sa.Column("memory_percent", sa.Numeric(precision=5, scale=2), nullable=True),
        sa.Column("disk_usage_gb", sa.Numeric(precision=10, scale=2), nullable=True),
        sa.Column("llm_calls_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("estimated_cost", sa.Numeric(precision=10, scale=4), nullable=True),
        sa.Column("active_runs_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("window_s", sa.Integer(), nullable=True),
        sa.Column("measured_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.ForeignKeyConstraint(
            ["persona_id"],
            ["personas.id"],
            name=op.f("fk_persona_health_metrics_persona_id_personas"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persona_health_metrics")),
    )
    op.create_index(
        "ix_persona_health_metrics_measured_at", "persona_health_metrics", ["measured_at"], unique=False
    )
    op.create_index(
        "ix_persona_health_metrics_persona_measured",
        "persona_health_metrics",
        ["persona_id", sa.literal_column("measured_at DESC")],
        unique=False,
    )
    op.create_table(
        "persona_members",
        sa.Column("persona_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("role", sa.String(length=50), server_default=sa.text("'editor'"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("role IN ('owner', 'editor', 'viewer')", name=op.f("ck_persona_members_role")),
        sa.ForeignKeyConstraint(
            ["persona_id"],
            ["personas.id"],
            name=op.f("fk_persona_members_persona_id_personas"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_persona_members_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persona_members")),
    )
    op.create_index("ix_persona_members_user_id", "persona_members", ["user_id"], unique=False)
    op.create_index(
        "uq_persona_members_persona_user", "persona_members", ["persona_id", "user_id"], unique=True
    )
    op.create_table(
        "secrets",
        sa.Column("persona_id", sa.UUID(), nullable=False),
        sa.Column("secret_type", sa.String(length=50), nullable=False),
        sa.Column("key_name", sa.String(length=255), nullable=False),
        sa.Column("encrypted_value", sa.Text(), nullable=False),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("last_used_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "secret_type IN ('llm_provider_key', 'email_imap', 'email_smtp', 'mcp_header', "
            "'mcp_env', 'api_token', 'other')",
            name=op.f("ck_secrets_secret_type"),
        ),
        sa.ForeignKeyConstraint(
            ["created_by"], ["users.id"], name=op.f("fk_secrets_created_by_users"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["persona_id"], ["personas.id"], name=op.f("fk_secrets_persona_id_personas"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_secrets")),
    )
    op.create_index(
        "uq_secrets_persona_type_key", "secrets", ["persona_id", "secret_type", "key_name"], unique=True
    )
    op.create_table(
        "runs",
        sa.Column("agent_id", sa.UUID(), nullable=True),
        sa.Column("persona_id", sa.UUID(), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("trace_id", sa.String(length=255), nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("status", sa.String(length=50), server_default=sa.text("'pending'"), nullable=False),
        sa.Column("stop_reason", sa.String(length=32), nullable=True),
        sa.Column("input", sa.Text(), nullable=False),
        sa.Column("output", sa.Text(), nullable=True),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("source", sa.String(length=32), server_default=sa.text("'api'"), nullable=False),
        sa.Column(
            "config",
            postgresql.JSONB(astext_type=Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("task_id", sa.UUID(), nullable=True),
        sa.Column("steps_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tokens_in", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tokens_out", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("cost", sa.Numeric(precision=14, scale=6), server_default=sa.text("0"), nullable=False),
        sa.Column("cancel_requested_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('pending', 'running', 'completed', 'failed', 'cancelled')",
            name=op.f("ck_runs_status"),
        ),
        sa.CheckConstraint(
            "stop_reason IS NULL OR stop_reason IN "
            "('final', 'max_steps', 'budget', 'timeout', 'cancelled', 'error')",
            name=op.f("ck_runs_stop_reason"),
        ),
        sa.ForeignKeyConstraint(
            ["agent_id"], ["agents.id"], name=op.f("fk_runs_agent_id_agents"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["persona_id"], ["personas.id"], name=op.f("fk_runs_persona_id_personas"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_runs_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_runs")),
    )
    op.create_index(
        "ix_runs_active",
        "runs",
        ["status"],
        unique=False,
        postgresql_where=sa.text("status IN ('pending', 'running')"),
    )
    op.create_index(
        "ix_runs_agent_created", "runs", ["agent_id", sa.literal_column("created_at DESC")], unique=False
    )
    op.create_index("ix_runs_persona_id", "runs", ["persona_id"], unique=False)
    op.create_index(
        "ix_runs_user_created", "runs", ["user_id", sa.literal_column("created_at DESC")], unique=False
    )
    op.create_index("uq_runs_trace_id", "runs", ["trace_id"], unique=True)
    op.create_index(
        "uq_runs_user_idempotency_key",
        "runs",
        ["user_id", "idempotency_key"],
        unique=True,
        postgresql_where=sa.text("idempotency_key IS NOT NULL"),
    )
    op.create_table(
        "emails",
        sa.Column("persona_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("run_id", sa.UUID(), nullable=True),
        sa.Column("direction", sa.String(length=50), nullable=False),
        sa.Column("message_id", sa.String(length=998), nullable=True),
        sa.Column("in_reply_to", sa.String(length=998), nullable=True),
        sa.Column("thread_id", sa.String(length=998), nullable=True),
        sa.Column("from_email", sa.String(length=320), nullable=False),
        sa.Column("to_email", sa.Text(), nullable=False),
        sa.Column("cc", sa.Text(), nullable=True),
        sa.Column("bcc", sa.Text(), nullable=True),
        sa.Column("subject", sa.Text(), nullable=True),
        sa.Column("body_text", sa.Text(), nullable=True),
        sa.Column("body_html", sa.Text(), nullable=True),
        sa.Column("size_bytes", sa.Integer(), nullable=True),
        sa.Column("received_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("sent_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint("direction IN ('inbound', 'outbound')", name=op.f("ck_emails_direction")),
        sa.ForeignKeyConstraint(
            ["persona_id"], ["personas.id"], name=op.f("fk_emails_persona_id_personas"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_emails_run_id_runs"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_emails_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_emails")),
    )
    op.create_index(
        "ix_emails_persona_created",
        "emails",
        ["persona_id", sa.literal_column("created_at DESC")],
        unique=False,
    )
    op.create_index("ix_emails_run_id", "emails", ["run_id"], unique=False)
    op.create_index("ix_emails_thread_id", "emails", ["thread_id"], unique=False)
    op.create_index(
        "uq_emails_persona_direction_message_id",
        "emails",
        ["persona_id", "direction", "message_id"],
        unique=True,
        postgresql_where=sa.text("message_id IS NOT NULL"),
    )
    op.create_table(
        "run_steps",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("persona_id", sa.UUID(), nullable=True),
        sa.Column("step_number", sa.Integer(), nullable=False),
        sa.Column("step_type", sa.String(length=50), nullable=False),
        sa.Column("status", sa.String(length=32), server_default=sa.text("'running'"), nullable=False),
        sa.Column("tool_id", sa.UUID(), nullable=True),
        sa.Column("tool_name", sa.String(length=256), nullable=True),
        sa.Column("tool_call_id", sa.String(length=255), nullable=True),
        sa.Column("tool_run_id", sa.UUID(), nullable=True),
        sa.Column("llm_request_id", sa.UUID(), nullable=True),
        sa.Column("input", postgresql.JSONB(astext_type=Text()), nullable=True),
        sa.Column("output", postgresql.JSONB(astext_type=Text()), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("tokens_in", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("tokens_out", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("cost", sa.Numeric(precision=14, scale=6), server_default=sa.text("0"), nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "status IN ('running', 'completed', 'failed', 'interrupted', 'cancelled')",
            name=op.f("ck_run_steps_status"),
        ),
        sa.CheckConstraint(
            "step_type IN ('llm_call', 'tool_call', 'rag_retrieval', 'error')",
            name=op.f("ck_run_steps_step_type"),
        ),
        sa.CheckConstraint("step_number >= 1", name=op.f("ck_run_steps_step_number_positive")),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_run_steps_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["tool_id"], ["tools.id"], name=op.f("fk_run_steps_tool_id_tools"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_run_steps_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_run_steps")),
    )
    op.create_index("ix_run_steps_tool_id", "run_steps", ["tool_id"], unique=False)
    op.create_index("ix_run_steps_user_id", "run_steps", ["user_id"], unique=False)
    op.create_index("uq_run_steps_run_step", "run_steps", ["run_id", "step_number"], unique=True)
    op.create_table(
        "attachments",
        sa.Column("email_id", sa.UUID(), nullable=True),
        sa.Column("run_id", sa.UUID(), nullable=True),
        sa.Column("persona_id", sa.UUID(), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("file_path", sa.Text(), nullable=False),
        sa.Column("file_size", sa.BigInteger(), nullable=False),
        sa.Column("mime_type", sa.String(length=255), nullable=True),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"), nullable=False),
        sa.CheckConstraint(
            "email_id IS NOT NULL OR run_id IS NOT NULL", name=op.f("ck_attachments_has_owner")
        ),
        sa.ForeignKeyConstraint(
            ["email_id"], ["emails.id"], name=op.f("fk_attachments_email_id_emails"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["persona_id"],
            ["personas.id"],
            name=op.f("fk_attachments_persona_id_personas"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["run_id"], ["runs.id"], name=op.f("fk_attachments_run_id_runs"), ondelete="CASCADE"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_attachments_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_attachments")),
    )
    op.create_index("ix_attachments_created_at", "attachments", ["created_at"], unique=False)
    op.create_index("ix_attachments_email_id", "attachments", ["email_id"], unique=False)
    op.create_index("ix_attachments_run_id", "attachments", ["run_id"], unique=False)
    op.create_index("ix_attachments_sha256", "attachments", ["sha256"], unique=False)
    op.create_foreign_key(
        op.f("fk_persona_tools_persona_id_personas"),
        "persona_tools",
        "personas",
        ["persona_id"],
        ["id"],
        ondelete="CASCADE",
    )
    op.create_foreign_key(
        op.f("fk_tool_runs_run_step_id_run_steps"),
        "tool_runs",
        "run_steps",
        ["run_step_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_foreign_key(
        op.f("fk_tool_runs_run_id_runs"), "tool_runs", "runs", ["run_id"], ["id"], ondelete="SET NULL"
    )
    op.add_column("usage_records", sa.Column("run_id", sa.UUID(), nullable=True))
    op.create_index("ix_usage_records_agent_id", "usage_records", ["agent_id"], unique=False)
    op.create_index("ix_usage_records_run_id", "usage_records", ["run_id"], unique=False)
    op.create_foreign_key(
        op.f("fk_usage_records_agent_id_agents"),
        "usage_records",
        "agents",
        ["agent_id"],
        ["id"],
        ondelete="SET NULL",
    )
    op.create_foreign_key(
        op.f("fk_usage_records_run_id_runs"), "usage_records", "runs", ["run_id"], ["id"], ondelete="SET NULL"
    )

    tools = sa.table(
        "tools", sa.column("id", sa.UUID()), sa.column("kind", sa.String()),
        sa.column("name", sa.String()), sa.column("title", sa.String()),
        sa.column("description", sa.Text()), sa.column("category", sa.String()),
        sa.column("input_schema", postgresql.JSONB()), sa.column("annotations", postgresql.JSONB()),
        sa.column("code_type", sa.String()), sa.column("is_builtin", sa.Boolean()),
    )
    op.bulk_insert(tools, [{
        "id": SEND_EMAIL_ID, "kind": "builtin", "name": "send_email", "title": "Send an email",
        "description": SEND_EMAIL_DESCRIPTION, "category": "email",
        "input_schema": SEND_EMAIL_SCHEMA, "code_type": "builtin", "is_builtin": True,
        # Not idempotent: a run resumed after a crash must not send the mail twice.
        "annotations": {"readOnlyHint": False, "destructiveHint": False,
                        "idempotentHint": False, "openWorldHint": True},
    }])
    op.execute(PERSONA_ROLE)
    op.execute(PERSONA_OWNER)
    op.execute(PERSONA_USERNAMES)
    for command in ("read", "insert", "update", "delete"):  # 0500's, by owner
        op.execute(f"DROP POLICY persona_tools_{command} ON persona_tools")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
    for index, (table, command, using, check) in enumerate(POLICIES):
        op.execute(_policy_sql(index, table, command, using, check))


def downgrade() -> None:
    for index, (table, command, _using, _check) in enumerate(POLICIES):
        if table == "persona_tools":
            op.execute(f"DROP POLICY {table}_{command.lower()}_{index} ON {table}")
    op.execute("CREATE POLICY persona_tools_read ON persona_tools FOR SELECT "
               "USING (user_id IS NULL OR roost_row_visible(user_id))")
    op.execute("CREATE POLICY persona_tools_insert ON persona_tools FOR INSERT "
               "WITH CHECK (roost_row_visible(user_id))")
    op.execute("CREATE POLICY persona_tools_update ON persona_tools FOR UPDATE "
               "USING (roost_row_visible(user_id)) WITH CHECK (roost_row_visible(user_id))")
    op.execute("CREATE POLICY persona_tools_delete ON persona_tools FOR DELETE "
               "USING (roost_row_visible(user_id))")
    tools = sa.table("tools", sa.column("id", sa.UUID()))
    op.execute(tools.delete().where(tools.c.id == SEND_EMAIL_ID))
    op.drop_constraint(op.f("fk_usage_records_agent_id_agents"), "usage_records", type_="foreignkey")
    op.drop_constraint(op.f("fk_usage_records_run_id_runs"), "usage_records", type_="foreignkey")
    op.drop_index("ix_usage_records_run_id", table_name="usage_records")
    op.drop_index("ix_usage_records_agent_id", table_name="usage_records")
    op.drop_column("usage_records", "run_id")
    op.drop_constraint(op.f("fk_tool_runs_run_id_runs"), "tool_runs", type_="foreignkey")
    op.drop_constraint(op.f("fk_tool_runs_run_step_id_run_steps"), "tool_runs", type_="foreignkey")
    op.drop_constraint(op.f("fk_persona_tools_persona_id_personas"), "persona_tools", type_="foreignkey")
    op.drop_constraint(op.f("fk_personas_email_agent_id_agents"), "personas", type_="foreignkey")
    for table in (
        "attachments",
        "emails",
        "run_steps",
        "runs",
        "persona_health_metrics",
        "secrets",
        "persona_members",
        "agents",
        "personas",
    ):
        op.drop_table(table)
    op.execute("DROP FUNCTION roost_persona_usernames(uuid)")
    op.execute("DROP FUNCTION roost_persona_owner(uuid)")
    op.execute("DROP FUNCTION roost_persona_role(uuid)")
