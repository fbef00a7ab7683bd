"""Enqueueing jobs and operating the queue (list, inspect, cancel, pause, dead letters, stats).

``enqueue`` (like ``enqueue_or_existing`` and ``enqueue_many``) joins the caller's
transaction: the job exists only if the caller commits, so "save the document, then
ingest it" cannot leave a job without its document or a document without its job.
Workers are woken by a NOTIFY from an insert trigger, which PostgreSQL delivers at commit.

Enqueueing and completing jobs are not audited (the queue is its own record, and the
audit chain's lock would serialise every enqueue); operator actions and dead-lettering
are, in the same transaction as the change.
"""

from __future__ import annotations

import json
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, Final, TypedDict, TypeVar, Unpack

from pydantic import BaseModel, ValidationError
from sqlalchemy import Table, func, select, text
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.orm import make_transient_to_detached

from roost.audit import service as audit
from roost.db.base import utcnow, uuid7
from roost.errors import Conflict, Forbidden, NotFound, PayloadTooLarge, Unprocessable
from roost.pagination import DEFAULT_LIMIT, cursor_uuid, encode_cursor, page_of
from roost.principal import Principal
from roost.tasks.handlers import (
    MAX_RETRIES_LIMIT,
    TaskType,
    discover,
    get_task_type,
    task_types,
    valid_queue_name,
)
from roost.tasks.models import (
    READY_STATUSES,
    BackgroundTask,
    DeadLetter,
    TaskPriority,
    TaskSchedule,
    TaskStatus,
)
from roost.tasks.payloads import PayloadError, dump_json_object

NOTIFY_CHANNEL = "roost_tasks"
RowT = TypeVar("RowT", BackgroundTask, DeadLetter)
RESOURCE = "background_task"
DLQ_RESOURCE = "dead_letter"


# --- enqueue ----------------------------------------------------------------------------


def _find_type(task_type: str) -> TaskType | None:
    tt = get_task_type(task_type)
    if tt is None:
        # The handler may live in a domain's jobs.py this process has not imported yet.
        discover()
        tt = get_task_type(task_type)
    return tt


def _resolve_type(task_type: str) -> TaskType:
    tt = _find_type(task_type)
    if tt is None:
        known = sorted(task_types())
        shown = ", ".join(known[:20]) + (" ..." if len(known) > 20 else "")
        raise Unprocessable(
            f"unknown task type {task_type!r}: no handler is registered for it"
            + (f" (known: {shown})" if known else ""),
            extra={"task_type": task_type},
        )
    return tt


def payload_json(tt: TaskType, payload: dict[str, Any] | BaseModel | None) -> str:
    """The payload as the JSON text to store, once it passed every check of its task type
    (``payload_model``, jsonb, ``max_payload_bytes``); schedules check theirs with it."""
    if isinstance(payload, BaseModel):
        payload = payload.model_dump(mode="json")
    payload = {} if payload is None else payload
    if tt.payload_model is not None:
        try:
            tt.payload_model.model_validate(payload)
        except ValidationError as exc:
            errors = [
                {"loc": list(e["loc"]), "msg": e["msg"], "type": e["type"]} for e in exc.errors()
            ]
            raise Unprocessable(
                f"payload does not match the schema of task type {tt.name!r}; see errors",
                extra={"errors": errors},
            ) from exc
    try:
        raw = dump_json_object(payload)
    except PayloadError as exc:
        raise Unprocessable(f"payload is not storable JSON: {exc}") from exc
    except RecursionError as exc:
        raise Unprocessable("payload is nested too deeply") from exc
    size = len(raw.encode("utf-8"))
    if size > tt.max_payload_bytes:
        raise PayloadTooLarge(
            f"payload is {size} bytes; task type {tt.name!r} accepts at most "
            f"{tt.max_payload_bytes} bytes (store large data elsewhere and pass its id)"
        )
    return raw


def _priority(value: TaskPriority | str | None, default: TaskPriority) -> TaskPriority:
    if value is None:
        return default
    try:
        return TaskPriority(value)
    except ValueError as exc:
        raise Unprocessable(
            f"priority {value!r} is not one of {', '.join(p.value for p in TaskPriority)}"
        ) from exc


def _scheduled(scheduled_at: datetime | None, delay: timedelta | None) -> datetime | None:
    if scheduled_at is not None and delay is not None:
        raise Unprocessable("give scheduled_at or delay, not both")
    if delay is not None:
        try:
            return utcnow() + delay
        except OverflowError as exc:
            raise Unprocessable("delay is out of range") from exc
    if scheduled_at is None:
        return None
    if scheduled_at.tzinfo is None:
        raise Unprocessable("scheduled_at must carry a time zone (e.g. 2026-01-01T00:00:00Z)")
    try:
        return scheduled_at.astimezone(UTC)
    except OverflowError as exc:
        raise Unprocessable("scheduled_at is out of range") from exc


def _values(
    tt: TaskType, payload: dict[str, Any] | BaseModel | None, *, priority: TaskPriority | str | None,
    scheduled_at: datetime | None, max_retries: int | None, queue: str | None,
) -> dict[str, Any]:
    """The new row's values; ``payload`` is its checked JSON text."""
    if max_retries is not None and not 0 <= max_retries <= MAX_RETRIES_LIMIT:
        raise Unprocessable(f"max_retries must be within 0..{MAX_RETRIES_LIMIT}")
    if queue is not None and not valid_queue_name(queue):
        raise Unprocessable("queue must be 1-64 characters without surrounding spaces or "
                            "NUL characters")
    return {
        "id": uuid7(),
        "task_type": tt.name,
        "payload": payload_json(tt, payload),
        "priority": _priority(priority, tt.priority).value,
        "max_retries": tt.max_retries if max_retries is None else max_retries,
        "queue": queue or tt.queue,
        "scheduled_at": scheduled_at,
    }


_TABLE: Table = BackgroundTask.__table__  # type: ignore[assignment]
_COLUMNS = tuple(_TABLE.c)
# One textual statement rather than an ORM insert: enqueue sits on the request path of
# every domain, and the ORM's insert-with-RETURNING machinery costs more than the round
# trip itself (see docs/benchmarks.md).  The payload is bound as the JSON text already
# checked, so it is serialised once.  ON CONFLICT only ever fires for a used
# idempotency key (a NULL key never conflicts).
_INSERT_ONE = text(  # the only names joined in are the model's own columns
    "INSERT INTO background_tasks (id, task_type, payload, status, priority, max_retries,"  # noqa: S608
    " queue, idempotency_key, scheduled_at)"
    " VALUES (:id, :task_type, CAST(:payload AS jsonb), 'pending', CAST(:priority AS"
    " task_priority), :max_retries, :queue, :idempotency_key,"
    " coalesce(CAST(:scheduled_at AS timestamptz), now()))"
    " ON CONFLICT (idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING"
    " RETURNING " + ", ".join(c.name for c in _COLUMNS)
).columns(*_COLUMNS)


class EnqueueOptions(TypedDict, total=False):
    """How to run a job; ``priority``, ``max_retries`` and ``queue`` default to the task
    type's, and ``scheduled_at`` (or ``delay`` from now) to at once."""

    priority: TaskPriority | str | None
    scheduled_at: datetime | None
    delay: timedelta | None
    max_retries: int | None
    idempotency_key: str | None
    queue: str | None
    job_id: uuid.UUID | None  # the new job's id, when the caller stored it already


async def enqueue(
    session: AsyncSession,
    task_type: str,
    payload: dict[str, Any] | BaseModel | None = None,
    **options: Unpack[EnqueueOptions],
) -> BackgroundTask:
    """Add a job in the caller's transaction; it runs only if that transaction commits.

    With an ``idempotency_key``, a second enqueue with the same key returns the existing
    job (whatever its state) instead of adding one.  Raises ``Unprocessable`` for an
    unknown task type or an invalid payload and ``PayloadTooLarge`` for an oversized one.
    """
    task, _created = await enqueue_or_existing(session, task_type, payload, **options)
    return task


async def enqueue_or_existing(
    session: AsyncSession,
    task_type: str,
    payload: dict[str, Any] | BaseModel | None = None,
    *,
    priority: TaskPriority | str | None = None,
    scheduled_at: datetime | None = None,
    delay: timedelta | None = None,
    max_retries: int | None = None,
    idempotency_key: str | None = None,
    queue: str | None = None,
    job_id: uuid.UUID | None = None,
) -> tuple[BackgroundTask, bool]:
    """``enqueue`` that also says whether the job is new (False: the idempotency key was
    already used, and the job returned is the existing one).  The keywords are
    ``EnqueueOptions``."""
    tt = _resolve_type(task_type)
    if idempotency_key is not None and not 0 < len(idempotency_key) <= 255:
        raise Unprocessable("idempotency_key must be 1-255 characters")
    values = _values(
        tt, payload, priority=priority, scheduled_at=_scheduled(scheduled_at, delay),
        max_retries=max_retries, queue=queue,
    )
    values["idempotency_key"] = idempotency_key
    if job_id is not None:
        values["id"] = job_id
    # A concurrent enqueue with the same key waits for ours to commit, then does nothing.
    row = (await session.execute(_INSERT_ONE, values)).one_or_none()
    if row is not None:
        created = BackgroundTask(**row._asdict())
        # Attach it as a loaded, unchanged row: the session knows it without a query.
        make_transient_to_detached(created)
        session.add(created)
        return created, True
    existing = (
        await session.scalars(
            select(BackgroundTask).where(BackgroundTask.idempotency_key == idempotency_key)
        )
    ).one_or_none()
    if existing is None:  # the key is used by a job this principal may not see (RLS)
        raise Conflict(f"idempotency_key {idempotency_key!r} is already used by another job")
    if existing.task_type != tt.name:
        raise Conflict(
            f"idempotency_key {idempotency_key!r} is already used by a {existing.task_type!r} job",
            extra={"task_id": str(existing.id)},
        )
    return existing, False


# What :func:`job_values` gives, in this order (the queue's defaults fill the rest, and
# ``scheduled_at`` is the database's now(): a job is never delayed by a clock ahead of it).
JOB_KEYS: Final = ("id", "task_type", "payload", "status", "priority", "max_retries", "queue")


def job_values(task_type: str, payload: dict[str, Any] | BaseModel | None = None, *,
               job_id: uuid.UUID | None = None, priority: TaskPriority | str | None = None,
               max_retries: int | None = None, queue: str | None = None) -> dict[str, Any]:
    """A new pending job's columns (:data:`JOB_KEYS`, attribute names of
    :class:`BackgroundTask`), checked as :func:`enqueue` checks them, for a caller that
    writes the job within a statement of its own (``roost.db.statements.bound_insert``:
    one round trip for a row and the job that processes it).  No idempotency key (that
    needs :func:`enqueue_or_existing`'s answer); the insert wakes workers by trigger, as
    :func:`enqueue`'s does."""
    tt = _resolve_type(task_type)
    values = _values(tt, payload, priority=priority, scheduled_at=None,
                     max_retries=max_retries, queue=queue)
    values["payload"] = json.loads(values["payload"])  # the column's type encodes it
    values["status"] = TaskStatus.PENDING.value
    if job_id is not None:
        values["id"] = job_id
    return {key: values[key] for key in JOB_KEYS}


async def enqueue_many(
    session: AsyncSession,
    task_type: str,
    payloads: Sequence[dict[str, Any] | BaseModel],
    *,
    priority: TaskPriority | str | None = None,
    scheduled_at: datetime | None = None,
    max_retries: int | None = None,
    queue: str | None = None,
) -> list[uuid.UUID]:
    """Add many jobs of one type in a few multi-row INSERTs (no idempotency keys), in the
    caller's transaction; returns their ids."""
    tt = _resolve_type(task_type)
    when = _scheduled(scheduled_at, None)
    rows: list[dict[str, Any]] = []
    for payload in payloads:
        row = _values(tt, payload, priority=priority, scheduled_at=when,
                      max_retries=max_retries, queue=queue)
        row["payload"] = json.loads(row["payload"])
        row["status"] = TaskStatus.PENDING.value
        if when is None:
            del row["scheduled_at"]  # the column's default, now()
        rows.append(row)
    if not rows:
        return []
    # Core, not the ORM's bulk path: the rows need no identity map, and the ORM's
    # per-row bookkeeping would triple the cost of a large batch.
    await session.execute(pg_insert(_TABLE), rows)
    return [row["id"] for row in rows]


async def notify(session: AsyncSession, queue: str) -> None:
    """Wake workers (at commit) for a job made ready by an UPDATE; inserts do it by trigger."""
    await session.execute(text("SELECT pg_notify(:channel, :queue)"),
                          {"channel": NOTIFY_CHANNEL, "queue": queue})


# --- operating the queue ----------------------------------------------------------------


def _require_admin(actor: Principal) -> None:
    if not actor.is_admin:
        raise Forbidden("operating the task queue needs an administrator")


@dataclass(frozen=True)
class TaskFilter:
    status: TaskStatus | None = None
    priority: TaskPriority | None = None
    task_type: str | None = None
    queue: str | None = None


def _id_cursor(row: BackgroundTask | DeadLetter) -> str:
    return encode_cursor({"id": str(row.id)})


async def list_tasks(
    session: AsyncSession, actor: Principal, filters: TaskFilter, *,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[BackgroundTask], str | None]:
    """Newest first (ids are time-ordered), keyset-paginated on id."""
    _require_admin(actor)
    stmt = select(BackgroundTask)
    for column, value in (
        (BackgroundTask.status, filters.status),
        (BackgroundTask.priority, filters.priority),
        (BackgroundTask.task_type, filters.task_type),
        (BackgroundTask.queue, filters.queue),
    ):
        if value is not None:
            stmt = stmt.where(column == value)
    if cursor is not None:
        stmt = stmt.where(BackgroundTask.id < cursor_uuid(cursor))
    rows = (await session.scalars(stmt.order_by(BackgroundTask.id.desc()).limit(limit + 1))).all()
    return page_of(rows, limit, _id_cursor)


async def _load(
    session: AsyncSession, model: type[RowT], row_id: uuid.UUID, what: str, *, lock: bool = False
) -> RowT:
    """The row, or NotFound; ``lock`` takes it ``FOR UPDATE`` and reloads it."""
    row = await session.get(model, row_id, with_for_update=lock or None, populate_existing=lock)
    if row is None:
        raise NotFound(f"no {what} with id {row_id}")
    return row


async def get_task(session: AsyncSession, actor: Principal, task_id: uuid.UUID) -> BackgroundTask:
    _require_admin(actor)
    return await _load(session, BackgroundTask, task_id, "task")


async def cancel_task(
    session: AsyncSession, actor: Principal, task_id: uuid.UUID
) -> BackgroundTask:
    """Cancel a waiting, paused or running job.  A running job's worker sees the change at
    its next heartbeat and cancels the handler (at its next ``await``)."""
    _require_admin(actor)
    task = await _load(session, BackgroundTask, task_id, "task", lock=True)
    if task.status in (TaskStatus.COMPLETED, TaskStatus.CANCELLED, TaskStatus.DEAD_LETTER):
        raise Conflict(f"task {task_id} is already {task.status.value}; nothing to cancel")
    before = task.status
    task.status = TaskStatus.CANCELLED
    task.completed_at = utcnow()
    task.lease_expires_at = None
    await session.flush()
    await audit.record(
        session, "task.cancelled", user_id=actor.user_id, resource_type=RESOURCE,
        resource_id=task.id, changes={"status": [before.value, task.status.value]},
        metadata={"task_type": task.task_type, "was_running": before == TaskStatus.RUNNING},
    )
    return task


async def pause_task(session: AsyncSession, actor: Principal, task_id: uuid.UUID) -> BackgroundTask:
    """Hold a waiting job: no worker takes it until it is resumed."""
    _require_admin(actor)
    task = await _load(session, BackgroundTask, task_id, "task", lock=True)
    if task.status not in READY_STATUSES:
        raise Conflict(
            f"task {task_id} is {task.status.value}; only a waiting job "
            "(pending, queued, failed, stuck) can be paused"
        )
    before = task.status
    task.status = TaskStatus.PAUSED
    await session.flush()
    await audit.record(
        session, "task.paused", user_id=actor.user_id, resource_type=RESOURCE,
        resource_id=task.id, changes={"status": [before.value, task.status.value]},
    )
    return task


async def resume_task(
    session: AsyncSession, actor: Principal, task_id: uuid.UUID
) -> BackgroundTask:
    """Put a paused job back in the queue (it keeps its scheduled_at and retries)."""
    _require_admin(actor)
    task = await _load(session, BackgroundTask, task_id, "task", lock=True)
    if task.status != TaskStatus.PAUSED:
        raise Conflict(f"task {task_id} is {task.status.value}, not paused")
    task.status = TaskStatus.QUEUED
    await session.flush()
    await notify(session, task.queue)
    await audit.record(
        session, "task.resumed", user_id=actor.user_id, resource_type=RESOURCE,
        resource_id=task.id, changes={"status": ["paused", task.status.value]},
    )
    return task


# --- dead letters -----------------------------------------------------------------------


async def move_to_dead_letter(
    session: AsyncSession,
    task_id: uuid.UUID,
    *,
    attempts: int,
    worker_id: str | None,
    retry_count: int,
    error_message: str,
    error_stack: str | None,
    history_entry: dict[str, Any],
) -> DeadLetter | None:
    """Mark a running job ``dead_letter`` and copy it, with its full history, into the
    dead letters.  Fenced on (attempts, worker): returns None when this claim no longer
    owns the job (cancelled, or reaped after its lease expired)."""
    row = (
        await session.execute(
            text(
                """
                UPDATE background_tasks
                SET status = 'dead_letter', retry_count = :retry_count,
                    error_message = :error_message, completed_at = now(),
                    lease_expires_at = NULL,
                    retry_history = retry_history || jsonb_build_array(CAST(:entry AS jsonb))
                WHERE id = :id AND attempts = :attempts AND status = 'running'
                  AND worker_id IS NOT DISTINCT FROM :worker_id
                RETURNING task_type, payload, retry_history, queue, priority
                """
            ),
            {
                "id": task_id, "attempts": attempts, "worker_id": worker_id,
                "retry_count": retry_count, "error_message": error_message,
                "entry": json.dumps(history_entry, default=str),
            },
        )
    ).one_or_none()
    if row is None:
        return None
    letter = DeadLetter(
        original_task_id=task_id, task_type=row.task_type, payload=row.payload,
        error_message=error_message, error_stack=error_stack, retry_history=row.retry_history,
        queue=row.queue, priority=TaskPriority(row.priority),
    )
    session.add(letter)
    await session.flush()
    await audit.record(
        session, "task.dead_lettered", category="error", resource_type=RESOURCE,
        resource_id=task_id, success=False, error_message=error_message[:2000],
        metadata={"task_type": row.task_type, "dead_letter_id": str(letter.id),
                  "attempts": len(row.retry_history)},
    )
    return letter


@dataclass(frozen=True)
class DeadLetterFilter:
    task_type: str | None = None
    retried: bool | None = None


async def list_dead_letters(
    session: AsyncSession, actor: Principal, filters: DeadLetterFilter, *,
    limit: int = DEFAULT_LIMIT, cursor: str | None = None,
) -> tuple[list[DeadLetter], str | None]:
    _require_admin(actor)
    stmt = select(DeadLetter)
    if filters.task_type is not None:
        stmt = stmt.where(DeadLetter.task_type == filters.task_type)
    if filters.retried is not None:
        stmt = stmt.where(
            DeadLetter.retried_at.is_not(None) if filters.retried else DeadLetter.retried_at.is_(None)
        )
    if cursor is not None:
        stmt = stmt.where(DeadLetter.id < cursor_uuid(cursor))
    rows = (await session.scalars(stmt.order_by(DeadLetter.id.desc()).limit(limit + 1))).all()
    return page_of(rows, limit, _id_cursor)


async def get_dead_letter(
    session: AsyncSession, actor: Principal, letter_id: uuid.UUID
) -> DeadLetter:
    _require_admin(actor)
    return await _load(session, DeadLetter, letter_id, "dead letter")


async def retry_dead_letter(
    session: AsyncSession, actor: Principal, letter_id: uuid.UUID
) -> BackgroundTask:
    """Run a dead letter again with a fresh set of retries.

    The original job is put back in the queue (its history is kept, with a marker); if it
    was pruned meanwhile, a new job is made from the dead letter's payload.
    """
    _require_admin(actor)
    letter = await _load(session, DeadLetter, letter_id, "dead letter", lock=True)
    if letter.retried_at is not None:
        raise Conflict(
            f"dead letter {letter_id} was already retried as task {letter.retried_task_id}",
            extra={"task_id": str(letter.retried_task_id)},
        )
    task = None
    if letter.original_task_id is not None:
        task = await _load(session, BackgroundTask, letter.original_task_id, "task", lock=True)
        if task.status != TaskStatus.DEAD_LETTER:
            raise Conflict(f"task {task.id} is {task.status.value}, not dead_letter")
        now = utcnow()
        task.status = TaskStatus.QUEUED
        task.retry_count = 0
        task.error_message = None
        task.completed_at = None
        task.scheduled_at = now
        task.retry_history = [
            *task.retry_history,
            {"event": "retried_from_dead_letter", "at": now.isoformat(),
             "dead_letter_id": str(letter.id)},
        ]
    else:
        # The dead letter does not keep max_retries: the task type's, as at enqueue (the
        # column default for a type no longer registered).
        tt = _find_type(letter.task_type)
        task = BackgroundTask(
            id=uuid7(), task_type=letter.task_type, payload=letter.payload,
            priority=letter.priority, queue=letter.queue, status=TaskStatus.QUEUED,
            **({"max_retries": tt.max_retries} if tt is not None else {}),
        )
        session.add(task)
    await session.flush()
    letter.retried_at = utcnow()
    letter.retried_task_id = task.id
    await session.flush()
    await notify(session, task.queue)
    await audit.record(
        session, "task.dead_letter_retried", user_id=actor.user_id, resource_type=DLQ_RESOURCE,
        resource_id=letter.id, metadata={"task_id": str(task.id), "task_type": task.task_type},
    )
    return task


# --- stats ------------------------------------------------------------------------------

THROUGHPUT_WINDOWS_MIN = (1, 5, 15)


@dataclass(frozen=True)
class Throughput:
    minutes: int
    completed: int
    dead_lettered: int

    @property
    def per_second(self) -> float:
        return self.completed / (self.minutes * 60)


@dataclass(frozen=True)
class QueueStats:
    by_status: dict[str, int]
    by_priority: dict[str, int]
    by_status_and_priority: dict[str, dict[str, int]]
    throughput: list[Throughput]
    oldest_ready_age_s: float | None
    oldest_ready_task_id: uuid.UUID | None
    running_by_worker: dict[str, int] = field(default_factory=dict)
    dead_letters_waiting: int = 0


async def stats(session: AsyncSession, actor: Principal) -> QueueStats:
    """Counts by status and priority, completions per window, the oldest waiting job."""
    _require_admin(actor)
    by_status = {s.value: 0 for s in TaskStatus}
    by_priority = {p.value: 0 for p in TaskPriority}
    matrix: dict[str, dict[str, int]] = {s.value: {} for s in TaskStatus}
    counts = await session.execute(
        select(BackgroundTask.status, BackgroundTask.priority, func.count())
        .group_by(BackgroundTask.status, BackgroundTask.priority)
    )
    for status, priority, n in counts.all():
        by_status[status.value] += n
        by_priority[priority.value] += n
        matrix[status.value][priority.value] = n

    windows = {f"m{i}": m for i, m in enumerate(THROUGHPUT_WINDOWS_MIN)}
    widest = {"widest": max(THROUGHPUT_WINDOWS_MIN)}
    completed = (
        await session.execute(
            text(
                "SELECT"
                " count(*) FILTER (WHERE completed_at > now() - make_interval(mins => :m0)),"
                " count(*) FILTER (WHERE completed_at > now() - make_interval(mins => :m1)),"
                " count(*) FILTER (WHERE completed_at > now() - make_interval(mins => :m2))"
                " FROM background_tasks WHERE status = 'completed'"
                " AND completed_at > now() - make_interval(mins => :widest)"
            ),
            windows | widest,
        )
    ).one()
    dead = (
        await session.execute(
            text(
                "SELECT"
                " count(*) FILTER (WHERE moved_at > now() - make_interval(mins => :m0)),"
                " count(*) FILTER (WHERE moved_at > now() - make_interval(mins => :m1)),"
                " count(*) FILTER (WHERE moved_at > now() - make_interval(mins => :m2))"
                " FROM dead_letter_queue WHERE moved_at > now() - make_interval(mins => :widest)"
            ),
            windows | widest,
        )
    ).one()
    throughput = [
        Throughput(minutes=m, completed=int(completed[i]), dead_lettered=int(dead[i]))
        for i, m in enumerate(THROUGHPUT_WINDOWS_MIN)
    ]
    # The longest-waiting job that could run now, whatever its priority.
    oldest = (
        await session.execute(
            text(
                "SELECT id, extract(epoch FROM now() - scheduled_at) FROM background_tasks "
                "WHERE status IN ('pending', 'queued', 'failed', 'stuck') "
                "AND scheduled_at <= now() ORDER BY scheduled_at LIMIT 1"
            )
        )
    ).one_or_none()
    running = await session.execute(
        select(BackgroundTask.worker_id, func.count())
        .where(BackgroundTask.status == TaskStatus.RUNNING)
        .group_by(BackgroundTask.worker_id)
    )
    waiting_letters = (
        await session.execute(
            select(func.count()).select_from(DeadLetter).where(DeadLetter.retried_at.is_(None))
        )
    ).scalar_one()
    return QueueStats(
        by_status=by_status,
        by_priority=by_priority,
        by_status_and_priority={k: v for k, v in matrix.items() if v},
        throughput=throughput,
        oldest_ready_age_s=float(oldest[1]) if oldest is not None else None,
        oldest_ready_task_id=oldest[0] if oldest is not None else None,
        running_by_worker={str(w): int(n) for w, n in running.all()},
        dead_letters_waiting=int(waiting_letters),
    )


async def list_schedules(session: AsyncSession, actor: Principal) -> list[TaskSchedule]:
    _require_admin(actor)
    return list((await session.scalars(select(TaskSchedule).order_by(TaskSchedule.name))).all())


async def delete_schedule(session: AsyncSession, actor: Principal, name: str) -> None:
    """Forget a schedule's row: one removed from the code stays listed (workers write the
    schedules they register, and never remove another's: workers importing different
    modules share the table) with a ``next_run_at`` no worker fires.  A schedule some
    worker still registers is written again when that worker next starts."""
    _require_admin(actor)
    name = unicodedata.normalize("NFC", name)  # as registered (schedules.register_schedule)
    row = await session.scalar(select(TaskSchedule).where(TaskSchedule.name == name)
                               .with_for_update())
    if row is None:
        raise NotFound(f"no schedule named {name[:200]!r}")
    await session.delete(row)
    await session.flush()
    await audit.record(session, "task.schedule.deleted", user_id=actor.user_id,
                       resource_type="task_schedule", resource_id=row.id,
                       metadata={"name": name, "task_type": row.task_type})


async def enqueue_audited(
    session: AsyncSession, actor: Principal, task_type: str, payload: dict[str, Any],
    **options: Unpack[EnqueueOptions],
) -> tuple[BackgroundTask, bool]:
    """``enqueue_or_existing`` for an administrator (the admin API), audited: a domain's
    own enqueue is not (the queue is its own record)."""
    _require_admin(actor)
    task, created = await enqueue_or_existing(session, task_type, payload, **options)
    if created:
        await audit.record(
            session, "task.enqueued", user_id=actor.user_id, resource_type=RESOURCE,
            resource_id=task.id, metadata={"task_type": task.task_type, "queue": task.queue,
                                           "priority": task.priority.value},
        )
    return task, created
