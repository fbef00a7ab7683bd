"""Tables of the calendar domain: AI Workflow Engine's ``calendars`` and ``events`` (seed
001, every column: docs/seed-map.toml), with what RFC 5545 needs besides.

Times are ``timestamptz`` instants; ``events.timezone`` is the IANA zone the event's
recurrence is expanded in (wall-clock times, so a 09:00 meeting stays at 09:00 across a
DST change).  ``recurrence_end`` is derived at every write (roost.calendar.recurrence):
the end of the last occurrence, NULL when the rule never ends; range queries filter on it.
``recurrence_plan`` too (roost.calendar.batch.plan_of: what a range query needs of the
event, as integers; NULL on rows written before migration 0960, compiled at query time).
An override (RFC 5545 RECURRENCE-ID: one changed occurrence of a series) is an ``events``
row with ``recurrence_id`` set (migration 0920).
Row-level security: both tables are their owner's (``roost_row_visible(user_id)``; an
event copies its calendar's ``user_id``).
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Final

from sqlalchemy import (
    BigInteger,
    Boolean,
    CheckConstraint,
    DateTime,
    Float,
    ForeignKey,
    Index,
    Integer,
    String,
    Text,
    text,
)
from sqlalchemy.dialects.postgresql import ARRAY
from sqlalchemy.orm import Mapped, mapped_column

from roost.db.base import Base, Timestamps, UUIDPrimaryKey
from roost.identity import models as _identity_models  # noqa: F401 - "users", for the foreign keys

EVENT_STATUSES: Final = ("confirmed", "tentative", "cancelled")


class Calendar(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "calendars"
    __table_args__ = (
        CheckConstraint("length(btrim(name)) > 0", name="name_not_blank"),
        Index("uq_calendars_user_name", "user_id", "name", unique=True),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    name: Mapped[str] = mapped_column(String(255), server_default=text("'Default Calendar'"),
                                      default="Default Calendar")
    description: Mapped[str | None] = mapped_column(Text)
    timezone: Mapped[str] = mapped_column(String(64), server_default=text("'UTC'"), default="UTC")
    color: Mapped[str | None] = mapped_column(String(7))  # "#rrggbb"


class Event(UUIDPrimaryKey, Timestamps, Base):
    __tablename__ = "events"
    __table_args__ = (
        CheckConstraint("end_time >= start_time", name="end_after_start"),
        CheckConstraint("movability_score >= 0 AND movability_score <= 1",
                        name="movability_score_range"),
        CheckConstraint("status IN ('confirmed', 'tentative', 'cancelled')", name="status"),
        # A series (or single event) is unique by UID in its calendar; an override (one
        # changed occurrence, RFC 5545 RECURRENCE-ID) by UID and the occurrence it replaces.
        Index("uq_events_calendar_uid", "calendar_id", "uid", unique=True,
              postgresql_where=text("recurrence_id IS NULL")),
        Index("uq_events_calendar_uid_recurrence", "calendar_id", "uid", "recurrence_id",
              unique=True, postgresql_where=text("recurrence_id IS NOT NULL")),
        # Overrides of the occurrences in a range (the series' own row is found by range).
        Index("ix_events_user_recurrence", "user_id", "recurrence_id",
              postgresql_where=text("recurrence_id IS NOT NULL")),
        # Unique per owner, not across tenants (a global index would tell one user that
        # another has an event with that id).
        Index("uq_events_user_google_event_id", "user_id", "google_event_id", unique=True),
        # Range queries: events that start before the range ends and have not ended before
        # it starts (recurrence_end NULL: a rule without end).
        Index("ix_events_calendar_range", "calendar_id", "start_time", "recurrence_end"),
        Index("ix_events_user_range", "user_id", "start_time", "recurrence_end"),
    )

    user_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("users.id", ondelete="CASCADE"))
    calendar_id: Mapped[uuid.UUID] = mapped_column(ForeignKey("calendars.id", ondelete="CASCADE"))
    uid: Mapped[str] = mapped_column(String(255))  # RFC 5545 UID, unique per calendar
    google_event_id: Mapped[str | None] = mapped_column(String(255))
    summary: Mapped[str] = mapped_column(String(1000))
    description: Mapped[str | None] = mapped_column(Text)
    start_time: Mapped[datetime]
    end_time: Mapped[datetime]
    timezone: Mapped[str] = mapped_column(String(64), server_default=text("'UTC'"), default="UTC")
    all_day: Mapped[bool] = mapped_column(Boolean, server_default=text("false"), default=False)
    category: Mapped[str] = mapped_column(String(50), server_default=text("'general'"),
                                          default="general")
    movability_score: Mapped[float] = mapped_column(Float, server_default=text("0.5"),
                                                    default=0.5)
    is_movable: Mapped[bool] = mapped_column(Boolean, server_default=text("true"), default=True)
    semantic_keywords: Mapped[list[Any] | None] = mapped_column()
    semantic_embedding_id: Mapped[str | None] = mapped_column(String(255))
    semantic_category: Mapped[str | None] = mapped_column(String(100))
    semantic_tags: Mapped[list[Any] | None] = mapped_column()
    event_type: Mapped[str] = mapped_column(String(50), server_default=text("'meeting'"),
                                            default="meeting")
    attendees: Mapped[list[Any] | None] = mapped_column()
    location: Mapped[str | None] = mapped_column(String(1000))
    recurrence_rule: Mapped[str | None] = mapped_column(Text)  # RRULE value, no "RRULE:"
    rdates: Mapped[list[datetime]] = mapped_column(
        ARRAY(DateTime(timezone=True)), server_default=text("'{}'"), default=list)
    exdates: Mapped[list[datetime]] = mapped_column(
        ARRAY(DateTime(timezone=True)), server_default=text("'{}'"), default=list)
    recurrence_end: Mapped[datetime | None]
    # Derived with recurrence_end; never from the API (not in any schema).
    recurrence_plan: Mapped[list[int] | None] = mapped_column(ARRAY(BigInteger))
    # An override: the original start (UTC) of the occurrence of the series with the same
    # (calendar_id, uid) that this row replaces (moved, changed or cancelled); NULL for a
    # series or a single event.  An override has no rule, RDATE or EXDATE of its own.
    recurrence_id: Mapped[datetime | None]
    reminder_minutes: Mapped[int | None] = mapped_column(Integer, server_default=text("15"),
                                                         default=15)
    importance_weight: Mapped[float] = mapped_column(Float, server_default=text("1.0"),
                                                     default=1.0)
    status: Mapped[str] = mapped_column(String(16), server_default=text("'confirmed'"),
                                        default="confirmed")
    transparent: Mapped[bool] = mapped_column(Boolean, server_default=text("false"),
                                              default=False)  # TRANSP: not busy
