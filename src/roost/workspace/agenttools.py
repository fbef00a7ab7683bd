"""The agents' task-board tools: ``tasks_list``, ``task_add`` and ``task_update`` (the
``tools`` rows migration 0880 inserts), acting for the run's user through the same
service as the API, so the score, the checks and the audit are the same.

This domain sits below ``tools`` and ``agents``: it offers plain callables of the shape
``roost.tools.calls.HostedBuiltin`` and the agents domain registers them
(``roost.agents.jobs.hosted_builtins``)."""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from typing import Any, Final

from pydantic import BaseModel, ConfigDict, Field

from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.inputs import parse_tool_arguments
from roost.principal import Principal
from roost.workspace import service
from roost.workspace.models import Task
from roost.workspace.schemas import TaskCreate, TaskStatus, TaskUpdate

TASKS_LIST_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000901")
TASK_ADD_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000902")
TASK_UPDATE_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000903")
DESCRIPTION_CHARS: Final = 300  # of each task's description in a listing

Tool = Callable[[Database, Principal, dict[str, Any], uuid.UUID | None],
                Awaitable[dict[str, Any]]]


class _ListArgs(BaseModel):
    model_config = ConfigDict(extra="forbid")
    status: TaskStatus | None = None
    project_id: uuid.UUID | None = None
    limit: int = Field(default=20, ge=1, le=100)


class _UpdateArgs(TaskUpdate):
    id: uuid.UUID


def task_line(task: Task) -> dict[str, Any]:
    return {"id": str(task.id), "title": task.title, "status": task.status,
            "priority": task.priority, "score": task.calculated_score,
            "due_date": task.due_date.isoformat() if task.due_date else None,
            "completion_percentage": task.completion_percentage,
            "project_id": str(task.project_id) if task.project_id else None,
            "description": (task.description or "")[:DESCRIPTION_CHARS] or None}


def builtin_tools(app_role: str) -> dict[uuid.UUID, Tool]:
    """The task tools by ``tools`` row id."""

    async def tasks_list(database: Database, actor: Principal, arguments: dict[str, Any],
                         run_id: uuid.UUID | None) -> dict[str, Any]:
        args = parse_tool_arguments(_ListArgs, "tasks_list", arguments)
        async with database.transaction() as session:
            await apply_principal(session, actor, app_role=app_role)
            rows, more = await service.list_tasks(session, actor, status=args.status,
                                                  project_id=args.project_id,
                                                  limit=args.limit)
        return {"tasks": [task_line(t) for t in rows], "more": more is not None}

    async def task_add(database: Database, actor: Principal, arguments: dict[str, Any],
                       run_id: uuid.UUID | None) -> dict[str, Any]:
        body = parse_tool_arguments(TaskCreate, "task_add", arguments)
        async with database.transaction() as session:
            await apply_principal(session, actor, app_role=app_role)
            task = await service.create_task(session, actor, body)
            return {"task": task_line(task), "created": True}

    async def task_update(database: Database, actor: Principal, arguments: dict[str, Any],
                          run_id: uuid.UUID | None) -> dict[str, Any]:
        args = parse_tool_arguments(_UpdateArgs, "task_update", arguments)
        body = TaskUpdate.model_validate(args.model_dump(include=args.model_fields_set - {"id"}))
        async with database.transaction() as session:
            await apply_principal(session, actor, app_role=app_role)
            task = await service.update_task(session, actor, args.id, body)
            return {"task": task_line(task), "updated": sorted(body.model_fields_set)}

    return {TASKS_LIST_ID: tasks_list, TASK_ADD_ID: task_add, TASK_UPDATE_ID: task_update}
