"""Periodic jobs that any domain registers, fired once per period by whichever worker
gets there first.

A schedule enqueues a job of its ``task_type`` at the start of each period: every
``every`` (periods aligned on the Unix epoch, so every worker computes the same ones) or
at each time of a 5-field ``cron`` expression (UTC).  Exactly-once firing per period,
whatever the number of workers, comes from two walls:

1. the schedule's row is locked ``FOR UPDATE SKIP LOCKED`` and its ``next_run_at`` moved
   past the period in the same transaction as the enqueue, so one worker fires a period;
2. the job's idempotency key is ``schedule:<name>:<spec>:<period start>`` (``<spec>`` a
   short digest of what the row fires), so even a worker with a stale view cannot add a
   second job for the same period, while a changed schedule (whose timing restarts)
   still fires its current period although the old one fired it already.

Missed periods (no worker running) are not replayed: the first tick afterwards fires the
current period once.  An interval schedule fires its current period as soon as it is
first registered; a cron schedule waits for its next time.
"""

from __future__ import annotations

import hashlib
import json
import re
import unicodedata
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import structlog
from croniter import CroniterBadDateError, croniter  # type: ignore[import-untyped]
from sqlalchemy import select, text, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.db.engine import Database
from roost.errors import RoostError
from roost.inputs import strip_invisible
from roost.tasks.handlers import (
    TaskType,
    get_task_type,
    task,
    valid_queue_name,
    validate_task_type_name,
)
from roost.tasks.models import DEFAULT_QUEUE, MAX_CRON_CHARS, TaskPriority, TaskSchedule
from roost.tasks.payloads import PayloadError, dump_json_object, is_storable_text

log = structlog.get_logger("roost.tasks.schedules")

EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
FIRE_RETRY = timedelta(minutes=1)  # after a schedule failed to fire
H = TypeVar("H", bound=Callable[..., Any])


@dataclass(frozen=True)
class Schedule:
    name: str
    task_type: str
    every: timedelta | None = None
    cron: str | None = None
    payload: dict[str, Any] = field(default_factory=dict)
    queue: str | None = None  # None: the task type's queue
    priority: TaskPriority | None = None  # None: the task type's priority

    @property
    def interval_seconds(self) -> int | None:
        return int(self.every.total_seconds()) if self.every is not None else None

    def period_start(self, now: datetime) -> datetime:
        """The start of the period that contains ``now``."""
        if self.every is not None:
            step = self.every.total_seconds()
            periods = int((now - EPOCH).total_seconds() // step)
            return EPOCH + timedelta(seconds=periods * step)
        assert self.cron is not None
        # croniter's get_prev is strictly before; step a microsecond past to include now.
        it = croniter(self.cron, now + timedelta(microseconds=1))
        return it.get_prev(datetime).astimezone(UTC)  # type: ignore[no-any-return]

    def next_after(self, moment: datetime) -> datetime:
        """The first period start strictly after ``moment``."""
        if self.every is not None:
            return self.period_start(moment) + self.every
        assert self.cron is not None
        return croniter(self.cron, moment).get_next(datetime).astimezone(UTC)  # type: ignore[no-any-return]

    def first_run(self, now: datetime) -> datetime:
        return self.period_start(now) if self.every is not None else self.next_after(now)


_schedules: dict[str, Schedule] = {}
MAX_INTERVAL_S = 2**31 - 1  # task_schedules.interval_seconds is an int4


def _check_cron(name: str, cron: str) -> None:
    """Refuse what is not a 5-field cron expression (or an ``@daily``-like alias), and one
    that never fires (``0 0 30 2 *``): it would fail at every sync and tick."""
    if len(cron) > MAX_CRON_CHARS:  # task_schedules.cron: the sync could never store it
        raise ValueError(f"schedule {name!r}: a cron expression is at most {MAX_CRON_CHARS} "
                         f"characters (this one has {len(cron)}); use ranges and steps")
    # croniter also takes a 6th field (seconds): ``* * * * * *`` would fire every second.
    if not (len(cron.split()) == 5 or cron.strip().startswith("@")) or not croniter.is_valid(
            cron):
        raise ValueError(f"schedule {name!r}: {cron!r} is not a valid 5-field cron expression")
    # croniter's ``R`` (``R``, ``R(0-29)``, ``R/15``) draws a new value at each call: every
    # worker, at every tick, would see other periods and fire one several times.  No month
    # or day name starts with an R; ``H`` is refused by croniter (no hash id is given).
    if any(re.match(r"[rR]", f) for f in cron.split()):
        raise ValueError(f"schedule {name!r}: {cron!r} has a random (R) field; "
                         "give fixed times")
    try:
        croniter(cron, EPOCH).get_next(datetime)
    except CroniterBadDateError:
        raise ValueError(f"schedule {name!r}: {cron!r} never fires") from None


def _check_payload(name: str, task_type: str, payload: dict[str, Any]) -> None:
    """Refuse a payload no worker could store, or that its task type (when registered
    already) refuses at every enqueue (``payload_model``, ``max_payload_bytes``): the
    schedule would fail at every tick and never fire."""
    from roost.tasks.service import payload_json  # the enqueue's own check

    tt = get_task_type(task_type)
    try:
        if tt is not None:
            payload_json(tt, payload)
        else:
            dump_json_object(payload)
    except (PayloadError, RoostError, RecursionError) as exc:
        reason = "nested too deeply" if isinstance(exc, RecursionError) else str(exc)
        raise ValueError(f"schedule {name!r}'s payload cannot be stored or enqueued: "
                         f"{reason}") from None


def register_schedule(
    name: str,
    task_type: str,
    *,
    every: timedelta | None = None,
    cron: str | None = None,
    payload: dict[str, Any] | None = None,
    queue: str | None = None,
    priority: TaskPriority | str | None = None,
) -> Schedule:
    """Fire a ``task_type`` job once per period (give ``every`` or ``cron``, not both).

    Call at import time of a module the worker imports (``roost/<domain>/jobs.py``, or one
    given to ``roost worker --import``).  Workers write the schedule to ``task_schedules``
    when they start; changing ``every``/``cron`` there restarts its timing.
    """
    validate_task_type_name(task_type)
    if (every is None) == (cron is None):
        raise ValueError(f"schedule {name!r}: give exactly one of every= or cron=")
    if every is not None and (every.total_seconds() < 1 or every.total_seconds() % 1):
        raise ValueError(f"schedule {name!r}: every= must be a whole number of seconds >= 1")
    # What a worker could not store (task_schedules.interval_seconds is an int4, queue a
    # varchar(64), payload jsonb) would fail at every sync and never fire: refused here.
    if every is not None and every.total_seconds() > MAX_INTERVAL_S:
        raise ValueError(f"schedule {name!r}: every= may be at most {MAX_INTERVAL_S} seconds")
    if cron is not None:
        _check_cron(name, cron)
    # Composed (NFC): "reports.café" typed decomposed in another module is the same
    # schedule, and DELETE finds it typed either way.
    name = unicodedata.normalize("NFC", name)
    if not name or len(name) > 200 or name != strip_invisible(name) \
            or not is_storable_text(name):
        raise ValueError(f"schedule name {name!r} must be 1-200 characters without "
                         "surrounding spaces or invisible characters (a zero-width space, a "
                         "byte order mark), NUL characters or lone surrogates")
    if queue is not None and not valid_queue_name(queue):
        raise ValueError(f"schedule {name!r}: queue must be 1-64 characters without "
                         "surrounding spaces or NUL characters")
    _check_payload(name, task_type, dict(payload or {}))
    schedule = Schedule(
        name=name, task_type=task_type, every=every, cron=cron, payload=dict(payload or {}),
        queue=queue, priority=TaskPriority(priority) if priority is not None else None,
    )
    existing = _schedules.get(name)
    if existing is not None and existing != schedule:
        raise ValueError(f"schedule {name!r} is already registered differently")
    _schedules[name] = schedule
    return schedule


def periodic(
    name: str,
    *,
    every: timedelta | None = None,
    cron: str | None = None,
    payload: dict[str, Any] | None = None,
    **task_options: Any,
) -> Callable[[H], H]:
    """Register a handler as task type ``name`` and a schedule of the same name for it."""

    def decorate(fn: H) -> H:
        registered = task(name, **task_options)(fn)
        register_schedule(name, name, every=every, cron=cron, payload=payload)
        return registered

    return decorate


def schedules() -> dict[str, Schedule]:
    return dict(_schedules)


def unregister_schedule(name: str) -> None:
    """For tests: forget a schedule."""
    _schedules.pop(name, None)


async def sync_schedules(database: Database, names: Collection[str] | None = None) -> list[str]:
    """Write the registered schedules (or those of ``names``) to ``task_schedules``
    (workers call it at start).  Each is written on its own savepoint: one that fails is
    logged and left out, not every other schedule with it; returns the names of those
    that failed, for the caller to try again later."""
    failed: list[str] = []
    async with database.transaction() as session:
        now: datetime = (await session.execute(text("SELECT now()"))).scalar_one()
        chosen = [s for s in _schedules.values() if names is None or s.name in names]
        for s in sorted(chosen, key=lambda x: x.name):  # one lock order
            tt = get_task_type(s.task_type)
            if tt is None:
                log.warning("schedule_without_handler", schedule=s.name, task_type=s.task_type)
                continue
            try:
                async with session.begin_nested():
                    await _write_schedule(session, s, tt, now)
            except Exception as exc:  # one broken schedule must not stop every other one
                log.error("schedule_sync_failed", schedule=s.name,
                          error=f"{type(exc).__name__}: {exc}")
                failed.append(s.name)
    return failed


def _spec_digest(row: TaskSchedule) -> str:
    """12 hex digits of what a schedule's row fires and when, for its jobs' keys: a
    changed schedule's periods are not its old ones (the old spec may have fired the
    period the new one restarts at).  From the row, so every worker keys alike."""
    spec = [row.task_type, row.queue, str(row.priority), row.payload,
            row.interval_seconds, row.cron]
    raw = json.dumps(spec, sort_keys=True, separators=(",", ":"), ensure_ascii=False)
    return hashlib.sha256(raw.encode("utf-8")).hexdigest()[:12]


async def _write_schedule(session: AsyncSession, s: Schedule, tt: TaskType,
                          now: datetime) -> None:
    """Insert or update one schedule's row (its timing kept unless the period changed)."""
    values = {
        "name": s.name, "task_type": s.task_type,
        "queue": s.queue or tt.queue or DEFAULT_QUEUE,
        "priority": s.priority or tt.priority, "payload": s.payload,
        "interval_seconds": s.interval_seconds, "cron": s.cron,
        "next_run_at": s.first_run(now),
    }
    stmt = pg_insert(TaskSchedule).values(**values)
    excluded = stmt.excluded
    timing_changed = (
        TaskSchedule.interval_seconds.is_distinct_from(excluded.interval_seconds)
        | TaskSchedule.cron.is_distinct_from(excluded.cron)
    )
    stmt = stmt.on_conflict_do_update(
        index_elements=["name"],
        set_={
            "task_type": excluded.task_type, "queue": excluded.queue,
            "priority": excluded.priority, "payload": excluded.payload,
            "interval_seconds": excluded.interval_seconds, "cron": excluded.cron,
            # Keep the timing unless the period itself changed.
            "next_run_at": text(
                "CASE WHEN task_schedules.interval_seconds IS DISTINCT FROM "
                "excluded.interval_seconds OR task_schedules.cron IS DISTINCT FROM "
                "excluded.cron THEN excluded.next_run_at "
                "ELSE task_schedules.next_run_at END"
            ),
            "updated_at": now,
        },
        # Rewrite the row only when something differs: N workers starting at once
        # would otherwise queue on the same row locks for nothing.
        where=(
            timing_changed
            | TaskSchedule.task_type.is_distinct_from(excluded.task_type)
            | TaskSchedule.queue.is_distinct_from(excluded.queue)
            | TaskSchedule.priority.is_distinct_from(excluded.priority)
            | TaskSchedule.payload.is_distinct_from(excluded.payload)
        ),
    )
    await session.execute(stmt)


async def fire_due(database: Database) -> float:
    """Fire every registered schedule whose period has come; returns the seconds until
    the next one is due (for the caller's sleep)."""
    from roost.tasks.service import enqueue_or_existing

    names = [n for n, s in _schedules.items() if get_task_type(s.task_type) is not None]
    if not names:
        return 30.0
    async with database.transaction() as session:
        now: datetime = (await session.execute(text("SELECT now()"))).scalar_one()
        due = (
            await session.scalars(
                select(TaskSchedule)
                .where(TaskSchedule.name.in_(names), TaskSchedule.enabled.is_(True),
                       TaskSchedule.next_run_at <= now)
                .with_for_update(skip_locked=True)
            )
        ).all()
        for row in due:
            # The timing from the row, as the key's digest and the payload: a worker still
            # holding an older spec (a rolling deploy) must key the row's period, or two
            # workers' periods of one schedule fire twice.
            name = row.name
            spec = Schedule(name=row.name, task_type=row.task_type, cron=row.cron,
                            every=(timedelta(seconds=row.interval_seconds)
                                   if row.interval_seconds else None))
            try:  # each on its own savepoint: one that fails must not stop the others
                async with session.begin_nested():
                    period = spec.period_start(now)
                    # At most 9 + 200 + 1 + 12 + 1 + 25 characters: within varchar(255).
                    key = f"schedule:{row.name}:{_spec_digest(row)}:{period.isoformat()}"
                    job, created = await enqueue_or_existing(
                        session, row.task_type, dict(row.payload), priority=row.priority,
                        queue=row.queue, idempotency_key=key,
                    )
                    row.last_run_at = now
                    row.next_run_at = spec.next_after(now)
                    row.updated_at = now
                    if created:
                        row.last_task_id = job.id
                    await session.flush()
            except Exception as exc:
                # The savepoint's rollback expired the row: update it by name.  Retried a
                # minute later, not at every tick.
                log.error("schedule_fire_failed", schedule=name,
                          error=f"{type(exc).__name__}: {exc}")
                await session.execute(
                    update(TaskSchedule).where(TaskSchedule.name == name)
                    .values(next_run_at=now + FIRE_RETRY, updated_at=now)
                    .execution_options(synchronize_session=False))
                continue
            if created:
                log.info("schedule_fired", schedule=row.name, period=period.isoformat(),
                         task_id=str(job.id))
    async with database.transaction() as session:
        upcoming = (
            await session.execute(
                text("SELECT extract(epoch FROM min(next_run_at) - now()) FROM task_schedules "
                     "WHERE enabled AND name = ANY(:names)"),
                {"names": names},
            )
        ).scalar_one_or_none()
    return 30.0 if upcoming is None else float(upcoming)
