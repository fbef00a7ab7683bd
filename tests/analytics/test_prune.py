"""Retention: outbox events (shipped or not) and streaming metrics older than
ROOST_ANALYTICS_RETENTION_DAYS go; newer ones stay."""

from __future__ import annotations

from datetime import timedelta

from sqlalchemy import text

from roost.analytics.export import prune_old
from roost.analytics.models import AnalyticsEvent, StreamingMetric
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database


async def test_old_events_and_metrics_are_pruned(database: Database) -> None:
    now = utcnow()
    async with database.transaction() as s:
        for age_days, exported in ((40, True), (40, False), (5, False), (5, True)):
            s.add(AnalyticsEvent(id=uuid7(), event_type="llm.call", event_data={},
                                 timestamp=now - timedelta(days=age_days), exported=exported,
                                 export_attempts=0))
        for age_days in (31, 29):
            s.add(StreamingMetric(id=uuid7(), stream_id="s", event_type="done", chunk_number=1,
                                  latency_ms=10, tokens_delta=3,
                                  timestamp=now - timedelta(days=age_days)))
    assert await prune_old(database, 30, batch=1) == {"events": 2, "stream_metrics": 1}
    async with database.transaction() as s:
        left = (await s.execute(text(
            "SELECT (SELECT count(*) FROM clickhouse_analytics), "
            "(SELECT count(*) FROM streaming_analytics)"))).one()
    assert tuple(left) == (2, 1)
    assert await prune_old(database, 30) == {"events": 0, "stream_metrics": 0}
