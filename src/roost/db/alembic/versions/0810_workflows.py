"""workflows: ``workflows`` (seed 004: a user's XYFlow graph, its draft) and
``workflow_versions`` (immutable published copies: a trigger refuses UPDATE).

Row-level security: both tables are their owner's (``roost_row_visible(user_id)``; a
version copies its workflow's ``user_id``).

Revision ID: 0810
Revises: 0800
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0810"
down_revision: str | Sequence[str] | None = "0800"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

TABLES = ("workflows", "workflow_versions")
OWNED = "roost_row_visible(user_id)"

IMMUTABLE = """
CREATE FUNCTION roost_workflow_versions_immutable() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
  RAISE EXCEPTION 'workflow versions are immutable: publish a new version instead'
    USING ERRCODE = 'check_violation';
END $$
"""


def upgrade() -> None:
    op.create_table(
        "workflows",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("project_id", sa.UUID(), nullable=True),
        sa.Column("name", sa.String(length=100), nullable=False),
        sa.Column("description", sa.Text(), nullable=True),
        sa.Column("nodes", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("edges", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("viewport", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text('\'{"x": 0, "y": 0, "zoom": 1}\'::jsonb'), nullable=False),
        sa.Column("status", sa.String(length=20), server_default=sa.text("'draft'"), nullable=False),
        sa.Column("latest_version", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("jsonb_typeof(edges) = 'array'", name=op.f("ck_workflows_edges_array")),
        sa.CheckConstraint("jsonb_typeof(nodes) = 'array'", name=op.f("ck_workflows_nodes_array")),
        sa.CheckConstraint("status IN ('draft', 'active', 'archived')",
                           name=op.f("ck_workflows_status")),
        sa.CheckConstraint("latest_version >= 0",
                           name=op.f("ck_workflows_latest_version_not_negative")),
        sa.CheckConstraint("length(btrim(name)) > 0", name=op.f("ck_workflows_name_not_blank")),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"], name=op.f("fk_workflows_user_id_users"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflows")),
    )
    op.create_index("ix_workflows_project_id", "workflows", ["project_id"], unique=False)
    op.create_index("ix_workflows_user_created", "workflows",
                    ["user_id", sa.literal_column("created_at DESC")], unique=False)
    op.create_table(
        "workflow_versions",
        sa.Column("workflow_id", sa.UUID(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("nodes", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("edges", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("viewport", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("content_hash", sa.String(length=64), nullable=False),
        sa.Column("published_by", sa.UUID(), nullable=True),
        sa.Column("note", sa.Text(), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_workflow_versions_version_positive")),
        sa.ForeignKeyConstraint(["published_by"], ["users.id"],
                                name=op.f("fk_workflow_versions_published_by_users"),
                                ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_workflow_versions_user_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"],
                                name=op.f("fk_workflow_versions_workflow_id_workflows"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_workflow_versions")),
    )
    op.create_index("ix_workflow_versions_user_id", "workflow_versions", ["user_id"], unique=False)
    op.create_index("uq_workflow_versions_workflow_version", "workflow_versions",
                    ["workflow_id", "version"], unique=True)

    op.execute(IMMUTABLE)
    op.execute("""CREATE TRIGGER workflow_versions_immutable BEFORE UPDATE ON workflow_versions
        FOR EACH ROW EXECUTE FUNCTION roost_workflow_versions_immutable()""")
    for table in TABLES:
        op.execute(f"ALTER TABLE {table} ENABLE ROW LEVEL SECURITY")
        op.execute(f"CREATE POLICY {table}_owner ON {table} FOR ALL USING ({OWNED}) "
                   f"WITH CHECK ({OWNED})")


def downgrade() -> None:
    op.drop_index("uq_workflow_versions_workflow_version", table_name="workflow_versions")
    op.drop_index("ix_workflow_versions_user_id", table_name="workflow_versions")
    op.drop_table("workflow_versions")
    op.execute("DROP FUNCTION roost_workflow_versions_immutable()")
    op.drop_index("ix_workflows_user_created", table_name="workflows")
    op.drop_index("ix_workflows_project_id", table_name="workflows")
    op.drop_table("workflows")
