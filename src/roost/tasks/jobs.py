"""The queue's own periodic jobs: audit retention and pruning finished jobs."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from sqlalchemy import text

from roost.audit.service import apply_retention
from roost.config import get_settings
from roost.tasks.config import WorkerSettings
from roost.tasks.handlers import TaskContext
from roost.tasks.schedules import periodic

PRUNE_BATCH = 5000


@periodic("audit.retention", every=timedelta(hours=1), queue="maintenance",
          priority="background", max_retries=2)
async def audit_retention(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Apply ``ROOST_AUDIT_RETENTION_DAYS``; does nothing when it is unset."""
    days = get_settings().audit_retention_days
    if days is None:
        return {"skipped": "ROOST_AUDIT_RETENTION_DAYS is unset"}
    async with ctx.database.transaction() as session:
        deleted = await apply_retention(session, timedelta(days=days))
    return {"deleted": deleted, "retention_days": days}


@periodic("tasks.prune", every=timedelta(hours=1), queue="maintenance",
          priority="background", max_retries=2)
async def prune_finished(ctx: TaskContext, payload: dict[str, Any]) -> dict[str, Any]:
    """Delete completed and cancelled jobs older than ``ROOST_WORKER_COMPLETED_RETENTION_DAYS``
    in batches (dead-lettered jobs stay: their dead letters point at them)."""
    days = WorkerSettings().completed_retention_days
    if days is None:
        return {"skipped": "ROOST_WORKER_COMPLETED_RETENTION_DAYS is unset"}
    total = 0
    while True:
        async with ctx.database.transaction() as session:
            deleted = (
                await session.execute(
                    text(
                        "DELETE FROM background_tasks WHERE id IN ("
                        " SELECT id FROM background_tasks"
                        " WHERE status IN ('completed', 'cancelled')"
                        " AND completed_at < now() - make_interval(days => :days)"
                        " LIMIT :batch FOR UPDATE SKIP LOCKED)"
                    ),
                    {"days": days, "batch": PRUNE_BATCH},
                )
            ).rowcount  # type: ignore[attr-defined]
        total += int(deleted)
        if deleted < PRUNE_BATCH:
            return {"deleted": total, "retention_days": days}
