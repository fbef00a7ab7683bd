"""tool_dependencies: an edge is unique within its owner's graph, not across users.

``tool_dependencies`` is owned (row-level security shows a user their own edges), and the
runner follows only the run's user's edges, but the unique index was on (tool_id,
depends_on_tool_id) alone: a second user adding the same edge between two shared tools
failed on another user's row.  The index now leads with the owner (NULLs, system edges,
compare equal).

Revision ID: 0970
Revises: 0960
Create Date: 2026-12-03
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0970"
down_revision: str | Sequence[str] | None = "0960"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.drop_index("uq_tool_dependencies_edge", table_name="tool_dependencies")
    op.create_index("uq_tool_dependencies_edge", "tool_dependencies",
                    ["user_id", "tool_id", "depends_on_tool_id"], unique=True,
                    postgresql_nulls_not_distinct=True)


def downgrade() -> None:
    # Fails if two users hold the same edge: keep the oldest of each before going back.
    op.execute("DELETE FROM tool_dependencies d USING tool_dependencies o "
               "WHERE d.tool_id = o.tool_id AND d.depends_on_tool_id = o.depends_on_tool_id "
               "AND (o.created_at, o.id) < (d.created_at, d.id)")
    op.drop_index("uq_tool_dependencies_edge", table_name="tool_dependencies")
    op.create_index("uq_tool_dependencies_edge", "tool_dependencies",
                    ["tool_id", "depends_on_tool_id"], unique=True)
