"""Admin task queue API: jobs, dead letters, schedules, stats (and enqueue for operators)."""

from __future__ import annotations

import uuid
from typing import Annotated

from fastapi import Path, Query, Response, status

from roost.http.auth import AdminPrincipal
from roost.http.deps import Cursor, DbSession, Limit
from roost.http.routing import RoostRouter
from roost.pagination import DEFAULT_LIMIT, Page
from roost.tasks import service
from roost.tasks.models import TaskPriority, TaskStatus
from roost.tasks.schemas import (
    DeadLetterDetailOut,
    DeadLetterOut,
    EnqueueIn,
    ScheduleOut,
    StatsOut,
    TaskDetailOut,
    TaskOut,
    ThroughputOut,
)

router = RoostRouter(prefix="/api/v1/tasks", tags=["tasks"])



@router.get("", response_model=Page[TaskOut], summary="List jobs, newest first")
async def list_tasks(
    session: DbSession,
    admin: AdminPrincipal,
    status_: Annotated[TaskStatus | None, Query(alias="status")] = None,
    priority: TaskPriority | None = None,
    task_type: Annotated[str | None, Query(max_length=100)] = None,
    queue: Annotated[str | None, Query(max_length=64)] = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[TaskOut]:
    filters = service.TaskFilter(status=status_, priority=priority, task_type=task_type,
                                 queue=queue)
    rows, next_cursor = await service.list_tasks(session, admin, filters, limit=limit,
                                                 cursor=cursor)
    return Page[TaskOut](items=[TaskOut.model_validate(r) for r in rows], next_cursor=next_cursor)


@router.post("", response_model=TaskDetailOut, status_code=status.HTTP_201_CREATED,
             responses={200: {"model": TaskDetailOut,
                              "description": "The existing job of a used idempotency key"}},
             summary="Enqueue a job (200 with the existing job for a used idempotency key)")
async def enqueue_task(
    body: EnqueueIn, session: DbSession, admin: AdminPrincipal, response: Response
) -> TaskDetailOut:
    task, created = await service.enqueue_audited(
        session, admin, body.task_type, body.payload, priority=body.priority, queue=body.queue,
        scheduled_at=body.scheduled_at, max_retries=body.max_retries,
        idempotency_key=body.idempotency_key,
    )
    if not created:
        response.status_code = status.HTTP_200_OK
    return TaskDetailOut.model_validate(task)


@router.get("/stats", response_model=StatsOut, summary="Counts, throughput, oldest waiting job")
async def task_stats(session: DbSession, admin: AdminPrincipal) -> StatsOut:
    s = await service.stats(session, admin)
    return StatsOut(
        by_status=s.by_status, by_priority=s.by_priority,
        by_status_and_priority=s.by_status_and_priority,
        throughput=[ThroughputOut(minutes=t.minutes, completed=t.completed,
                                  dead_lettered=t.dead_lettered, per_second=t.per_second)
                    for t in s.throughput],
        oldest_ready_age_s=s.oldest_ready_age_s, oldest_ready_task_id=s.oldest_ready_task_id,
        running_by_worker=s.running_by_worker, dead_letters_waiting=s.dead_letters_waiting,
    )


@router.get("/schedules", response_model=list[ScheduleOut], summary="Periodic jobs")
async def list_schedules(session: DbSession, admin: AdminPrincipal) -> list[ScheduleOut]:
    return [ScheduleOut.model_validate(s) for s in await service.list_schedules(session, admin)]


# {name:path}: a schedule's name may hold "/" (reports/nightly), sent as %2F, which the
# server decodes before routing: a plain segment never matched, the row stayed for good.
@router.delete("/schedules/{name:path}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Forget a schedule no worker registers any more (a worker that "
                       "still registers it writes it again when it starts)")
async def delete_schedule(
    # A name's limit (200) counts it composed (NFC), as the service looks it up; typed
    # decomposed, one character takes up to four code points.
    name: Annotated[str, Path(max_length=4 * 200)], session: DbSession,
    admin: AdminPrincipal,
) -> None:
    await service.delete_schedule(session, admin, name)


@router.get("/dead-letters", response_model=Page[DeadLetterOut], summary="List dead letters")
async def list_dead_letters(
    session: DbSession,
    admin: AdminPrincipal,
    task_type: Annotated[str | None, Query(max_length=100)] = None,
    retried: bool | None = None,
    limit: Limit = DEFAULT_LIMIT,
    cursor: Cursor = None,
) -> Page[DeadLetterOut]:
    rows, next_cursor = await service.list_dead_letters(
        session, admin, service.DeadLetterFilter(task_type=task_type, retried=retried),
        limit=limit, cursor=cursor,
    )
    return Page[DeadLetterOut](items=[DeadLetterOut.model_validate(r) for r in rows],
                               next_cursor=next_cursor)


@router.get("/dead-letters/{letter_id}", response_model=DeadLetterDetailOut,
            summary="A dead letter with its error stack and retry history")
async def get_dead_letter(
    letter_id: uuid.UUID, session: DbSession, admin: AdminPrincipal
) -> DeadLetterDetailOut:
    return DeadLetterDetailOut.model_validate(
        await service.get_dead_letter(session, admin, letter_id))


@router.post("/dead-letters/{letter_id}/retry", response_model=TaskDetailOut,
             summary="Run a dead letter again with a fresh set of retries")
async def retry_dead_letter(
    letter_id: uuid.UUID, session: DbSession, admin: AdminPrincipal
) -> TaskDetailOut:
    return TaskDetailOut.model_validate(
        await service.retry_dead_letter(session, admin, letter_id))


@router.get("/{task_id}", response_model=TaskDetailOut, summary="One job with its history")
async def get_task(task_id: uuid.UUID, session: DbSession, admin: AdminPrincipal) -> TaskDetailOut:
    return TaskDetailOut.model_validate(await service.get_task(session, admin, task_id))


@router.post("/{task_id}/cancel", response_model=TaskDetailOut, summary="Cancel a job")
async def cancel_task(
    task_id: uuid.UUID, session: DbSession, admin: AdminPrincipal
) -> TaskDetailOut:
    return TaskDetailOut.model_validate(await service.cancel_task(session, admin, task_id))


@router.post("/{task_id}/pause", response_model=TaskDetailOut, summary="Hold a waiting job")
async def pause_task(
    task_id: uuid.UUID, session: DbSession, admin: AdminPrincipal
) -> TaskDetailOut:
    return TaskDetailOut.model_validate(await service.pause_task(session, admin, task_id))


@router.post("/{task_id}/resume", response_model=TaskDetailOut, summary="Resume a paused job")
async def resume_task(
    task_id: uuid.UUID, session: DbSession, admin: AdminPrincipal
) -> TaskDetailOut:
    return TaskDetailOut.model_validate(await service.resume_task(session, admin, task_id))
