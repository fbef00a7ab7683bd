"""code versions: tables of the code_versions domain.

``code_versions`` (HelixAgent's table): one row per commit in the git repository of a chat
session or a run (exactly one of them), owned by that session's or run's owner; row-level
security: owner-only (administrators see all).

Revision ID: 0820
Revises: 0810
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0820"
down_revision: str | Sequence[str] | None = "0810"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "code_versions",
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("chat_session_id", sa.UUID(), nullable=True),
        sa.Column("run_id", sa.UUID(), nullable=True),
        sa.Column("author_id", sa.UUID(), nullable=True),
        sa.Column("version_hash", sa.String(length=64), nullable=False),
        sa.Column("parent_hash", sa.String(length=64), nullable=True),
        sa.Column("branch", sa.String(length=255), nullable=False),
        sa.Column("commit_message", sa.Text(), nullable=True),
        sa.Column("files_changed", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("diff_summary", sa.Text(), nullable=True),
        sa.Column("validation_status", sa.String(length=50), server_default=sa.text("'pending'"),
                  nullable=False),
        sa.Column("test_results", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("validation_task_id", sa.UUID(), nullable=True),
        sa.Column("validated_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("id", sa.UUID(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint(
            "validation_status IN ('pending', 'running', 'passed', 'failed', 'error', 'timeout')",
            name=op.f("ck_code_versions_validation_status")),
        sa.CheckConstraint("num_nonnulls(chat_session_id, run_id) = 1",
                           name=op.f("ck_code_versions_one_repository")),
        sa.ForeignKeyConstraint(["author_id"], ["users.id"],
                                name=op.f("fk_code_versions_author_id_users"), ondelete="SET NULL"),
        sa.ForeignKeyConstraint(["chat_session_id"], ["chat_sessions.id"],
                                name=op.f("fk_code_versions_chat_session_id_chat_sessions"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_code_versions_run_id_runs"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_code_versions_user_id_users"), ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_code_versions")),
    )
    op.create_index("ix_code_versions_chat_session_created", "code_versions",
                    ["chat_session_id", sa.literal_column("created_at DESC")], unique=False,
                    postgresql_where=sa.text("chat_session_id IS NOT NULL"))
    op.create_index("ix_code_versions_run_created", "code_versions",
                    ["run_id", sa.literal_column("created_at DESC")], unique=False,
                    postgresql_where=sa.text("run_id IS NOT NULL"))
    op.create_index("ix_code_versions_user_id", "code_versions", ["user_id"], unique=False)
    op.create_index("ix_code_versions_version_hash", "code_versions", ["version_hash"],
                    unique=False)
    op.execute("ALTER TABLE code_versions ENABLE ROW LEVEL SECURITY")
    op.execute("""CREATE POLICY code_versions_tenant ON code_versions
        USING (roost_row_visible(user_id)) WITH CHECK (roost_row_visible(user_id))""")


def downgrade() -> None:
    op.drop_table("code_versions")  # its indexes and policy go with it
