"""Bodies and answers of the calendar API."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationInfo, field_validator

from roost.inputs import StrictInput

EventStatus = Literal["confirmed", "tentative", "cancelled"]
# An event's limits, on the API and on import alike (roost.calendar.ical).
MAX_DESCRIPTION = 100_000
MAX_RDATES = 1000
MAX_EXDATES = 5000
MAX_TAGS = 200
MAX_EMAIL = 320
COLOR = r"^#[0-9a-fA-F]{6}$"
# An address or an iCalendar UID: no control characters (an export would write a CR as a
# newline: another UID, a duplicate on re-import).
NO_CONTROL = r"^[^\x00-\x1f\x7f]+$"
# A calendar's name as sent: its limit (255, roost.calendar.service._name) counts it once
# composed (NFC) and without invisible characters around it, and a decomposed spelling
# takes up to four code points for one character.  This only bounds what is sent.
SENT_NAME_CHARS = 4 * 255


class CalendarCreate(StrictInput):
    refuse_nul = True
    name: str = Field(min_length=1, max_length=SENT_NAME_CHARS)
    description: str | None = Field(default=None, max_length=20_000)
    timezone: str = Field(default="UTC", min_length=1, max_length=64,
                          description="IANA time zone, e.g. Europe/Berlin")
    color: str | None = Field(default=None, pattern=COLOR)


class CalendarUpdate(StrictInput):
    refuse_nul = True
    name: str | None = Field(default=None, min_length=1, max_length=SENT_NAME_CHARS)
    description: str | None = Field(default=None, max_length=20_000)
    timezone: str | None = Field(default=None, min_length=1, max_length=64)
    color: str | None = Field(default=None, pattern=COLOR)


class CalendarOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    name: str
    description: str | None
    timezone: str
    color: str | None
    created_at: datetime
    updated_at: datetime


class Attendee(StrictInput):
    refuse_nul = True
    email: str = Field(min_length=1, max_length=MAX_EMAIL, pattern=NO_CONTROL,
                       description="An address (no control characters)")
    name: str | None = Field(default=None, max_length=255)
    role: str | None = Field(default=None, max_length=64)
    status: str | None = Field(default=None, max_length=64)

    @field_validator("name", "role", "status")
    @classmethod
    def _as_exported(cls, value: str | None) -> str | None:
        """Line breaks as LF, as an export reads them back (as EventFields' text)."""
        return None if value is None else _lf(value)


def _lf(value: str) -> str:
    """Line breaks as LF: RFC 5545 TEXT has no CR."""
    return value.replace("\r\n", "\n").replace("\r", "\n")


class EventFields(StrictInput):
    """Fields an event is created or changed with (all optional here: PATCH)."""

    refuse_nul = True

    summary: str | None = Field(default=None, min_length=1, max_length=1000)
    description: str | None = Field(default=None, max_length=MAX_DESCRIPTION)
    start_time: datetime | None = Field(default=None, description="With a UTC offset")
    end_time: datetime | None = None
    timezone: str | None = Field(default=None, max_length=64, description=(
        "IANA zone the recurrence is expanded in; default: the calendar's"))
    all_day: bool | None = None
    location: str | None = Field(default=None, max_length=1000)
    category: str | None = Field(default=None, min_length=1, max_length=50)
    event_type: str | None = Field(default=None, min_length=1, max_length=50)
    movability_score: float | None = Field(default=None, ge=0, le=1)
    is_movable: bool | None = None
    importance_weight: float | None = Field(default=None, ge=0, le=1000)
    reminder_minutes: int | None = Field(default=None, ge=0, le=40_320)
    attendees: list[Attendee] | None = Field(default=None, max_length=500)
    recurrence_rule: str | None = Field(default=None, max_length=1000, description=(
        "RFC 5545 RRULE value, e.g. FREQ=WEEKLY;BYDAY=MO,WE;UNTIL=20271231T235959Z"))
    rdates: list[datetime] | None = Field(default=None, max_length=MAX_RDATES)
    exdates: list[datetime] | None = Field(default=None, max_length=MAX_EXDATES)
    status: EventStatus | None = None
    transparent: bool | None = None
    google_event_id: str | None = Field(default=None, min_length=1, max_length=255)
    semantic_keywords: list[str] | None = Field(default=None, max_length=200)
    semantic_category: str | None = Field(default=None, max_length=100)
    semantic_tags: list[str] | None = Field(default=None, max_length=MAX_TAGS)
    semantic_embedding_id: str | None = Field(default=None, max_length=255)

    @field_validator("summary", "description", "location", "google_event_id", "category",
                     "event_type")
    @classmethod
    def _as_exported(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Text as an iCalendar export reads back: line breaks as LF (RFC 5545 TEXT has
        no CR), an empty description or location as none."""
        if value is None:
            return None
        value = _lf(value)
        if not value and info.field_name in ("description", "location"):
            return None
        return value


class EventCreate(EventFields):
    summary: str = Field(min_length=1, max_length=1000)
    start_time: datetime = Field(description="With a UTC offset")
    end_time: datetime = Field(description="With a UTC offset; >= start_time")
    uid: str | None = Field(default=None, min_length=1, max_length=255, pattern=NO_CONTROL,
                            description="iCalendar UID (no control characters); default: "
                            "generated")


class EventUpdate(EventFields):
    pass


class EventOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    calendar_id: uuid.UUID
    user_id: uuid.UUID
    uid: str
    google_event_id: str | None
    summary: str
    description: str | None
    start_time: datetime
    end_time: datetime
    timezone: str
    all_day: bool
    category: str
    movability_score: float
    is_movable: bool
    semantic_keywords: list[Any] | None
    semantic_embedding_id: str | None
    semantic_category: str | None
    semantic_tags: list[Any] | None
    event_type: str
    attendees: list[dict[str, Any]] | None
    location: str | None
    recurrence_rule: str | None
    rdates: list[datetime]
    exdates: list[datetime]
    recurrence_id: datetime | None = Field(default=None, description=(
        "Set on a changed occurrence (an override of the series with this uid): the "
        "original start of the occurrence it replaces"))
    reminder_minutes: int | None
    importance_weight: float
    status: str
    transparent: bool
    created_at: datetime
    updated_at: datetime


class Occurrence(BaseModel):
    event_id: uuid.UUID
    calendar_id: uuid.UUID
    uid: str
    summary: str
    start: datetime
    end: datetime
    all_day: bool
    timezone: str
    location: str | None
    category: str
    recurring: bool
    status: str
    is_movable: bool
    movability_score: float
    recurrence_id: datetime | None = Field(default=None, description=(
        "For an occurrence of a series: its original start (what identifies it, RFC 5545 "
        "RECURRENCE-ID); for a changed occurrence the start it replaced"))
    override: bool = Field(default=False, description=(
        "A changed occurrence (event_id is the override's own row)"))


class OccurrencesOut(BaseModel):
    start: datetime
    end: datetime
    occurrences: list[Occurrence]
    truncated: bool = Field(description="More occurrences than `limit`: narrow the range")


class BusyInterval(BaseModel):
    start: datetime
    end: datetime


class FreeBusyOut(BaseModel):
    start: datetime
    end: datetime
    busy: list[BusyInterval]
    free: list[BusyInterval]


class ImportOut(BaseModel):
    created: int
    updated: int
    unchanged: int
    skipped: list[str]
