"""Tool analytics (issue 12): covering indexes for per-tool statistics of ``tool_runs``.

``roost.tools.analytics`` aggregates the runs started in a window, per tool: a user's
through ``(user_id, started_at)``, one tool's through ``(tool_id, started_at)``, each
carrying the columns the aggregate reads (INCLUDE) so it is an index-only scan.  They
replace ``ix_tool_runs_user_started`` and ``ix_tool_runs_tool_id``, whose leading
columns they keep (the user's runs; the foreign key's ``ON DELETE SET NULL`` lookup).
Measured on a million runs: bench/tools/analytics.py, docs/benchmarks.md.

Revision ID: 0530
Revises: 0520
Create Date: 2026-12-09
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0530"
down_revision: str | Sequence[str] | None = "0520"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_index(
        "ix_tool_runs_user_stats", "tool_runs", ["user_id", "started_at"],
        postgresql_include=["tool_id", "tool_name", "status", "duration_ms"],
    )
    op.create_index(
        "ix_tool_runs_tool_stats", "tool_runs", ["tool_id", "started_at"],
        postgresql_include=["user_id", "status", "duration_ms"],
    )
    op.drop_index("ix_tool_runs_user_started", table_name="tool_runs")
    op.drop_index("ix_tool_runs_tool_id", table_name="tool_runs")


def downgrade() -> None:
    op.create_index("ix_tool_runs_tool_id", "tool_runs", ["tool_id"])
    op.create_index(
        "ix_tool_runs_user_started", "tool_runs", ["user_id", sa.literal_column("started_at DESC")]
    )
    op.drop_index("ix_tool_runs_tool_stats", table_name="tool_runs")
    op.drop_index("ix_tool_runs_user_stats", table_name="tool_runs")
