"""Task queue: background_tasks, dead_letter_queue, task_schedules (seed 002).

Revision ID: 0100
Revises: 0001
Create Date: 2026-11-25
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op
from sqlalchemy.dialects import postgresql

revision: str = "0100"
down_revision: str | Sequence[str] | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

# The seed's values in the seed's order: PostgreSQL orders enums by declaration, and the
# dequeue query relies on ORDER BY priority putting 'critical' first.
TASK_STATUS = ("pending", "queued", "running", "paused", "completed", "failed", "stuck",
               "cancelled", "dead_letter")
TASK_PRIORITY = ("critical", "high", "normal", "low", "background")

READY_PREDICATE = "status IN ('pending', 'queued', 'failed', 'stuck')"

# Workers LISTEN on roost_tasks.  One NOTIFY per inserting statement and queue (not per
# row), sent at commit, so a job is never announced before it is visible; jobs scheduled
# for later are found by the workers' polling instead.
NOTIFY_FUNCTION = r"""
CREATE FUNCTION roost_tasks_notify() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
  PERFORM pg_notify('roost_tasks', q.queue)
  FROM (SELECT DISTINCT queue FROM new_tasks
        WHERE scheduled_at <= clock_timestamp()
          AND status IN ('pending', 'queued', 'failed', 'stuck')) AS q;
  RETURN NULL;
END $$;
"""
NOTIFY_TRIGGER = r"""
CREATE TRIGGER background_tasks_notify AFTER INSERT ON background_tasks
  REFERENCING NEW TABLE AS new_tasks
  FOR EACH STATEMENT EXECUTE FUNCTION roost_tasks_notify();
"""


def upgrade() -> None:
    status = postgresql.ENUM(*TASK_STATUS, name="task_status", create_type=False)
    priority = postgresql.ENUM(*TASK_PRIORITY, name="task_priority", create_type=False)
    status.create(op.get_bind(), checkfirst=False)
    priority.create(op.get_bind(), checkfirst=False)

    op.create_table(
        "background_tasks",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("task_type", sa.String(length=100), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("status", status, server_default=sa.text("'pending'"), nullable=False),
        sa.Column("priority", priority, server_default=sa.text("'normal'"), nullable=False),
        sa.Column("worker_id", sa.String(length=255), nullable=True),
        sa.Column("retry_count", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("max_retries", sa.Integer(), server_default=sa.text("3"), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=True),
        sa.Column("result", postgresql.JSONB(astext_type=sa.Text()), nullable=True),
        sa.Column("scheduled_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("started_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("completed_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("queue", sa.String(length=64), server_default=sa.text("'default'"),
                  nullable=False),
        sa.Column("idempotency_key", sa.String(length=255), nullable=True),
        sa.Column("attempts", sa.Integer(), server_default=sa.text("0"), nullable=False),
        sa.Column("heartbeat_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("lease_expires_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retry_history", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("retry_count >= 0",
                           name=op.f("ck_background_tasks_retry_count_nonnegative")),
        sa.CheckConstraint("max_retries >= 0",
                           name=op.f("ck_background_tasks_max_retries_nonnegative")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_background_tasks")),
    )
    op.create_index("idx_tasks_status", "background_tasks", ["status"])
    op.create_index("idx_tasks_priority", "background_tasks", ["priority"])
    op.create_index("idx_tasks_scheduled_at", "background_tasks", ["scheduled_at"])
    op.create_index("idx_tasks_worker_id", "background_tasks", ["worker_id"])
    op.create_index("ix_background_tasks_ready", "background_tasks",
                    ["priority", "scheduled_at", "id"],
                    postgresql_where=sa.text(READY_PREDICATE))
    op.create_index("ix_background_tasks_ready_queue", "background_tasks",
                    ["queue", "priority", "scheduled_at", "id"],
                    postgresql_where=sa.text(READY_PREDICATE))
    op.create_index("ix_background_tasks_lease", "background_tasks", ["lease_expires_at"],
                    postgresql_where=sa.text("status = 'running'"))
    op.create_index("uq_background_tasks_idempotency_key", "background_tasks",
                    ["idempotency_key"], unique=True,
                    postgresql_where=sa.text("idempotency_key IS NOT NULL"))
    op.create_index("ix_background_tasks_completed_at", "background_tasks", ["completed_at"])
    op.create_index("ix_background_tasks_task_type", "background_tasks", ["task_type"])
    op.execute(NOTIFY_FUNCTION)
    op.execute(NOTIFY_TRIGGER)

    op.create_table(
        "dead_letter_queue",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("original_task_id", sa.Uuid(), nullable=True),
        sa.Column("task_type", sa.String(length=100), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()), nullable=False),
        sa.Column("error_message", sa.Text(), nullable=False),
        sa.Column("error_stack", sa.Text(), nullable=True),
        sa.Column("retry_history", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'[]'::jsonb"), nullable=False),
        sa.Column("moved_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("queue", sa.String(length=64), server_default=sa.text("'default'"),
                  nullable=False),
        sa.Column("priority", priority, server_default=sa.text("'normal'"), nullable=False),
        sa.Column("retried_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("retried_task_id", sa.Uuid(), nullable=True),
        sa.ForeignKeyConstraint(
            ["original_task_id"], ["background_tasks.id"], ondelete="SET NULL",
            name=op.f("fk_dead_letter_queue_original_task_id_background_tasks"),
        ),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_dead_letter_queue")),
    )
    op.create_index("ix_dead_letter_queue_moved_at", "dead_letter_queue", ["moved_at"])
    op.create_index("ix_dead_letter_queue_original_task_id", "dead_letter_queue",
                    ["original_task_id"])
    op.create_index("ix_dead_letter_queue_task_type", "dead_letter_queue", ["task_type"])

    op.create_table(
        "task_schedules",
        sa.Column("id", sa.Uuid(), nullable=False),
        sa.Column("name", sa.String(length=200), nullable=False),
        sa.Column("task_type", sa.String(length=100), nullable=False),
        sa.Column("queue", sa.String(length=64), server_default=sa.text("'default'"),
                  nullable=False),
        sa.Column("priority", priority, server_default=sa.text("'normal'"), nullable=False),
        sa.Column("payload", postgresql.JSONB(astext_type=sa.Text()),
                  server_default=sa.text("'{}'::jsonb"), nullable=False),
        sa.Column("interval_seconds", sa.Integer(), nullable=True),
        sa.Column("cron", sa.String(length=120), nullable=True),
        sa.Column("enabled", sa.Boolean(), server_default=sa.text("true"), nullable=False),
        sa.Column("next_run_at", sa.DateTime(timezone=True), nullable=False),
        sa.Column("last_run_at", sa.DateTime(timezone=True), nullable=True),
        sa.Column("last_task_id", sa.Uuid(), nullable=True),
        sa.Column("created_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.Column("updated_at", sa.DateTime(timezone=True), server_default=sa.text("now()"),
                  nullable=False),
        sa.CheckConstraint("(interval_seconds IS NULL) <> (cron IS NULL)",
                           name=op.f("ck_task_schedules_interval_xor_cron")),
        sa.CheckConstraint("interval_seconds IS NULL OR interval_seconds > 0",
                           name=op.f("ck_task_schedules_interval_positive")),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_task_schedules")),
        sa.UniqueConstraint("name", name=op.f("uq_task_schedules_name")),
    )


def downgrade() -> None:
    op.drop_table("task_schedules")
    op.drop_table("dead_letter_queue")
    op.drop_table("background_tasks")
    op.execute("DROP FUNCTION roost_tasks_notify()")
    op.execute("DROP TYPE task_priority")
    op.execute("DROP TYPE task_status")
