"""Tools (issue 12): LSP server health, and the built-in tools web_fetch and lsp_diagnostics.

``lsp_servers`` gets the columns of its last health check (status, error, latency,
capabilities, server info, when), as ``mcp_servers`` has.  Two built-in tools become
global ``tools`` rows with fixed ids (``roost.tools.builtins``): ``web_fetch`` (a page
through the SSRF guard of web ingestion) and ``lsp_diagnostics`` (a workspace file's
diagnostics from a registered language server).

Revision ID: 0520
Revises: 0510
Create Date: 2026-12-08
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0520"
down_revision: str | Sequence[str] | None = "0510"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# No NUL in strings: PostgreSQL text and jsonb cannot hold one, so such arguments are
# refused by validation (422) instead of failing when the tool run is recorded.
NO_NUL = "^[^\\x00]*$"

# id, name, title, description, category, input schema (fixed: code refers to the ids).
BUILTINS = (
    (
        "019ad9a0-0000-7000-8000-000000000003",
        "web_fetch",
        "Fetch a web page",
        "Fetch an http(s) URL and return its text (HTML converted to plain text), status, "
        "final URL after redirects and content type. Private and loopback addresses are "
        "refused.",
        "web",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["url"],
            "properties": {
                "url": {"type": "string", "minLength": 1, "maxLength": 2048, "pattern": NO_NUL},
                "max_chars": {"type": "integer", "minimum": 1, "maximum": 200000},
            },
        },
    ),
    (
        "019ad9a0-0000-7000-8000-000000000004",
        "lsp_diagnostics",
        "Code diagnostics",
        "Diagnostics (errors, warnings) of a source file in the tools workspace, from the "
        "language server registered for its type; path is relative to the workspace.",
        "code",
        {
            "type": "object",
            "additionalProperties": False,
            "required": ["path"],
            "properties": {
                "path": {"type": "string", "minLength": 1, "maxLength": 1024, "pattern": NO_NUL},
                "language": {"type": "string", "minLength": 1, "maxLength": 100, "pattern": NO_NUL},
                "server": {"type": "string", "minLength": 1, "maxLength": 255, "pattern": NO_NUL},
            },
        },
    ),
)


def upgrade() -> None:
    op.add_column(
        "lsp_servers",
        sa.Column("health_status", sa.String(length=50), server_default=sa.text("'unknown'"),
                  nullable=False),
    )
    op.add_column("lsp_servers", sa.Column("health_error", sa.Text(), nullable=True))
    op.add_column("lsp_servers", sa.Column("latency_ms", sa.Integer(), nullable=True))
    op.add_column(
        "lsp_servers",
        sa.Column("capabilities", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'::jsonb"), nullable=False),
    )
    op.add_column(
        "lsp_servers",
        sa.Column("server_info", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
    )
    op.add_column(
        "lsp_servers", sa.Column("last_checked_at", sa.DateTime(timezone=True), nullable=True)
    )
    op.create_check_constraint(
        op.f("ck_lsp_servers_health_status"), "lsp_servers",
        "health_status IN ('unknown', 'healthy', 'unhealthy')",
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


def downgrade() -> None:
    # Their runs stay (tool_id becomes NULL, tool_name kept); edges and persona links go.
    tools = sa.table("tools", sa.column("id", sa.UUID()))
    op.execute(tools.delete().where(tools.c.id.in_([uuid.UUID(b[0]) for b in BUILTINS])))
    op.drop_constraint(op.f("ck_lsp_servers_health_status"), "lsp_servers", type_="check")
    for column in ("last_checked_at", "server_info", "capabilities", "latency_ms",
                   "health_error", "health_status"):
        op.drop_column("lsp_servers", column)
