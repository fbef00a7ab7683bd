"""Task queue API shapes."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field

from roost.inputs import StrictInput, no_nul
from roost.tasks.models import TaskPriority, TaskStatus


class TaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    task_type: str
    queue: str
    status: TaskStatus
    priority: TaskPriority
    payload: dict[str, Any]
    result: dict[str, Any] | None
    error_message: str | None
    worker_id: str | None
    retry_count: int
    max_retries: int
    attempts: int
    idempotency_key: str | None
    scheduled_at: datetime
    started_at: datetime | None
    completed_at: datetime | None
    heartbeat_at: datetime | None
    lease_expires_at: datetime | None
    created_at: datetime


class TaskDetailOut(TaskOut):
    retry_history: list[dict[str, Any]]


class EnqueueIn(StrictInput):
    model_config = ConfigDict(extra="forbid")

    # A payload's NUL is kept (escaped, roost.tasks.payloads); in these texts it is a 422.
    task_type: Annotated[str, BeforeValidator(no_nul)] = Field(min_length=1, max_length=100)
    payload: dict[str, Any] = Field(default_factory=dict)
    priority: TaskPriority | None = None
    queue: str | None = Field(default=None, min_length=1, max_length=64)
    scheduled_at: datetime | None = Field(default=None, description="ISO 8601 with a zone")
    max_retries: int | None = Field(default=None, ge=0, le=100)
    idempotency_key: Annotated[str, BeforeValidator(no_nul)] | None = Field(
        default=None, min_length=1, max_length=255)


class DeadLetterOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    original_task_id: uuid.UUID | None
    task_type: str
    queue: str
    priority: TaskPriority
    payload: dict[str, Any]
    error_message: str
    moved_at: datetime
    retried_at: datetime | None
    retried_task_id: uuid.UUID | None


class DeadLetterDetailOut(DeadLetterOut):
    error_stack: str | None
    retry_history: list[dict[str, Any]]


class ThroughputOut(BaseModel):
    minutes: int
    completed: int
    dead_lettered: int
    per_second: float


class StatsOut(BaseModel):
    by_status: dict[str, int]
    by_priority: dict[str, int]
    by_status_and_priority: dict[str, dict[str, int]]
    throughput: list[ThroughputOut]
    oldest_ready_age_s: float | None = Field(
        description="How long the longest-waiting runnable job has waited; null when none"
    )
    oldest_ready_task_id: uuid.UUID | None
    running_by_worker: dict[str, int]
    dead_letters_waiting: int


class ScheduleOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    name: str
    task_type: str
    queue: str
    priority: TaskPriority
    interval_seconds: int | None
    cron: str | None
    enabled: bool
    next_run_at: datetime
    last_run_at: datetime | None
    last_task_id: uuid.UUID | None
