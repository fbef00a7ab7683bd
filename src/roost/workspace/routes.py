"""HTTP routes: /api/v1/projects and /api/v1/tasks-board (the prioritised tasks;
``/api/v1/tasks`` is the job queue's)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Query, Response, status
from sqlalchemy.ext.asyncio import AsyncSession

from roost.http.auth import CurrentPrincipal
from roost.http.deps import Cursor, DbSession, Limit
from roost.http.reads import ReadSession, replica_fallback
from roost.http.routing import RoostRouter
from roost.inputs import IsoDatetime
from roost.pagination import DEFAULT_LIMIT, Page
from roost.principal import Principal
from roost.workspace import service
from roost.workspace.models import Project
from roost.workspace.schemas import (
    BoardTaskOut,
    ProjectCounts,
    ProjectCreate,
    ProjectDetail,
    ProjectOut,
    ProjectStatus,
    ProjectUpdate,
    TaskCreate,
    TaskPriority,
    TaskStatus,
    TaskUpdate,
)

projects = RoostRouter(prefix="/api/v1/projects", tags=["projects"])
tasks = RoostRouter(prefix="/api/v1/tasks-board", tags=["tasks board"])


async def _detail(db: AsyncSession, principal: Principal, project: Project) -> ProjectDetail:
    counts = await service.project_counts(db, principal, project)
    return ProjectDetail(**ProjectOut.model_validate(project).model_dump(),
                         counts=ProjectCounts(**counts))


@projects.post("", status_code=status.HTTP_201_CREATED, response_model=ProjectOut,
               summary="Create a project (optionally shared with one of your groups)")
async def create_project(body: ProjectCreate, principal: CurrentPrincipal,
                         db: DbSession) -> ProjectOut:
    return ProjectOut.model_validate(await service.create_project(db, principal, body))


@projects.get("", response_model=Page[ProjectOut],
              summary="Your projects and your groups' projects, newest first")
@replica_fallback
async def list_projects(
    principal: CurrentPrincipal, db: ReadSession,
    status_: Annotated[ProjectStatus | None, Query(alias="status")] = None,
    group_id: uuid.UUID | None = None, limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[ProjectOut]:
    rows, next_cursor = await service.list_projects(db, principal, status=status_,
                                                    group_id=group_id, limit=limit,
                                                    cursor=cursor)
    return Page[ProjectOut](items=[ProjectOut.model_validate(r) for r in rows],
                            next_cursor=next_cursor)


@projects.get("/{project_id:uuid}", response_model=ProjectDetail,
              summary="A project, with counts of what it groups that you can see")
async def get_project(project_id: uuid.UUID, principal: CurrentPrincipal,
                      db: DbSession) -> ProjectDetail:
    return await _detail(db, principal, await service.get_project(db, principal, project_id))


@projects.patch("/{project_id:uuid}", response_model=ProjectOut,
                summary="Change a project (its owner or its group's admins)")
async def update_project(project_id: uuid.UUID, body: ProjectUpdate,
                         principal: CurrentPrincipal, db: DbSession) -> ProjectOut:
    return ProjectOut.model_validate(
        await service.update_project(db, principal, project_id, body))


@projects.delete("/{project_id:uuid}", status_code=status.HTTP_204_NO_CONTENT,
                 summary="Delete a project (its owner); what it grouped stays, unattached")
async def delete_project(project_id: uuid.UUID, principal: CurrentPrincipal,
                         db: DbSession) -> Response:
    await service.delete_project(db, principal, project_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@tasks.post("", status_code=status.HTTP_201_CREATED, response_model=BoardTaskOut,
            summary="Add a task; its calculated_score is computed at once")
async def create_task(body: TaskCreate, principal: CurrentPrincipal, db: DbSession) -> BoardTaskOut:
    return BoardTaskOut.model_validate(await service.create_task(db, principal, body))


@tasks.get("", response_model=Page[BoardTaskOut],
           summary="Your tasks, highest calculated_score first (keyset pages on score, id)")
@replica_fallback
async def list_tasks(
    principal: CurrentPrincipal, db: ReadSession,
    project_id: uuid.UUID | None = None,
    status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
    priority: TaskPriority | None = None,
    parent_id: uuid.UUID | None = None,
    due_before: Annotated[IsoDatetime | None, Query(description="Exclusive; UTC without an offset")
                          ] = None,
    due_after: Annotated[IsoDatetime | None, Query(description="Inclusive; UTC without an offset")
                         ] = None,
    min_score: Annotated[float | None, Query(ge=0, le=1e9)] = None,
    limit: Limit = DEFAULT_LIMIT, cursor: Cursor = None,
) -> Page[BoardTaskOut]:
    rows, next_cursor = await service.list_tasks(
        db, principal, project_id=project_id, status=status_, priority=priority,
        parent_id=parent_id, due_before=due_before, due_after=due_after, min_score=min_score,
        limit=limit, cursor=cursor)
    return Page[BoardTaskOut](items=[BoardTaskOut.model_validate(r) for r in rows],
                         next_cursor=next_cursor)


@tasks.get("/{task_id:uuid}", response_model=BoardTaskOut, summary="A task")
async def get_task(task_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession) -> BoardTaskOut:
    return BoardTaskOut.model_validate(await service.get_task(db, principal, task_id))


@tasks.patch("/{task_id:uuid}", response_model=BoardTaskOut,
             summary="Change a task; the score is recomputed from the new values")
async def update_task(task_id: uuid.UUID, body: TaskUpdate, principal: CurrentPrincipal,
                      db: DbSession) -> BoardTaskOut:
    return BoardTaskOut.model_validate(await service.update_task(db, principal, task_id, body))


@tasks.delete("/{task_id:uuid}", status_code=status.HTTP_204_NO_CONTENT,
              summary="Delete a task (its subtasks stay, without a parent)")
async def delete_task(task_id: uuid.UUID, principal: CurrentPrincipal,
                      db: DbSession) -> Response:
    await service.delete_task(db, principal, task_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)
