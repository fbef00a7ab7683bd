"""The analytics tables of HelixAgent (seed 002, every column: docs/seed-map.toml).

``clickhouse_analytics`` is an outbox: a domain writes an event in the same transaction
as the action it describes (:func:`roost.analytics.outbox.emit`), and the export job
ships unexported rows to ClickHouse in batches and marks them exported.  Shipping is
at-least-once; the row id is the deduplication key on the ClickHouse side
(ReplacingMergeTree ordered by id), so a crash between ship and mark duplicates nothing
a query sees.  ``streaming_analytics`` holds, per streamed answer, the time to the first
token and the per-chunk latency and token deltas (sampled past the first chunks).

Row-level security (migration 0910): the outbox is the administrators' (anyone may add
an event about themselves or about nobody); streaming rows are their user's.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any

from sqlalchemy import BigInteger, Boolean, Index, Integer, String, text
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, UUIDPrimaryKey


class AnalyticsEvent(UUIDPrimaryKey, Base):
    __tablename__ = "clickhouse_analytics"
    __table_args__ = (
        # The export job's queue: only the rows still to ship are indexed.
        Index("ix_clickhouse_analytics_unexported", "timestamp",
              postgresql_where=text("NOT exported")),
        Index("ix_clickhouse_analytics_user_id_timestamp", "user_id", "timestamp"),
    )

    event_type: Mapped[str] = mapped_column(String(100))
    event_data: Mapped[dict[str, Any]] = mapped_column(JSONB)
    # No foreign keys: an analytics event outlives the user or session it names.
    user_id: Mapped[uuid.UUID | None] = mapped_column()
    session_id: Mapped[uuid.UUID | None] = mapped_column()
    timestamp: Mapped[datetime] = mapped_column(server_default=text("now()"))
    exported: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    exported_at: Mapped[datetime | None] = mapped_column()
    export_attempts: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)


class StreamingMetric(UUIDPrimaryKey, Base):
    __tablename__ = "streaming_analytics"
    __table_args__ = (
        Index("ix_streaming_analytics_stream_id", "stream_id"),
        Index("ix_streaming_analytics_model_timestamp", "model", "timestamp"),
        Index("ix_streaming_analytics_user_id_timestamp", "user_id", "timestamp"),
    )

    stream_id: Mapped[str] = mapped_column(String(255))  # the llm_requests id
    # first_token | chunk | done (done: tokens_delta = all output tokens, latency = total)
    event_type: Mapped[str] = mapped_column(String(100))
    chunk_number: Mapped[int] = mapped_column(Integer)
    latency_ms: Mapped[int] = mapped_column(BigInteger)  # since the request was sent
    tokens_delta: Mapped[int] = mapped_column(Integer, server_default=text("0"), default=0)
    user_id: Mapped[uuid.UUID | None] = mapped_column()  # no foreign key, as above
    timestamp: Mapped[datetime] = mapped_column(server_default=text("now()"))
    model: Mapped[str | None] = mapped_column(String(255))
    provider: Mapped[str | None] = mapped_column(String(255))
