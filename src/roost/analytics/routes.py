"""HTTP routes: /api/v1/analytics (streaming metrics, the export's state, queries answered
by ClickHouse).  Administrators only, except ``GET /streaming`` (a user's own streams)."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Annotated, Literal

from fastapi import Depends, Query

from roost.analytics import export, queries
from roost.analytics.clickhouse import sink_for
from roost.analytics.schemas import (
    EventCountOut,
    EventCountsOut,
    ExportRunOut,
    ExportStatusOut,
    StreamingModelOut,
    StreamingOut,
)
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.errors import ServiceUnavailable
from roost.http.auth import AdminPrincipal, CurrentPrincipal
from roost.http.deps import DbSession, SettingsDep, database_dep
from roost.http.reads import ReadSession, replica_fallback
from roost.http.routing import RoostRouter
from roost.inputs import IsoDatetime

router = RoostRouter(prefix="/api/v1/analytics", tags=["analytics"])

Since = Annotated[IsoDatetime | None, Query(description="inclusive, ISO 8601")]
Until = Annotated[IsoDatetime | None, Query(description="exclusive, ISO 8601")]


@router.get("/streaming", response_model=StreamingOut,
            summary="Time to first token (p50/p95) and tokens/s per model of streamed answers")
@replica_fallback
async def streaming(principal: CurrentPrincipal, db: ReadSession, since: Since = None,
                    until: Until = None, user_id: uuid.UUID | None = None) -> StreamingOut:
    rows = await queries.streaming_summary(db, principal, since=since, until=until,
                                           user_id=user_id)
    return StreamingOut(items=[StreamingModelOut(**r) for r in rows])


@router.get("/export", response_model=ExportStatusOut,
            summary="The outbox's export to ClickHouse: pending and exported rows, last error")
async def export_status(_admin: AdminPrincipal, db: DbSession,
                        settings: SettingsDep) -> ExportStatusOut:
    counts = await queries.outbox_counts(db)
    sink = sink_for(settings)
    state = export.state  # this process's passes; the scheduled ones are in the queue
    outcome = await queries.export_outcome(
        db, export.EXPORT_TASK, process_success_at=state.last_success_at,
        process_error=state.last_error, process_error_at=state.last_error_at)
    return ExportStatusOut(
        enabled=settings.analytics_export, interval_s=settings.analytics_export_interval_s,
        sink="chdb" if sink.kind == "chdb" else "clickhouse", location=sink.location,
        pending=counts.pending, exported=counts.exported, oldest_pending=counts.oldest_pending,
        max_attempts=counts.max_attempts, last_error=outcome.last_error,
        last_error_at=outcome.last_error_at, last_success_at=outcome.last_success_at,
    )


@router.post("/export", response_model=ExportRunOut,
             summary="Run one export pass now (503 naming the cause when ClickHouse fails)")
async def run_export(_admin: AdminPrincipal, _db: DbSession, settings: SettingsDep,
                     database: Annotated[Database, Depends(database_dep)]) -> ExportRunOut:
    try:
        result = await export.export_pass(database, settings)
    except export.ExportFailed as exc:
        raise ServiceUnavailable(f"{exc}; the events stay in the outbox and the next pass "
                                 "ships them") from exc
    return ExportRunOut(**result.as_dict())


def _week_before(until: datetime) -> datetime:
    """The default start: 7 days before ``until``, or the first moment ``datetime`` holds
    when that is earlier (``until`` in the first week of year 1)."""
    try:
        return until - timedelta(days=7)
    except OverflowError:
        return datetime.min.replace(tzinfo=UTC)


@router.get("/events", response_model=EventCountsOut,
            summary="Event counts by day or type, answered by ClickHouse (default: last 7 days)")
async def events(
    _admin: AdminPrincipal, settings: SettingsDep,
    source: Literal["clickhouse"] = "clickhouse",
    group_by: Literal["day", "event_type"] = "day",
    since: Since = None, until: Until = None,
) -> EventCountsOut:
    until_ = queries.as_utc(until) if until else utcnow()
    since_ = queries.as_utc(since) if since else _week_before(until_)
    rows = await queries.events_from_clickhouse(settings, group_by, since_, until_)
    return EventCountsOut(source=source, group_by=group_by, since=since_, until=until_,
                          items=[EventCountOut(**r) for r in rows])
