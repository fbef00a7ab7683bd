"""Shipping the outbox (``clickhouse_analytics``) to ClickHouse, at least once.

One batch: in one transaction, lock the oldest unexported rows (``FOR UPDATE SKIP
LOCKED``: concurrent passes take different rows), ship them to the sink, and mark them
exported in the same transaction.  A crash after the ship and before the commit leaves
the rows unexported: the next pass ships them again, and ClickHouse's
ReplacingMergeTree (queries read ``FINAL``) keeps one row per id.  When shipping fails,
the rows' ``export_attempts`` go up in a separate transaction (the batch's own rolled
nothing forward) and :class:`ExportFailed` is raised, so the task queue retries the job
with backoff.  Writers of events only insert rows: a dead ClickHouse never touches them.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, Final

import structlog
from sqlalchemy import func, select, text, update

from roost.analytics.clickhouse import EventRow, Sink, safe_error, sink_for
from roost.analytics.models import AnalyticsEvent
from roost.config import Settings
from roost.db.base import utcnow
from roost.db.engine import Database

log = structlog.get_logger("roost.analytics.export")

MAX_BATCHES_PER_PASS = 20  # a pass then leaves the rest to the next one
EXPORT_TASK = "analytics.export"  # the queue's task type of a scheduled pass (jobs.py)


class ExportFailed(Exception):
    """Shipping a batch failed; the rows stay unexported and their attempts were counted."""


@dataclass
class ExportState:
    """This process's last outcome (``GET /api/v1/analytics/export``)."""

    last_error: str | None = None
    last_error_at: datetime | None = None
    last_success_at: datetime | None = None


state = ExportState()


@dataclass(frozen=True)
class PassResult:
    shipped: int
    batches: int
    pending: int
    duration_ms: int

    def as_dict(self) -> dict[str, Any]:
        return {"shipped": self.shipped, "batches": self.batches, "pending": self.pending,
                "duration_ms": self.duration_ms}


async def ship_batch(database: Database, sink: Sink, settings: Settings, batch: int) -> int:
    """Ship one batch of the oldest unexported rows; the number shipped (0: none left).
    Raises :class:`ExportFailed` when the sink refuses or cannot be reached."""
    failure: BaseException | None = None
    async with database.transaction() as session:
        rows = (await session.scalars(
            select(AnalyticsEvent).where(AnalyticsEvent.exported.is_(False))
            .order_by(AnalyticsEvent.timestamp, AnalyticsEvent.id).limit(batch)
            .with_for_update(skip_locked=True)
        )).all()
        if not rows:
            return 0
        ids = [r.id for r in rows]
        events = [EventRow(id=r.id, event_type=r.event_type, event_data=r.event_data,
                           user_id=r.user_id, session_id=r.session_id, timestamp=r.timestamp)
                  for r in rows]
        try:
            await sink.insert(events)
        except Exception as exc:  # any sink failure is counted, then raised
            failure = exc
        else:
            await session.execute(
                update(AnalyticsEvent).where(AnalyticsEvent.id.in_(ids))
                .values(exported=True, exported_at=func.now())
            )
    if failure is None:
        return len(ids)
    message = safe_error(failure, settings)
    async with database.transaction() as session:
        await session.execute(
            update(AnalyticsEvent).where(AnalyticsEvent.id.in_(ids), AnalyticsEvent.exported.is_(False))
            .values(export_attempts=AnalyticsEvent.export_attempts + 1)
        )
    state.last_error, state.last_error_at = message, utcnow()
    log.error("analytics.export_failed", sink=sink.kind, location=sink.location,
              rows=len(ids), error=message)
    raise ExportFailed(f"shipping {len(ids)} analytics events to {sink.kind} "
                       f"({sink.location}) failed: {message}") from failure


async def pending_count(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(
            select(func.count()).select_from(AnalyticsEvent)
            .where(AnalyticsEvent.exported.is_(False))) or 0)


async def export_pass(database: Database, settings: Settings, sink: Sink | None = None, *,
                      max_batches: int = MAX_BATCHES_PER_PASS) -> PassResult:
    """Ship batches until none is left (or ``max_batches``); raises :class:`ExportFailed`
    on the first failing batch (what was shipped before it stays shipped)."""
    sink = sink or sink_for(settings)
    started = time.perf_counter()
    batch = settings.analytics_export_batch
    shipped = batches = 0
    while batches < max_batches:
        n = await ship_batch(database, sink, settings, batch)
        if n == 0:
            break
        shipped += n
        batches += 1
        if n < batch:
            break
    state.last_success_at = utcnow()
    state.last_error = state.last_error_at = None
    result = PassResult(shipped=shipped, batches=batches, pending=await pending_count(database),
                        duration_ms=round((time.perf_counter() - started) * 1000))
    if shipped:
        log.info("analytics.exported", sink=sink.kind, **result.as_dict())
    return result


_PRUNE: Final = {
    "events": text("DELETE FROM clickhouse_analytics WHERE id IN (SELECT id FROM "
                   "clickhouse_analytics WHERE timestamp < :before LIMIT :batch)"),
    "stream_metrics": text("DELETE FROM streaming_analytics WHERE id IN (SELECT id FROM "
                           "streaming_analytics WHERE timestamp < :before LIMIT :batch)"),
}


async def prune_old(database: Database, retention_days: int, batch: int = 10_000
                    ) -> dict[str, int]:
    """Delete outbox events (shipped or not: an install without ClickHouse would keep
    them forever) and streaming metrics older than ``retention_days``, in batches of
    short transactions; how many of each."""
    before = utcnow() - timedelta(days=retention_days)
    deleted = {}
    for name, stmt in _PRUNE.items():
        total = 0
        while True:
            async with database.transaction() as session:
                gone = (await session.execute(stmt, {"before": before, "batch": batch}))
            count = int(getattr(gone, "rowcount", 0) or 0)
            total += count
            if count < batch:
                break
        deleted[name] = total
    return deleted
