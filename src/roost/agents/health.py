"""Persona health metrics: a periodic job samples every active persona, an API reads the
time series.

Each sample (``persona_health_metrics``) holds, for one persona: its runs pending or
running at that moment; the LLM calls of its runs and their credits (``usage_records``
joined to ``runs`` through ``run_id``) in the window since the persona's previous
sample (the job's interval for the first one), half-open ``(previous, now]`` so
consecutive samples never count a call twice; and the sampling worker process's CPU
and memory and the data directory's disk usage (psutil: the same for every persona of
one pass).  The same job deletes samples older than the retention.
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass
from datetime import datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any, Final, cast

import psutil
import structlog
from sqlalchemy import CursorResult, delete, func, insert, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents.mail import persona_role
from roost.agents.models import PersonaHealthMetric
from roost.config import get_settings
from roost.db.base import uuid7
from roost.db.engine import Database
from roost.errors import Unprocessable
from roost.principal import Principal
from roost.tasks.handlers import TaskContext
from roost.tasks.schedules import periodic

log = structlog.get_logger(__name__)

HEALTH_TASK: Final = "agents.persona_health"
DEFAULT_SERIES_LIMIT: Final = 100
MAX_SERIES_LIMIT: Final = 1000
_MAX_PERCENT: Final = Decimal("999.99")  # numeric(5, 2); a process on many cores exceeds 100


@dataclass(frozen=True)
class ProcessSample:
    cpu_percent: Decimal | None
    memory_mb: int | None
    memory_percent: Decimal | None
    disk_usage_gb: Decimal | None


_process: psutil.Process | None = None


def _existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def _sample_process(data_dir: Path) -> ProcessSample:
    """This process's CPU (since the previous sample: psutil's counter between calls;
    the first call measures 0.1 s) and memory, and the data directory's disk usage."""
    global _process
    first = _process is None
    if _process is None:
        _process = psutil.Process()
    try:
        cpu = _process.cpu_percent(interval=0.1 if first else None)
        memory = _process.memory_info().rss
        memory_percent = _process.memory_percent()
    except psutil.Error:
        cpu, memory, memory_percent = None, None, None
    try:
        disk: Decimal | None = Decimal(psutil.disk_usage(str(_existing(data_dir))).used) / 2**30
    except OSError:
        disk = None

    def percent(value: float | None) -> Decimal | None:
        return None if value is None else min(Decimal(str(round(value, 2))), _MAX_PERCENT)

    return ProcessSample(
        cpu_percent=percent(cpu), memory_mb=None if memory is None else memory // 2**20,
        memory_percent=percent(memory_percent),
        disk_usage_gb=None if disk is None else round(disk, 2))


# Every active persona with its last sample's time (the index on (persona_id,
# measured_at DESC)), its active runs and its calls in (since, now], in one statement.
_MEASURE = text("""
SELECT p.id AS persona_id, now() AS now, w.since,
       (SELECT count(*) FROM runs r
         WHERE r.persona_id = p.id AND r.status IN ('pending', 'running')) AS active_runs,
       usage.calls, usage.cost
  FROM personas p
  CROSS JOIN LATERAL (
      SELECT coalesce((SELECT m.measured_at FROM persona_health_metrics m
                        WHERE m.persona_id = p.id ORDER BY m.measured_at DESC LIMIT 1),
                      now() - make_interval(secs => :interval_s)) AS since) w
  CROSS JOIN LATERAL (
      -- A run's paid tool calls are ledger rows too: cost, not LLM calls.
      SELECT count(u.id) FILTER (WHERE u.request_type <> 'tool') AS calls,
             least(coalesce(sum(u.credits_used), 0), :max_cost) AS cost
        FROM usage_records u JOIN runs r ON r.id = u.run_id
       WHERE r.persona_id = p.id AND u.created_at > w.since AND u.created_at <= now()) usage
 WHERE p.is_active
 ORDER BY p.id
   FOR KEY SHARE OF p
""")


_ONE_PASS = text("SELECT pg_try_advisory_xact_lock(7263117, hashtext('agents.persona_health'))")
_MAX_COST: Final = Decimal("9999999999999999.9999")  # numeric(20, 4), migration 1330


async def sample(database: Database, *, data_dir: Path, interval_s: int,
                 retention_days: int) -> dict[str, Any]:
    """One sample per active persona (as the system), then the retention clean-up."""
    process = await asyncio.to_thread(_sample_process, data_dir)
    async with database.transaction() as session:
        # One pass at a time (two workers, or a pass overrunning its interval): both would
        # read the same previous sample and count its calls twice.  The later one skips.
        if not (await session.execute(_ONE_PASS)).scalar_one():
            return {"sampled": 0, "deleted": 0, "skipped": "another pass is sampling"}
        # The personas are key-share locked until their samples are stored: one being
        # deleted meanwhile is waited for and left out (its sample's foreign key failed the
        # whole pass, every persona's sample with it).
        measured = (await session.execute(_MEASURE, {"interval_s": interval_s,
                                                     "max_cost": _MAX_COST})).all()
        if measured:
            await session.execute(insert(PersonaHealthMetric), [
                {"id": uuid7(), "persona_id": row.persona_id, "measured_at": row.now,
                 "window_s": max(0, round((row.now - row.since).total_seconds())),
                 "active_runs_count": row.active_runs, "llm_calls_count": row.calls,
                 "estimated_cost": Decimal(row.cost), "cpu_percent": process.cpu_percent,
                 "memory_mb": process.memory_mb, "memory_percent": process.memory_percent,
                 "disk_usage_gb": process.disk_usage_gb}
                for row in measured])
    async with database.transaction() as session:
        result = await session.execute(delete(PersonaHealthMetric).where(
            PersonaHealthMetric.measured_at < func.now() - timedelta(days=retention_days)))
    deleted = cast(CursorResult[Any], result).rowcount
    return {"sampled": len(measured), "deleted": deleted}


@periodic(HEALTH_TASK, every=timedelta(seconds=get_settings().persona_health_interval_s),
          queue="maintenance", priority="background", max_retries=0, timeout_s=300)
async def sample_persona_health(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    settings = get_settings()
    outcome = await sample(ctx.database, data_dir=settings.data_dir,
                           interval_s=settings.persona_health_interval_s,
                           retention_days=settings.persona_health_retention_days)
    log.info("agents.persona_health_sampled", **outcome)
    return outcome


async def series(
    session: AsyncSession, actor: Principal, persona_id: uuid.UUID, *,
    since: datetime | None = None, until: datetime | None = None,
    limit: int = DEFAULT_SERIES_LIMIT,
) -> list[PersonaHealthMetric]:
    """The persona's samples oldest first (members only): from ``since`` (inclusive)
    onwards, or the latest ``limit`` ones; ``until`` is exclusive."""
    await persona_role(session, actor, persona_id)
    if since is not None and until is not None and until <= since:
        # An empty window is a mistake, as the usage and analytics reports answer it.
        raise Unprocessable("until must be after since", extra={"field": "until"})
    stmt = select(PersonaHealthMetric).where(PersonaHealthMetric.persona_id == persona_id)
    if since is not None:
        stmt = stmt.where(PersonaHealthMetric.measured_at >= since)
    if until is not None:
        stmt = stmt.where(PersonaHealthMetric.measured_at < until)
    if since is not None:
        return list((await session.scalars(stmt.order_by(
            PersonaHealthMetric.measured_at, PersonaHealthMetric.id).limit(limit))).all())
    latest = list((await session.scalars(stmt.order_by(
        PersonaHealthMetric.measured_at.desc(), PersonaHealthMetric.id.desc())
        .limit(limit))).all())
    return latest[::-1]
