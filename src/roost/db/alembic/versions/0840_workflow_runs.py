"""Workflow runs: a run of a workflow is a ``runs`` row (``kind = 'workflow'``) with a
``workflow_runs`` row (the pinned version, the scheduler's state), and its nodes are
``run_steps`` of type ``workflow_node`` (``node_id``, ``iteration``, the owning job's
``task_id``; statuses ``pending`` and ``waiting`` added).

Revision ID: 0840
Revises: 0830
Create Date: 2026-12-01
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0840"
down_revision: str | Sequence[str] | None = "0830"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

OLD_STEP_TYPES = "step_type IN ('llm_call', 'tool_call', 'rag_retrieval', 'memory_recall', 'error')"
NEW_STEP_TYPES = ("step_type IN ('llm_call', 'tool_call', 'rag_retrieval', 'memory_recall', "
                  "'error', 'workflow_node')")
OLD_STEP_STATUSES = "status IN ('running', 'completed', 'failed', 'interrupted', 'cancelled')"
NEW_STEP_STATUSES = ("status IN ('pending', 'waiting', 'running', 'completed', 'failed', "
                     "'interrupted', 'cancelled')")
OWNED = "roost_row_visible(user_id)"


def upgrade() -> None:
    op.add_column("runs", sa.Column("kind", sa.String(length=16),
                                    server_default=sa.text("'agent'"), nullable=False))
    op.create_check_constraint(op.f("ck_runs_kind"), "runs", "kind IN ('agent', 'workflow')")
    op.add_column("run_steps", sa.Column("node_id", sa.String(length=255), nullable=True))
    op.add_column("run_steps", sa.Column("iteration", sa.Integer(), nullable=True))
    op.add_column("run_steps", sa.Column("task_id", sa.UUID(), nullable=True))
    op.create_index("uq_run_steps_run_node_iteration", "run_steps",
                    ["run_id", "node_id", "iteration"], unique=True,
                    postgresql_where=sa.text("node_id IS NOT NULL"))
    op.create_index("ix_run_steps_task_id", "run_steps", ["task_id"], unique=False,
                    postgresql_where=sa.text("task_id IS NOT NULL"))
    op.drop_constraint(op.f("ck_run_steps_step_type"), "run_steps", type_="check")
    op.create_check_constraint(op.f("ck_run_steps_step_type"), "run_steps", NEW_STEP_TYPES)
    op.drop_constraint(op.f("ck_run_steps_status"), "run_steps", type_="check")
    op.create_check_constraint(op.f("ck_run_steps_status"), "run_steps", NEW_STEP_STATUSES)

    op.create_table(
        "workflow_runs",
        sa.Column("run_id", sa.UUID(), nullable=False),
        sa.Column("workflow_id", sa.UUID(), nullable=False),
        sa.Column("version_id", sa.UUID(), nullable=False),
        sa.Column("version", sa.Integer(), nullable=False),
        sa.Column("user_id", sa.UUID(), nullable=False),
        sa.Column("state", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("version >= 1", name=op.f("ck_workflow_runs_version_positive")),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name=op.f("fk_workflow_runs_run_id_runs"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["user_id"], ["users.id"],
                                name=op.f("fk_workflow_runs_user_id_users"), ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["version_id"], ["workflow_versions.id"],
                                name=op.f("fk_workflow_runs_version_id_workflow_versions"),
                                ondelete="CASCADE"),
        sa.ForeignKeyConstraint(["workflow_id"], ["workflows.id"],
                                name=op.f("fk_workflow_runs_workflow_id_workflows"),
                                ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("run_id", name=op.f("pk_workflow_runs")),
    )
    op.create_index("ix_workflow_runs_user_id", "workflow_runs", ["user_id"], unique=False)
    op.create_index("ix_workflow_runs_workflow_created", "workflow_runs",
                    ["workflow_id", sa.literal_column("created_at DESC")], unique=False)
    op.execute("ALTER TABLE workflow_runs ENABLE ROW LEVEL SECURITY")
    op.execute(f"CREATE POLICY workflow_runs_owner ON workflow_runs FOR ALL USING ({OWNED}) "
               f"WITH CHECK ({OWNED})")


def downgrade() -> None:
    op.drop_index("ix_workflow_runs_workflow_created", table_name="workflow_runs")
    op.drop_index("ix_workflow_runs_user_id", table_name="workflow_runs")
    op.drop_table("workflow_runs")
    op.execute("DELETE FROM runs WHERE kind = 'workflow'")
    op.drop_constraint(op.f("ck_run_steps_status"), "run_steps", type_="check")
    op.create_check_constraint(op.f("ck_run_steps_status"), "run_steps", OLD_STEP_STATUSES)
    op.drop_constraint(op.f("ck_run_steps_step_type"), "run_steps", type_="check")
    op.create_check_constraint(op.f("ck_run_steps_step_type"), "run_steps", OLD_STEP_TYPES)
    op.drop_index("ix_run_steps_task_id", table_name="run_steps")
    op.drop_index("uq_run_steps_run_node_iteration", table_name="run_steps")
    op.drop_column("run_steps", "task_id")
    op.drop_column("run_steps", "iteration")
    op.drop_column("run_steps", "node_id")
    op.drop_constraint(op.f("ck_runs_kind"), "runs", type_="check")
    op.drop_column("runs", "kind")
