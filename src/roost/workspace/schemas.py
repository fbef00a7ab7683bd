"""Bodies and answers of the projects and tasks API."""

from __future__ import annotations

import re
import uuid
from datetime import date, datetime
from typing import Any, Final, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from roost.inputs import StrictInput, holds_control, json_size, parsed_url
from roost.workspace.models import MAX_WEIGHT

ProjectStatus = Literal["active", "paused", "completed", "archived"]
TaskStatus = Literal["todo", "in_progress", "blocked", "done", "cancelled"]
TaskPriority = Literal["low", "medium", "high", "critical"]

MAX_JSON_BYTES: Final = 64 * 1024
# http(s)://, ssh://, git:// URLs or scp-like git@host:path; nothing a browser would run
# (javascript:, data:) nor a local file:// path.
REPOSITORY_URL = re.compile(r"^(?:(?:https?|ssh|git)://[^\s/@]+(?:@[^\s/]+)?(?:/\S*)?"
                            r"|[A-Za-z0-9._-]+@[A-Za-z0-9.-]+:[^\s]+)$")


def _nul_free(value: Any, field: str) -> None:
    # PostgreSQL stores no NUL character in text or jsonb: refuse it as input (422), not
    # a database error.
    if isinstance(value, str):
        if "\x00" in value:
            raise ValueError(f"{field} contains a NUL character")
    elif isinstance(value, dict):
        for k, v in value.items():
            _nul_free(k, field)
            _nul_free(v, field)
    elif isinstance(value, list):
        for v in value:
            _nul_free(v, field)


def _json_size(value: Any, field: str) -> Any:
    if value is not None and json_size(value) > MAX_JSON_BYTES:
        raise ValueError(f"{field} is larger than {MAX_JSON_BYTES} bytes as JSON")
    return value


class _NoNul(StrictInput):
    @model_validator(mode="after")
    def _no_nul(self) -> _NoNul:
        for name in self.model_fields_set:
            _nul_free(getattr(self, name), name)
        return self


class ProjectFields(_NoNul):
    """Every field optional: PATCH (ProjectCreate requires the name)."""

    name: str | None = Field(default=None, min_length=1, max_length=255)
    description: str | None = Field(default=None, max_length=20_000)
    project_type: str | None = Field(default=None, max_length=64)
    programming_language: str | None = Field(default=None, max_length=64)
    framework: str | None = Field(default=None, max_length=128)
    repository_url: str | None = Field(default=None, max_length=2048, description=(
        "http(s)://, ssh://, git:// or git@host:path"))
    local_path: str | None = Field(default=None, max_length=4096, description=(
        "Where the project lives on the user's machine: stored as metadata, never opened"))
    status: ProjectStatus | None = None
    start_date: date | None = None
    end_date: date | None = None
    project_metadata: dict[str, Any] | None = None
    group_id: uuid.UUID | None = Field(default=None, description=(
        "Share with this group (you must be a member): its members read the project, its "
        "admins may change it"))

    @field_validator("repository_url")
    @classmethod
    def _repository(cls, value: str | None) -> str | None:
        if value is None:
            return None
        if not REPOSITORY_URL.match(value) or holds_control(value):  # git@host:p<ESC>...
            raise ValueError("repository_url must be an http(s)://, ssh:// or git:// URL or "
                             "git@host:path, without control characters")
        return value if "://" not in value else parsed_url(value, ("http", "https", "ssh", "git"))

    @field_validator("project_metadata")
    @classmethod
    def _metadata(cls, value: dict[str, Any] | None) -> dict[str, Any] | None:
        return _json_size(value, "project_metadata")  # type: ignore[no-any-return]


class ProjectCreate(ProjectFields):
    name: str = Field(min_length=1, max_length=255)


class ProjectUpdate(ProjectFields):
    pass


class ProjectOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    group_id: uuid.UUID | None
    name: str
    description: str | None
    project_type: str | None
    programming_language: str | None
    framework: str | None
    repository_url: str | None
    local_path: str | None
    status: str
    start_date: date | None
    end_date: date | None
    project_metadata: dict[str, Any] | None
    created_at: datetime
    updated_at: datetime


class ProjectCounts(BaseModel):
    agents: int
    workflows: int
    documents: int
    chat_sessions: int
    tasks: int
    open_tasks: int


class ProjectDetail(ProjectOut):
    counts: ProjectCounts = Field(description="What the project groups that you can see")


Weight = Field(default=None, ge=0, le=MAX_WEIGHT)


class TaskFields(_NoNul):
    """Every field optional: PATCH (TaskCreate requires the title)."""

    title: str | None = Field(default=None, min_length=1, max_length=500)
    description: str | None = Field(default=None, max_length=100_000)
    project_id: uuid.UUID | None = None
    parent_id: uuid.UUID | None = Field(default=None, description="A task of yours; no cycles")
    status: TaskStatus | None = None
    priority: TaskPriority | None = None
    category: str | None = Field(default=None, max_length=100)
    due_date: datetime | None = Field(default=None, description="With a UTC offset")
    estimated_hours: float | None = Field(default=None, ge=0, le=100_000)
    actual_hours: float | None = Field(default=None, ge=0, le=100_000)
    completion_percentage: int | None = Field(default=None, ge=0, le=100)
    importance_weight: float | None = Weight
    urgency_weight: float | None = Weight
    complexity_weight: float | None = Weight
    user_priority_weight: float | None = Weight
    task_type: str | None = Field(default=None, min_length=1, max_length=50)
    programming_language: str | None = Field(default=None, max_length=64)
    difficulty_level: str | None = Field(default=None, max_length=32)
    code_context: dict[str, Any] | None = None
    repository_branch: str | None = Field(default=None, max_length=255)
    semantic_keywords: list[str] | None = Field(default=None, max_length=200)
    semantic_embedding_id: str | None = Field(default=None, max_length=255)
    semantic_category: str | None = Field(default=None, max_length=100)
    semantic_tags: list[Any] | dict[str, Any] | None = None
    semantic_summary: str | None = Field(default=None, max_length=20_000)

    @field_validator("code_context", "semantic_tags", "semantic_keywords")
    @classmethod
    def _json(cls, value: Any) -> Any:
        return _json_size(value, "the field")


class TaskCreate(TaskFields):
    title: str = Field(min_length=1, max_length=500)


class TaskUpdate(TaskFields):
    pass


class BoardTaskOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    project_id: uuid.UUID | None
    parent_id: uuid.UUID | None
    title: str
    description: str | None
    status: str
    priority: str
    category: str | None
    due_date: datetime | None
    estimated_hours: float | None
    actual_hours: float | None
    completion_percentage: int
    importance_weight: float
    urgency_weight: float
    complexity_weight: float
    user_priority_weight: float
    calculated_score: float = Field(description="docs/workspace.md, \"The score\"")
    task_type: str
    programming_language: str | None
    difficulty_level: str | None
    code_context: dict[str, Any] | None
    repository_branch: str | None
    semantic_keywords: list[Any] | None
    semantic_embedding_id: str | None
    semantic_category: str | None
    semantic_tags: list[Any] | dict[str, Any] | None
    semantic_summary: str | None
    completed_at: datetime | None
    created_at: datetime
    updated_at: datetime
