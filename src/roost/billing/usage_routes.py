"""HTTP routes: /api/v1/billing/usage (reports from PostgreSQL or ClickHouse) and
/api/v1/billing/usage-events (the ledger's batch ingest, administrators)."""

from __future__ import annotations

import uuid
from typing import Annotated, Literal

from fastapi import Query

from roost.billing import ledger, usage
from roost.billing.usage_schemas import (
    UsageEventsIn,
    UsageEventsOut,
    UsageReportOut,
    UsageRowOut,
    UsageTotalsOut,
)
from roost.http.auth import AdminPrincipal, CurrentPrincipal
from roost.http.deps import DbSession, SettingsDep
from roost.http.reads import ReadSession, replica_fallback
from roost.http.routing import RoostRouter

router = RoostRouter(prefix="/api/v1/billing", tags=["billing"])

Since = Annotated[str | None, Query(max_length=64, description="ISO date or timestamp "
                                    "(inclusive); default: 30 days before until")]
Until = Annotated[str | None, Query(max_length=64, description="ISO timestamp (exclusive) or "
                                    "date (through its end); default: now")]


def report_out(report: usage.UsageReport,
               source: Literal["postgres", "clickhouse"] = "postgres") -> UsageReportOut:
    return UsageReportOut(group_by=report.group_by, source=source, since=report.since,
                          until=report.until, rows=[UsageRowOut(**vars(r)) for r in report.rows],
                          totals=UsageTotalsOut(**report.totals()))


UserId = Annotated[uuid.UUID | None, Query(description="Only this user's usage "
                                            "(administrators; anyone else: only themself)")]


@router.get("/usage", response_model=UsageReportOut,
            summary="Usage and cost per day, user, model, provider, agent, API key or request "
                    "type (administrators: everyone's; source=clickhouse: from the export)")
@replica_fallback
async def get_usage(
    principal: CurrentPrincipal, db: ReadSession, settings: SettingsDep,
    group_by: usage.GroupBy = "day", since: Since = None, until: Until = None,
    source: Literal["postgres", "clickhouse"] = "postgres", user_id: UserId = None,
) -> UsageReportOut:
    """Also ``GET /api/v1/llm/usage`` (the same handler, so the same parameters)."""
    if source == "clickhouse":
        report = await usage.clickhouse_report(db, settings, principal, group_by=group_by,
                                               since=since, until=until, user_id=user_id)
        return report_out(report, "clickhouse")
    return report_out(await usage.usage_report(db, principal, group_by=group_by, since=since,
                                               until=until, user_id=user_id))


@router.post("/usage-events", response_model=UsageEventsOut,
             summary="Report billable events to the ledger (idempotent by key; administrators)")
async def post_usage_events(body: UsageEventsIn, principal: AdminPrincipal, db: DbSession,
                            settings: SettingsDep) -> UsageEventsOut:
    result = await ledger.ingest(db, settings, principal, body.events)
    return UsageEventsOut(accepted=result.accepted, duplicates=result.duplicates,
                          credits_charged=result.credits_charged)


__all__ = ["get_usage", "report_out", "router"]
