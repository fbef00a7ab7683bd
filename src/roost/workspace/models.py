"""The workspace domain's tables: AI Workflow Engine's ``projects`` and ``tasks`` (seed 001,
every column: docs/seed-map.toml), with group sharing, dates and parent/child tasks.

``tasks.calculated_score`` is computed by PostgreSQL (``roost_task_score``, a BEFORE INSERT
OR UPDATE trigger, migration 0880): every write path (API, CLI, agent tools, plain SQL)
gets the same score, and the ORM reads it back after a flush.  docs/workspace.md gives
the formula.  Row-level security: a project is its owner's and its group's (members read,
the owner and group admins change it); a task is its owner's.
"""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any, Final

from sqlalchemy import (
    CheckConstraint,
    Date,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, Timestamps, UUIDPrimaryKey
from roost.identity import models as _identity_models  # noqa: F401 - "users", "groups"

PROJECT_STATUSES: Final = ("active", "paused", "completed", "archived")
TASK_STATUSES: Final = ("todo", "in_progress", "blocked", "done", "cancelled")
TASK_PRIORITIES: Final = ("low", "medium", "high", "critical")
CLOSED_STATUSES: Final = ("done", "cancelled")
MAX_WEIGHT: Final = 10.0


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Project(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "projects"
    __table_args__ = (
        CheckConstraint(_in("status", PROJECT_STATUSES), name="status"),
        CheckConstraint("length(btrim(name)) > 0", name="name_not_blank"),
        CheckConstraint("end_date IS NULL OR start_date IS NULL OR end_date >= start_date",
                        name="dates_ordered"),
        Index("ix_projects_user_id_status", "user_id", "status"),
        Index("ix_projects_group_id", "group_id"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    # Shared with this group's members (they read it; its admins may change it).
    group_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("groups.id",
                                                                  ondelete="SET NULL"))
    name: Mapped[str] = mapped_column(String(255))
    description: Mapped[str | None] = mapped_column(Text)
    project_type: Mapped[str | None] = mapped_column(String(64))
    programming_language: Mapped[str | None] = mapped_column(String(64))
    framework: Mapped[str | None] = mapped_column(String(128))
    repository_url: Mapped[str | None] = mapped_column(String(2048))
    local_path: Mapped[str | None] = mapped_column(String(4096))  # metadata, never opened
    status: Mapped[str] = mapped_column(String(16), server_default=text("'active'"),
                                        default="active")
    start_date: Mapped[date | None] = mapped_column(Date)
    end_date: Mapped[date | None] = mapped_column(Date)
    project_metadata: Mapped[dict[str, Any] | None] = mapped_column(JSONB)


class Task(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "tasks"
    __table_args__ = (
        CheckConstraint(_in("status", TASK_STATUSES), name="status"),
        CheckConstraint(_in("priority", TASK_PRIORITIES), name="priority"),
        CheckConstraint("length(btrim(title)) > 0", name="title_not_blank"),
        CheckConstraint("completion_percentage BETWEEN 0 AND 100", name="completion_range"),
        CheckConstraint(
            f"importance_weight BETWEEN 0 AND {MAX_WEIGHT} AND urgency_weight BETWEEN 0 AND "
            f"{MAX_WEIGHT} AND complexity_weight BETWEEN 0 AND {MAX_WEIGHT} AND "
            f"user_priority_weight BETWEEN 0 AND {MAX_WEIGHT}", name="weights_range"),
        CheckConstraint("estimated_hours IS NULL OR estimated_hours >= 0",
                        name="estimated_hours_positive"),
        CheckConstraint("actual_hours IS NULL OR actual_hours >= 0", name="actual_hours_positive"),
        CheckConstraint("parent_id IS NULL OR parent_id <> id", name="not_own_parent"),
        # The board: a user's tasks by score (keyset on score, id).
        Index("ix_tasks_user_score", "user_id", "calculated_score", "id"),
        Index("ix_tasks_project_id", "project_id"),
        Index("ix_tasks_parent_id", "parent_id"),
        # The hourly refresh of the time-dependent part of open tasks' scores.
        Index("ix_tasks_open_due", "due_date",
              postgresql_where=text("status NOT IN ('done', 'cancelled') "
                                    "AND due_date IS NOT NULL")),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    project_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("projects.id",
                                                                    ondelete="SET NULL"))
    parent_id: Mapped[uuid.UUID | None] = mapped_column(ForeignKey("tasks.id",
                                                                   ondelete="SET NULL"))
    title: Mapped[str] = mapped_column(String(500))
    description: Mapped[str | None] = mapped_column(Text)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'todo'"),
                                        default="todo")
    priority: Mapped[str] = mapped_column(String(16), server_default=text("'medium'"),
                                          default="medium")
    category: Mapped[str | None] = mapped_column(String(100))
    due_date: Mapped[datetime | None]
    estimated_hours: Mapped[float | None] = mapped_column(Float)
    actual_hours: Mapped[float | None] = mapped_column(Float)
    completion_percentage: Mapped[int] = mapped_column(Integer, server_default=text("0"),
                                                       default=0)
    semantic_keywords: Mapped[list[Any] | None] = mapped_column(JSONB)
    semantic_embedding_id: Mapped[str | None] = mapped_column(String(255))
    semantic_category: Mapped[str | None] = mapped_column(String(100))
    semantic_tags: Mapped[Any | None] = mapped_column(JSONB)  # a list or AIWE's object
    semantic_summary: Mapped[str | None] = mapped_column(Text)
    importance_weight: Mapped[float] = mapped_column(Float, server_default=text("1.0"),
                                                     default=1.0)
    urgency_weight: Mapped[float] = mapped_column(Float, server_default=text("1.0"), default=1.0)
    complexity_weight: Mapped[float] = mapped_column(Float, server_default=text("1.0"),
                                                     default=1.0)
    user_priority_weight: Mapped[float] = mapped_column(Float, server_default=text("1.0"),
                                                        default=1.0)
    # Set by the trigger on every insert and update (never by the application).
    calculated_score: Mapped[float] = mapped_column(Float, server_default=text("0"))
    task_type: Mapped[str] = mapped_column(String(50), server_default=text("'general'"),
                                           default="general")
    programming_language: Mapped[str | None] = mapped_column(String(64))
    difficulty_level: Mapped[str | None] = mapped_column(String(32))
    code_context: Mapped[dict[str, Any] | None] = mapped_column(JSONB)
    repository_branch: Mapped[str | None] = mapped_column(String(255))
    completed_at: Mapped[datetime | None]
