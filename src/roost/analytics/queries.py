"""Reading analytics: usage and event counts from ClickHouse, streaming metrics and the
export's state from PostgreSQL.

ClickHouse queries read ``roost_events FINAL`` (one row per event id, however often it
was shipped) with bound ``{name:Type}`` parameters, never interpolated input.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, Final

from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.analytics.clickhouse import TABLE, Sink, safe_error, sink_for
from roost.analytics.models import AnalyticsEvent
from roost.config import Settings
from roost.errors import Forbidden, RoostError, ServiceUnavailable, Unprocessable
from roost.inputs import read_as_utc
from roost.principal import Principal

# group_by -> the ClickHouse expression of the key (a fixed whitelist, never input).  Days
# by toDate32 (1900-2299, the years the table's DateTime64 holds): toDate's Date covers
# 1970-2149 only and wraps round outside it (1969-07-20 came out as 2148-12-24).
USAGE_KEYS: Final[dict[str, str]] = {
    "day": "toString(toDate32(timestamp))",
    "user": "ifNull(toString(user_id), '')",
    "model": "toString(model)",
    "provider": "provider_id",
    "agent": "agent_id",
    "api_key": "api_key_id",
}
# group_by -> a name the event itself gives, for keys it lacks: events written before
# llm.call carried provider_id group under no key, one row per provider name.
USAGE_NAMES: Final[dict[str, str]] = {
    "provider": "if(provider_id = '', toString(provider), '')",
}
EVENT_KEYS: Final[dict[str, str]] = {
    "day": "toString(toDate32(timestamp))",
    "event_type": "toString(event_type)",
}
# toString(sum(cost)) trims trailing zeros ("0.09", "0"): costs are read back with the
# six decimals PostgreSQL's numeric(18, 6) gives, so a report reads the same from either.
COST_PLACES: Final = Decimal("0.000001")
_RANGE = ("timestamp >= {since:DateTime64(6, 'UTC')} AND timestamp < {until:DateTime64(6, 'UTC')}")


async def _select(settings: Settings, sink: Sink | None, sql: str,
                  params: dict[str, Any]) -> list[dict[str, Any]]:
    sink = sink or sink_for(settings)
    try:
        return await sink.select(sql, params)
    except RoostError:
        raise
    except Exception as exc:  # ClickHouse unreachable or failing: a 503
        raise ServiceUnavailable(
            f"the analytics store ({sink.kind} at {sink.location}) did not answer: "
            f"{safe_error(exc, settings)}") from exc


def as_utc(moment: datetime) -> datetime:
    """In UTC; naive timestamps are UTC (the extremes of ``datetime`` stay in range)."""
    try:
        return read_as_utc(moment).astimezone(UTC)
    except OverflowError:
        return (datetime.min if moment.year == 1 else datetime.max).replace(tzinfo=UTC)


# What ClickHouse's DateTime64 holds: wider ranges are clamped to it.
CH_MIN: Final = datetime(1900, 1, 1, tzinfo=UTC)
CH_MAX: Final = datetime(2299, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)


def _check_range(since: datetime, until: datetime) -> tuple[datetime, datetime] | None:
    """[since, until) within the years ClickHouse's DateTime64 holds; None when the
    range lies wholly outside them (nothing can be stored there: an empty answer)."""
    since, until = as_utc(since), as_utc(until)
    if until <= since:
        raise Unprocessable("until must be after since")
    since, until = min(max(since, CH_MIN), CH_MAX), min(max(until, CH_MIN), CH_MAX)
    return (since, until) if since < until else None


async def usage_from_clickhouse(settings: Settings, group_by: str, since: datetime,
                                until: datetime, user_id: uuid.UUID | None,
                                sink: Sink | None = None) -> list[dict[str, Any]]:
    """LLM usage from ClickHouse (``llm.call`` events in [since, until)), one dict per key:
    key (None for events without one), name (the event's own name for a key it lacks,
    else None), requests, tokens_input, tokens_output, credits, cost (Decimal), failures;
    sorted by key.  ``user_id`` restricts to one user."""
    key = USAGE_KEYS.get(group_by)
    if key is None:
        raise Unprocessable(f"group_by must be one of {', '.join(USAGE_KEYS)}")
    checked = _check_range(since, until)
    if checked is None:
        return []
    since, until = checked
    params: dict[str, Any] = {"since": since, "until": until}
    user_filter = ""
    if user_id is not None:
        user_filter = " AND user_id = {user_id:UUID}"
        params["user_id"] = user_id
    name = USAGE_NAMES.get(group_by, "''")
    # key and name come from the whitelists above; values are bound parameters.
    sql = (
        f"SELECT {key} AS key, {name} AS name, count() AS requests, "  # noqa: S608
        "sum(tokens_input) AS tokens_input, "
        "sum(tokens_output) AS tokens_output, sum(credits) AS credits, "
        "toString(sum(cost)) AS cost, countIf(NOT success) AS failures "
        f"FROM {TABLE} FINAL WHERE event_type = 'llm.call' AND {_RANGE}{user_filter} "
        "GROUP BY key, name ORDER BY key, name"
    )
    rows = await _select(settings, sink, sql, params)
    return [{
        "key": str(r["key"]) or None, "name": str(r["name"]) or None,
        "requests": int(r["requests"]),
        "tokens_input": int(r["tokens_input"]), "tokens_output": int(r["tokens_output"]),
        "credits": int(r["credits"]), "cost": Decimal(str(r["cost"])).quantize(COST_PLACES),
        "failures": int(r["failures"]),
    } for r in rows]


async def events_from_clickhouse(settings: Settings, group_by: str, since: datetime,
                                 until: datetime, sink: Sink | None = None
                                 ) -> list[dict[str, Any]]:
    """Event counts in [since, until) by day or event type: [{key, events}]."""
    key = EVENT_KEYS.get(group_by)
    if key is None:
        raise Unprocessable(f"group_by must be one of {', '.join(EVENT_KEYS)}")
    checked = _check_range(since, until)
    if checked is None:
        return []
    since, until = checked
    sql = (f"SELECT {key} AS key, count() AS events FROM {TABLE} FINAL WHERE {_RANGE} "  # noqa: S608
           "GROUP BY key ORDER BY key")  # key from the whitelist
    rows = await _select(settings, sink, sql, {"since": since, "until": until})
    return [{"key": str(r["key"]), "events": int(r["events"])} for r in rows]


# Per model: streams (done rows), time to first token p50/p95, and the average output
# rate after the first token (streams where it is measurable).
_STREAMING_SQL = text("""
SELECT d.model AS model,
       count(*) AS streams,
       percentile_cont(0.5) WITHIN GROUP (ORDER BY f.latency_ms) AS ttft_p50,
       percentile_cont(0.95) WITHIN GROUP (ORDER BY f.latency_ms) AS ttft_p95,
       avg(d.tokens_delta * 1000.0 / (d.latency_ms - f.latency_ms))
           FILTER (WHERE d.latency_ms > f.latency_ms AND d.tokens_delta > 0) AS tokens_per_s
FROM streaming_analytics d
LEFT JOIN streaming_analytics f ON f.stream_id = d.stream_id AND f.event_type = 'first_token'
WHERE d.event_type = 'done'
  AND (CAST(:since AS timestamptz) IS NULL OR d.timestamp >= :since)
  AND (CAST(:until AS timestamptz) IS NULL OR d.timestamp < :until)
  AND (CAST(:user_id AS uuid) IS NULL OR d.user_id = :user_id)
GROUP BY d.model
ORDER BY d.model NULLS LAST
""")


async def streaming_summary(session: AsyncSession, principal: Principal, *,
                            since: datetime | None, until: datetime | None,
                            user_id: uuid.UUID | None) -> list[dict[str, Any]]:
    """Streaming metrics per model: a user sees their own streams, an administrator
    everyone's (or one user's with ``user_id``)."""
    if not principal.is_admin:
        if principal.user_id is None:
            raise Forbidden("streaming metrics belong to users; sign in as one")
        if user_id is not None and user_id != principal.user_id:
            raise Forbidden("only administrators may read another user's streaming metrics")
        user_id = principal.user_id
    since = as_utc(since) if since else None
    until = as_utc(until) if until else None
    if since and until and until <= since:
        raise Unprocessable("until must be after since")
    rows = (await session.execute(_STREAMING_SQL, {"since": since, "until": until,
                                                   "user_id": user_id})).all()

    def ms(value: Any) -> float | None:
        return round(float(value), 3) if value is not None else None

    return [{"model": r.model, "streams": int(r.streams), "ttft_ms_p50": ms(r.ttft_p50),
             "ttft_ms_p95": ms(r.ttft_p95), "tokens_per_s": ms(r.tokens_per_s)} for r in rows]


@dataclass(frozen=True)
class OutboxCounts:
    pending: int
    exported: int
    oldest_pending: datetime | None
    max_attempts: int


async def outbox_counts(session: AsyncSession) -> OutboxCounts:
    e = AnalyticsEvent
    row = (await session.execute(select(
        func.count().filter(e.exported.is_(False)),
        func.count().filter(e.exported.is_(True)),
        func.min(e.timestamp).filter(e.exported.is_(False)),
        func.coalesce(func.max(e.export_attempts).filter(e.exported.is_(False)), 0),
    ))).one()
    return OutboxCounts(pending=int(row[0]), exported=int(row[1]), oldest_pending=row[2],
                        max_attempts=int(row[3]))


@dataclass(frozen=True)
class ExportOutcome:
    """The export's last good pass and last failure, whichever process ran them."""

    last_success_at: datetime | None
    last_error: str | None
    last_error_at: datetime | None


_JOB_OUTCOMES: Final = text("""
SELECT
  (SELECT max(completed_at) FROM background_tasks
    WHERE task_type = :task AND status = 'completed') AS ok_at,
  failure.error_message, failure.at
FROM (SELECT 1) AS one
LEFT JOIN LATERAL (
  SELECT error_message, at FROM (
    -- When it failed (its last attempt's end, which the worker records), not when it
    -- started: a long pass failing after a success that began later is the newest news.
    SELECT error_message,
           coalesce((retry_history -> -1 ->> 'ended_at')::timestamptz, started_at) AS at
      FROM background_tasks
     -- failed (its retry waiting), or running or stuck again since: the error stays the
     -- news until a pass succeeds (a retry's claim keeps error_message)
     WHERE task_type = :task AND status IN ('failed', 'running', 'stuck')
       AND error_message IS NOT NULL
    UNION ALL
    SELECT error_message, moved_at AS at FROM dead_letter_queue WHERE task_type = :task
  ) AS failures WHERE at IS NOT NULL ORDER BY at DESC LIMIT 1
) AS failure ON true
""")


async def export_outcome(session: AsyncSession, task_type: str, *,
                         process_success_at: datetime | None, process_error: str | None,
                         process_error_at: datetime | None) -> ExportOutcome:
    """The newest outcome of the export, from the queue's record of the scheduled passes
    (which run in any worker process) and this process's own passes (``POST
    /api/v1/analytics/export``); a failure older than the last success is cleared."""
    row = (await session.execute(_JOB_OUTCOMES, {"task": task_type})).one()
    success_at = max((t for t in (process_success_at, row.ok_at) if t is not None), default=None)
    failures = [(at, msg) for at, msg in ((process_error_at, process_error),
                                          (row.at, row.error_message))
                if at is not None and msg is not None]
    error_at, error = max(failures, key=lambda f: f[0]) if failures else (None, None)
    if error_at is not None and success_at is not None and success_at > error_at:
        error_at = error = None
    return ExportOutcome(success_at, error, error_at)
