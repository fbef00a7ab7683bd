"""Tools: MCP servers, tools, tool runs, tool dependencies, persona tools, LSP servers.

Row-level security: ``mcp_servers``, ``tools``, ``lsp_servers`` and ``persona_tools`` rows
are either a user's own (``user_id``) or global (``user_id`` NULL, written by
administrators): everyone reads global rows and their own; only the owner (or an
administrator) writes their own rows, only administrators write global ones.
``tool_runs`` and ``tool_dependencies`` are owner-only (administrators see all).
``persona_tools.persona_id`` has no foreign key yet (no ``personas`` table).

Revision ID: 0500
Revises: 0410
Create Date: 2026-12-01
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

from roost.db.vector import VectorType

revision: str = "0500"
down_revision: str | Sequence[str] | None = "0410"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

SHARED = ("mcp_servers", "tools", "lsp_servers", "persona_tools")
OWNED = ("tool_runs", "tool_dependencies")

# The built-in tools (roost.tools.builtins runs them): global rows with fixed ids.
BUILTINS = (
    (
        "019ad9a0-0000-7000-8000-000000000001",
        "current_time",
        "Current time",
        "The current date and time in UTC and in a time zone (an IANA name, default UTC).",
        "time",
        {
            "type": "object",
            "additionalProperties": False,
            "properties": {"timezone": {"type": "string", "minLength": 1, "maxLength": 64}},
        },
    ),
    (
        "019ad9a0-0000-7000-8000-000000000002",
        "knowledge_search",
        "Search my documents",
        "Hybrid (vector and full-text) search of the documents the caller may read; returns "
        "the best matching passages.",
        "knowledge",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["query"],
            "properties": {
                "query": {"type": "string", "minLength": 1, "maxLength": 2000},
                "k": {"type": "integer", "minimum": 1, "maximum": 20},
                "collection": {"type": "string", "maxLength": 128},
            },
        },
    ),
)


def upgrade() -> None:
    op.create_table(
        "lsp_servers",
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=255), nullable=False),
        sa.Column("language", sa.String(length=100), nullable=False),
        sa.Column("command", sa.String(length=500), nullable=False),
        sa.Column(
            "args",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "file_patterns",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_lsp_servers_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_lsp_servers")),
    )
    op.create_index("ix_lsp_servers_user_id", "lsp_servers", ["user_id"], unique=False)
    op.create_index(
        "uq_lsp_servers_global_name",
        "lsp_servers",
        ["name"],
        unique=True,
        postgresql_where=sa.text("user_id IS NULL"),
    )
    op.create_index(
        "uq_lsp_servers_owner_name",
        "lsp_servers",
        ["user_id", "name"],
        unique=True,
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_table(
        "mcp_servers",
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=64), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("transport", sa.String(length=32), nullable=False),
        sa.Column("url", sa.String(length=2048), nullable=True),
        sa.Column("command", sa.String(length=1024), nullable=True),
        sa.Column(
            "args",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'[]'::jsonb"),
            nullable=False,
        ),
        sa.Column("env_encrypted", sa.Text(), nullable=True),
        sa.Column("headers_encrypted", sa.Text(), nullable=True),
        sa.Column(
            "config",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column(
            "capabilities",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("server_info", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column(
            "health_status",
            sa.String(length=50),
            server_default=sa.text("'unknown'"),
            nullable=False,
        ),
        sa.Column("health_error", sa.Text(), nullable=True),
        sa.Column("latency_ms", sa.Integer(), nullable=True),
        sa.Column("last_seen", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_health_check_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_synced_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "health_status IN ('unknown', 'healthy', 'unhealthy')",
            name=op.f("ck_mcp_servers_health_status"),
        ),
        sa.CheckConstraint(
            "transport IN ('stdio', 'streamable_http')", name=op.f("ck_mcp_servers_transport")
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_mcp_servers_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_mcp_servers")),
    )
    op.create_index("ix_mcp_servers_user_id", "mcp_servers", ["user_id"], unique=False)
    op.create_index(
        "uq_mcp_servers_global_name",
        "mcp_servers",
        ["name"],
        unique=True,
        postgresql_where=sa.text("user_id IS NULL"),
    )
    op.create_index(
        "uq_mcp_servers_owner_name",
        "mcp_servers",
        ["user_id", "name"],
        unique=True,
        postgresql_where=sa.text("user_id IS NOT NULL"),
    )
    op.create_table(
        "tools",
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("created_by", sa.UUID(), nullable=True),
        sa.Column("mcp_server_id", sa.UUID(), nullable=True),
        sa.Column("kind", sa.String(length=16), nullable=False),
        sa.Column("name", sa.String(length=256), nullable=False),
        sa.Column("title", sa.String(length=256), nullable=True),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("category", sa.String(length=100), nullable=True),
        sa.Column(
            "input_schema",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text('\'{"type": "object"}\'::jsonb'),
            nullable=False,
        ),
        sa.Column("output_schema", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("annotations", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("code", sa.Text(), nullable=True),
        sa.Column("code_type", sa.String(length=50), nullable=True),
        sa.Column("is_builtin", sa.Boolean(), server_default=sa.text("false"), nullable=False),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("available", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("last_discovered_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("description_embedding", VectorType(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "updated_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "(kind = 'mcp') = (mcp_server_id IS NOT NULL)", name=op.f("ck_tools_mcp_has_server")
        ),
        sa.CheckConstraint("kind IN ('mcp', 'builtin')", name=op.f("ck_tools_kind")),
        sa.ForeignKeyConstraint(
            ["created_by"],
            ["users.id"],
            name=op.f("fk_tools_created_by_users"),
            ondelete="SET NULL",
        ),
        sa.ForeignKeyConstraint(
            ["mcp_server_id"],
            ["mcp_servers.id"],
            name=op.f("fk_tools_mcp_server_id_mcp_servers"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tools_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tools")),
    )
    op.create_index("ix_tools_category", "tools", ["category"], unique=False)
    op.create_index("ix_tools_name", "tools", ["name"], unique=False)
    op.create_index("ix_tools_user_id", "tools", ["user_id"], unique=False)
    op.create_index(
        "uq_tools_builtin_name",
        "tools",
        ["name"],
        unique=True,
        postgresql_where=sa.text("mcp_server_id IS NULL"),
    )
    op.create_index(
        "uq_tools_server_name",
        "tools",
        ["mcp_server_id", "name"],
        unique=True,
        postgresql_where=sa.text("mcp_server_id IS NOT NULL"),
    )
    op.create_table(
        "persona_tools",
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("persona_id", sa.UUID(), nullable=False),
        sa.Column("tool_id", sa.UUID(), nullable=False),
        sa.Column("is_enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("config", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.ForeignKeyConstraint(
            ["tool_id"],
            ["tools.id"],
            name=op.f("fk_persona_tools_tool_id_tools"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_persona_tools_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_persona_tools")),
    )
    op.create_index("ix_persona_tools_tool_id", "persona_tools", ["tool_id"], unique=False)
    op.create_index("ix_persona_tools_user_id", "persona_tools", ["user_id"], unique=False)
    op.create_index(
        "uq_persona_tools_persona_tool", "persona_tools", ["persona_id", "tool_id"], unique=True
    )
    op.create_table(
        "tool_dependencies",
        sa.Column("tool_id", sa.UUID(), nullable=False),
        sa.Column("depends_on_tool_id", sa.UUID(), nullable=False),
        sa.Column(
            "dependency_type",
            sa.String(length=50),
            server_default=sa.text("'requires'"),
            nullable=False,
        ),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "dependency_type IN ('requires', 'recommends', 'optional')",
            name=op.f("ck_tool_dependencies_dependency_type"),
        ),
        sa.CheckConstraint(
            "tool_id <> depends_on_tool_id", name=op.f("ck_tool_dependencies_not_self")
        ),
        sa.ForeignKeyConstraint(
            ["depends_on_tool_id"],
            ["tools.id"],
            name=op.f("fk_tool_dependencies_depends_on_tool_id_tools"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["tool_id"],
            ["tools.id"],
            name=op.f("fk_tool_dependencies_tool_id_tools"),
            ondelete="CASCADE",
        ),
        sa.ForeignKeyConstraint(
            ["user_id"],
            ["users.id"],
            name=op.f("fk_tool_dependencies_user_id_users"),
            ondelete="CASCADE",
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_dependencies")),
    )
    op.create_index(
        "ix_tool_dependencies_depends_on", "tool_dependencies", ["depends_on_tool_id"], unique=False
    )
    op.create_index(
        "uq_tool_dependencies_edge",
        "tool_dependencies",
        ["tool_id", "depends_on_tool_id"],
        unique=True,
    )
    op.create_table(
        "tool_runs",
        sa.Column("tool_id", sa.UUID(), nullable=True),
        sa.Column("user_id", sa.UUID(), nullable=True),
        sa.Column("session_id", sa.UUID(), nullable=True),
        sa.Column("message_id", sa.UUID(), nullable=True),
        sa.Column("run_id", sa.UUID(), nullable=True),
        sa.Column("run_step_id", sa.UUID(), nullable=True),
        sa.Column("trace_id", sa.String(length=255), nullable=False),
        sa.Column("tool_name", sa.String(length=256), nullable=False),
        sa.Column("status", sa.String(length=32), nullable=False),
        sa.Column(
            "input",
            postgresql.JSONB(astext_type=sa.Text()),
            server_default=sa.text("'{}'::jsonb"),
            nullable=False,
        ),
        sa.Column("output", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("result_preview", sa.Text(), nullable=True),
        sa.Column("error", sa.Text(), nullable=True),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("finished_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("duration_ms", sa.Integer(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column(
            "created_at",
            sa.DateTime(timezone=True),
            server_default=sa.text("now()"),
            nullable=False,
        ),
        sa.CheckConstraint(
            "status IN ('running', 'success', 'error', 'timeout')", name=op.f("ck_tool_runs_status")
        ),
        sa.ForeignKeyConstraint(
            ["tool_id"], ["tools.id"], name=op.f("fk_tool_runs_tool_id_tools"), ondelete="SET NULL"
        ),
        sa.ForeignKeyConstraint(
            ["user_id"], ["users.id"], name=op.f("fk_tool_runs_user_id_users"), ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_tool_runs")),
    )
    op.create_index("ix_tool_runs_run_id", "tool_runs", ["run_id"], unique=False)
    op.create_index("ix_tool_runs_tool_id", "tool_runs", ["tool_id"], unique=False)
    op.create_index(
        "ix_tool_runs_tool_name_started",
        "tool_runs",
        ["tool_name", sa.literal_column("started_at DESC")],
        unique=False,
    )
    op.create_index("ix_tool_runs_trace_id", "tool_runs", ["trace_id"], unique=False)
    op.create_index(
        "ix_tool_runs_user_started",
        "tool_runs",
        ["user_id", sa.literal_column("started_at DESC")],
        unique=False,
    )

    tools = sa.table(
        "tools",
        sa.column("id", sa.UUID()),
        sa.column("kind", sa.String()),
        sa.column("name", sa.String()),
        sa.column("title", sa.String()),
        sa.column("description", sa.Text()),
        sa.column("category", sa.String()),
        sa.column("input_schema", postgresql.JSONB()),
        sa.column("code_type", sa.String()),
        sa.column("is_builtin", sa.Boolean()),
    )
    op.bulk_insert(
        tools,
        [
            {
                "id": uuid.UUID(id_),
                "kind": "builtin",
                "name": name,
                "title": title,
                "description": description,
                "category": category,
                "input_schema": schema,
                "code_type": "builtin",
                "is_builtin": True,
            }
            for id_, name, title, description, category, schema in BUILTINS
        ],
    )
    for table in SHARED:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_read ON {table} FOR SELECT "
            "USING (user_id IS NULL OR roost_row_visible(user_id))"
        )
        op.execute(
            f"CREATE POLICY {table}_insert ON {table} FOR INSERT "
            "WITH CHECK (roost_row_visible(user_id))"
        )
        op.execute(
            f"CREATE POLICY {table}_update ON {table} FOR UPDATE "
            "USING (roost_row_visible(user_id)) WITH CHECK (roost_row_visible(user_id))"
        )
        op.execute(
            f"CREATE POLICY {table}_delete ON {table} FOR DELETE USING (roost_row_visible(user_id))"
        )
    for table in OWNED:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(
            f"CREATE POLICY {table}_owner ON {table} "
            "USING (roost_row_visible(user_id)) WITH CHECK (roost_row_visible(user_id))"
        )


def downgrade() -> None:
    for table in (
        "tool_runs",
        "tool_dependencies",
        "persona_tools",
        "tools",
        "mcp_servers",
        "lsp_servers",
    ):
        op.drop_table(table)
