"""Answers of the analytics API (it takes no request bodies)."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel


class StreamingModelOut(BaseModel):
    model: str | None
    streams: int
    ttft_ms_p50: float | None
    ttft_ms_p95: float | None
    tokens_per_s: float | None  # output tokens / (total - time to first token), averaged


class StreamingOut(BaseModel):
    items: list[StreamingModelOut]


class ExportStatusOut(BaseModel):
    enabled: bool  # the periodic export (ROOST_ANALYTICS_EXPORT)
    interval_s: int
    sink: Literal["chdb", "clickhouse"]
    location: str  # the chDB path, or scheme://host:port/database (never credentials)
    pending: int
    exported: int
    oldest_pending: datetime | None
    max_attempts: int  # the most failed ships of a pending row
    # The last failed pass, in any process (a worker's scheduled pass or a POST here);
    # cleared by a later good one.
    last_error: str | None
    last_error_at: datetime | None
    last_success_at: datetime | None


class ExportRunOut(BaseModel):
    shipped: int
    batches: int
    pending: int
    duration_ms: int


class EventCountOut(BaseModel):
    key: str
    events: int


class EventCountsOut(BaseModel):
    source: Literal["clickhouse"]
    group_by: Literal["day", "event_type"]
    since: datetime
    until: datetime
    items: list[EventCountOut]
