"""``background_tasks``, ``dead_letter_queue`` and ``task_schedules``.

Every seed column is kept with its seed type (``docs/seed-map.toml``); the additions
are what a durable queue needs: ``queue`` (named queues a worker subscribes to),
``idempotency_key``, ``attempts`` (claims, the fencing token of a lease),
``heartbeat_at`` and ``lease_expires_at`` (a dead worker's jobs are found by an expired
lease) and ``retry_history`` (every failed attempt, copied whole into the dead letter).

Status meanings (the seed's ``task_status``, in the seed's order)::

    pending      new, waiting for its first attempt (at or after scheduled_at)
    queued       put back for another attempt that is not a failure: released at
                 worker shutdown, resumed from pause, retried from the dead letters
    running      claimed by ``worker_id`` until ``lease_expires_at`` (heartbeats renew it)
    paused       held by an operator; never dequeued until resumed
    completed    done; ``result`` holds the handler's answer
    failed       the last attempt raised; retried at ``scheduled_at`` (backoff)
    stuck        the lease expired (the worker died or hung); retried at once
    cancelled    stopped by an operator
    dead_letter  out of retries; a copy with the full history is in dead_letter_queue

``pending``, ``queued``, ``failed`` and ``stuck`` are "ready": a worker takes them once
``scheduled_at <= now()``, by priority then scheduled_at.
"""

from __future__ import annotations

import enum
import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import (
    Boolean,
    CheckConstraint,
    Enum,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    exists,
    func,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, CreatedAt, Timestamps, UUIDPrimaryKey


class TaskStatus(enum.StrEnum):
    PENDING = "pending"
    QUEUED = "queued"
    RUNNING = "running"
    PAUSED = "paused"
    COMPLETED = "completed"
    FAILED = "failed"
    STUCK = "stuck"
    CANCELLED = "cancelled"
    DEAD_LETTER = "dead_letter"


class TaskPriority(enum.StrEnum):
    CRITICAL = "critical"
    HIGH = "high"
    NORMAL = "normal"
    LOW = "low"
    BACKGROUND = "background"


# PostgreSQL sorts enum values in declaration order, so ORDER BY priority puts critical first.
TASK_STATUS_VALUES = tuple(s.value for s in TaskStatus)
TASK_PRIORITY_VALUES = tuple(p.value for p in TaskPriority)

READY_STATUSES = (TaskStatus.PENDING, TaskStatus.QUEUED, TaskStatus.FAILED, TaskStatus.STUCK)
# A job in one of these runs no more; a ``failed`` one is waiting for its retry.
TERMINAL_STATUSES = (TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.DEAD_LETTER)
TERMINAL_SQL = "('completed', 'cancelled', 'dead_letter')"  # for SQL text: status IN ...
# Text of the partial index predicate; the dequeue query repeats it so the planner uses it.
READY_PREDICATE = "status IN ('pending', 'queued', 'failed', 'stuck')"

task_status_enum = Enum(
    TaskStatus, name="task_status", values_callable=lambda e: [m.value for m in e],
    validate_strings=True,
)
task_priority_enum = Enum(
    TaskPriority, name="task_priority", values_callable=lambda e: [m.value for m in e],
    validate_strings=True,
)

DEFAULT_QUEUE = "default"
MAX_CRON_CHARS = 120  # task_schedules.cron


class BackgroundTask(UUIDPrimaryKey, CreatedAt, Base):
    __tablename__ = "background_tasks"

    task_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    status: Mapped[TaskStatus] = mapped_column(
        task_status_enum, server_default=text("'pending'"), default=TaskStatus.PENDING
    )
    priority: Mapped[TaskPriority] = mapped_column(
        task_priority_enum, server_default=text("'normal'"), default=TaskPriority.NORMAL
    )
    worker_id: Mapped[str | None] = mapped_column(String(255))
    retry_count: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    max_retries: Mapped[int] = mapped_column(Integer, server_default=text("3"), default=3)
    error_message: Mapped[str | None] = mapped_column(Text)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    scheduled_at: Mapped[datetime] = mapped_column(server_default=func.now())
    started_at: Mapped[datetime | None]
    completed_at: Mapped[datetime | None]

    # --- beyond the seed: what a durable queue needs ---------------------------------
    queue: Mapped[str] = mapped_column(String(64), server_default=text("'default'"))
    idempotency_key: Mapped[str | None] = mapped_column(String(255))
    attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    heartbeat_at: Mapped[datetime | None]
    lease_expires_at: Mapped[datetime | None]
    retry_history: Mapped[list[Any]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), default=list
    )
    # The principal that enqueued the job (migration 0410): the owner under row-level
    # security, filled by the database from the transaction's scope; NULL for system work.
    # No foreign key: deleting a user must not rewrite or remove queue rows in flight.
    user_id: Mapped[uuid.UUID | None] = mapped_column(
        server_default=text("roost_current_user_id()")
    )

    __table_args__ = (
        Index("ix_background_tasks_user_id", "user_id"),
        # The seed's indexes, under the seed's names.
        Index("idx_tasks_status", "status"),
        Index("idx_tasks_priority", "priority"),
        Index("idx_tasks_scheduled_at", "scheduled_at"),
        Index("idx_tasks_worker_id", "worker_id"),
        # Dequeue: only ready rows, in the order workers take them; the first serves
        # workers on every queue, the second workers subscribed to named queues.
        Index(
            "ix_background_tasks_ready", "priority", "scheduled_at", "id",
            postgresql_where=text(READY_PREDICATE),
        ),
        Index(
            "ix_background_tasks_ready_queue", "queue", "priority", "scheduled_at", "id",
            postgresql_where=text(READY_PREDICATE),
        ),
        # The reaper looks for running jobs whose lease ran out.
        Index(
            "ix_background_tasks_lease", "lease_expires_at",
            postgresql_where=text("status = 'running'"),
        ),
        Index(
            "uq_background_tasks_idempotency_key", "idempotency_key", unique=True,
            postgresql_where=text("idempotency_key IS NOT NULL"),
        ),
        Index("ix_background_tasks_completed_at", "completed_at"),
        Index("ix_background_tasks_task_type", "task_type"),
        CheckConstraint("retry_count >= 0", name="retry_count_nonnegative"),
        CheckConstraint("max_retries >= 0", name="max_retries_nonnegative"),
    )


def job_ended(task_id: Any) -> Any:
    """SQL condition: the job ``task_id`` names ended (completed, cancelled or
    dead-lettered) or is gone; one waiting for its retry (``failed``) has not.  The sweeps
    that close the work of ended jobs (agent, debate, workflow and ingestion runs) use it."""
    return ~exists().where(BackgroundTask.id == task_id,
                           BackgroundTask.status.not_in(TERMINAL_STATUSES))


class DeadLetter(UUIDPrimaryKey, Base):
    __tablename__ = "dead_letter_queue"

    # No CASCADE: a dead letter outlives its task when completed tasks are pruned.
    original_task_id: Mapped[uuid.UUID | None] = mapped_column(
        ForeignKey("background_tasks.id", ondelete="SET NULL")
    )
    task_type: Mapped[str] = mapped_column(String(100))
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB)
    error_message: Mapped[str] = mapped_column(Text)
    error_stack: Mapped[str | None] = mapped_column(Text)
    retry_history: Mapped[list[Any]] = mapped_column(
        JSONB, server_default=text("'[]'::jsonb"), default=list
    )
    moved_at: Mapped[datetime] = mapped_column(server_default=func.now())

    # --- beyond the seed --------------------------------------------------------------
    queue: Mapped[str] = mapped_column(String(64), server_default=text("'default'"))
    priority: Mapped[TaskPriority] = mapped_column(
        task_priority_enum, server_default=text("'normal'"), default=TaskPriority.NORMAL
    )
    retried_at: Mapped[datetime | None]
    retried_task_id: Mapped[uuid.UUID | None]

    __table_args__ = (
        Index("ix_dead_letter_queue_moved_at", "moved_at"),
        Index("ix_dead_letter_queue_original_task_id", "original_task_id"),
        Index("ix_dead_letter_queue_task_type", "task_type"),
    )


class TaskSchedule(UUIDPrimaryKey, Timestamps, Base):
    """One row per registered periodic job: the row lock decides which worker fires a
    period, and ``next_run_at`` moves past it in the same transaction."""

    __tablename__ = "task_schedules"

    name: Mapped[str] = mapped_column(String(200), unique=True)
    task_type: Mapped[str] = mapped_column(String(100))
    queue: Mapped[str] = mapped_column(String(64), server_default=text("'default'"))
    priority: Mapped[TaskPriority] = mapped_column(
        task_priority_enum, server_default=text("'normal'"), default=TaskPriority.NORMAL
    )
    payload: Mapped[dict[str, Any]] = mapped_column(JSONB, server_default=text("'{}'::jsonb"))
    interval_seconds: Mapped[int | None] = mapped_column(Integer)
    cron: Mapped[str | None] = mapped_column(String(MAX_CRON_CHARS))
    enabled: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    next_run_at: Mapped[datetime]
    last_run_at: Mapped[datetime | None]
    last_task_id: Mapped[uuid.UUID | None]

    __table_args__ = (
        CheckConstraint(
            "(interval_seconds IS NULL) <> (cron IS NULL)", name="interval_xor_cron"
        ),
        CheckConstraint("interval_seconds IS NULL OR interval_seconds > 0",
                        name="interval_positive"),
    )
