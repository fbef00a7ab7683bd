"""Calendars and events: CRUD, occurrences of a bounded range (recurrence expanded here,
roost.calendar.recurrence), free/busy, iCalendar import (idempotent by UID) and export.

An override (a row with ``recurrence_id``: one changed occurrence of the series with the
same calendar and UID) replaces the series' occurrence starting at ``recurrence_id``: it
is shown at its own time (possibly moved into or out of a range), not at all when
cancelled.  Deleting a series deletes its overrides.

A calendar and its events are their owner's: anyone else gets 404, here and by row-level
security (administrators may read one by id).  Lists, agendas and free/busy cover the
acting user's own calendars only.  Ranges are required and at most ``MAX_RANGE`` long.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from collections.abc import Sequence
from dataclasses import asdict
from datetime import UTC, datetime, time, timedelta
from typing import Any, Final

import numpy as np
import structlog
from sqlalchemy import delete, false, null, or_, select, true
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.ext.asyncio import AsyncSession

from roost.audit.service import owner_if_other, record
from roost.calendar import batch, ical, recurrence
from roost.calendar.models import Calendar, Event
from roost.calendar.recurrence import RecurrenceError, Recurring
from roost.calendar.schemas import CalendarCreate, CalendarUpdate, EventCreate, EventUpdate
from roost.db.lookup import id_starts_with, one_or_404
from roost.errors import BadRequest, NotFound, PayloadTooLarge, Unprocessable
from roost.identity.common import require_user
from roost.inputs import is_blank, strip_invisible
from roost.principal import Principal
from roost.process import cpu_bound

log = structlog.get_logger(__name__)
MAX_RANGE: Final = timedelta(days=366)
MAX_NAME_CHARS: Final = 255  # calendars.name
MAX_IMPORT_BYTES: Final = 5 * 1024 * 1024
MAX_IMPORT_EVENTS: Final = 20_000
DEFAULT_OCCURRENCES: Final = 1000
MAX_OCCURRENCES: Final = 10_000
# What one range query may expand (free/busy has no limit; an agenda expands from the
# range's start until it has its limit): past it, a 422 asking for a narrower range.
MAX_EXPANDED: Final = 200_000
FIRST_SPAN: Final = timedelta(days=1)  # an agenda with a limit expands [start, start + 1 day),
SPAN_GROWTH: Final = 4  # then a span 4 times longer, until it has its limit or the range
INLINE_EXPANSIONS: Final = 50  # more recurring events than this: expanded in a thread

# Columns an import sets (and compares, to count unchanged events).
IMPORTED: Final = ("summary", "description", "start_time", "end_time", "timezone", "all_day",
                   "location", "category", "semantic_tags", "recurrence_rule", "rdates",
                   "exdates", "attendees", "reminder_minutes", "status", "transparent",
                   "event_type", "movability_score", "is_movable", "importance_weight",
                   "google_event_id")



class InvalidRecurrence(Unprocessable):
    title, type_slug = "Invalid recurrence", "invalid-recurrence"


class InvalidICalendar(Unprocessable):
    title, type_slug = "Invalid iCalendar", "invalid-icalendar"


def _owner(actor: Principal) -> uuid.UUID:
    return require_user(actor, "calendars")


def _visible(actor: Principal, column: Any) -> Any:
    if actor.is_admin:
        return true()
    if actor.user_id is None:
        return false()
    return column == actor.user_id


def _zone(name: str, field: str = "timezone") -> str:
    try:
        recurrence.zone(name)
    except RecurrenceError as exc:
        raise Unprocessable(str(exc), extra={"field": field}) from None
    return name


def check_range(start: datetime, end: datetime) -> None:
    """A required, bounded range: both with a UTC offset, end after start, <= MAX_RANGE."""
    if start.tzinfo is None or end.tzinfo is None:
        raise Unprocessable("start and end need a UTC offset (e.g. 2027-01-01T00:00:00Z)",
                            extra={"field": "start" if start.tzinfo is None else "end"})
    if end <= start:
        raise Unprocessable("end must be after start", extra={"field": "end"})
    if end - start > MAX_RANGE:
        raise Unprocessable(f"the range is longer than {MAX_RANGE.days} days: query a shorter "
                            "one", extra={"field": "end", "max_days": MAX_RANGE.days})
    if recurrence.out_of_limits(start, end) is not None:
        raise Unprocessable(f"the range must lie {recurrence.LIMITS_TEXT}",
                            extra={"field": "start" if start < recurrence.EARLIEST else "end"})


# --- calendars ---------------------------------------------------------------------------


async def create_calendar(session: AsyncSession, actor: Principal,
                          body: CalendarCreate) -> Calendar:
    owner = _owner(actor)
    cal = Calendar(user_id=owner, name=_name(body.name), description=body.description,
                   timezone=_zone(body.timezone), color=body.color)
    session.add(cal)
    await session.flush()
    await session.refresh(cal)
    await record(session, "calendar.create", user_id=owner, resource_type="calendar",
                 resource_id=cal.id, changes={"name": cal.name, "timezone": cal.timezone})
    return cal


async def ensure_calendar(session: AsyncSession, actor: Principal, name: str,
                          timezone: str = "UTC") -> Calendar:
    """The user's calendar called ``name``, created (in ``timezone``) when missing: two
    callers at once (an agent's parallel tool calls, two CLI imports) both get the one
    calendar, never a unique violation."""
    owner = _owner(actor)
    made = await session.scalar(
        pg_insert(Calendar).values(user_id=owner, name=_name(name), timezone=_zone(timezone))
        .on_conflict_do_nothing(index_elements=["user_id", "name"]).returning(Calendar.id))
    if made is not None:
        await record(session, "calendar.create", user_id=owner, resource_type="calendar",
                     resource_id=made, changes={"name": _name(name), "timezone": timezone})
    return await one_or_404(session, select(Calendar).where(
        Calendar.user_id == owner, Calendar.name == _name(name)).execution_options(
        populate_existing=True), missing="calendar not found")


def _name(name: str) -> str:
    """A calendar's name as stored and looked up: without white space or invisible
    characters around it (a name of zero-width spaces alone is blank), composed (NFC: a
    name typed decomposed, "Cafe" and a combining accent, is the same name, not a second
    calendar that looks like it)."""
    cleaned = unicodedata.normalize("NFC", strip_invisible(name))
    if is_blank(cleaned):
        raise Unprocessable("name must not be blank (white space or invisible characters "
                            "only)", extra={"field": "name"})
    if len(cleaned) > MAX_NAME_CHARS:
        raise Unprocessable(f"name must be at most {MAX_NAME_CHARS} characters once "
                            "composed (NFC)", extra={"field": "name"})
    return cleaned


async def list_calendars(session: AsyncSession, actor: Principal) -> list[Calendar]:
    owner = _owner(actor)
    rows = await session.scalars(select(Calendar).where(Calendar.user_id == owner)
                                 .order_by(Calendar.name, Calendar.id).limit(1000))
    return list(rows.all())


async def get_calendar(session: AsyncSession, actor: Principal, calendar_id: uuid.UUID,
                       *, lock: bool = False) -> Calendar:
    return await one_or_404(
        session, select(Calendar).where(Calendar.id == calendar_id,
                                        _visible(actor, Calendar.user_id)),
        lock=lock, missing=f"calendar {calendar_id} does not exist")


async def find_calendar(session: AsyncSession, actor: Principal, ref: str) -> Calendar:
    """One of the actor's calendars by exact name, id or a unique start of an id (CLI)."""
    owner = _owner(actor)
    # As names are stored (_name): composed, without invisible characters around them.
    named = unicodedata.normalize("NFC", strip_invisible(ref))
    rows = (await session.scalars(select(Calendar).where(
        Calendar.user_id == owner,
        or_(Calendar.name == named, id_starts_with(Calendar.id, ref)),
    ).limit(3))).all()
    exact = [c for c in rows if c.name == named]
    if exact:
        return exact[0]
    if not rows:
        raise NotFound(f"you have no calendar named {ref!r} or with an id starting with it")
    if len(rows) > 1:
        raise BadRequest(f"{ref!r} names several calendars; use the full id")
    return rows[0]


async def update_calendar(session: AsyncSession, actor: Principal, calendar_id: uuid.UUID,
                          body: CalendarUpdate) -> Calendar:
    cal = await get_calendar(session, actor, calendar_id, lock=True)
    given = body.model_fields_set
    for fld in ("name", "timezone"):
        if fld in given and getattr(body, fld) is None:
            raise Unprocessable(f"{fld} cannot be null", extra={"field": fld})
    changes: dict[str, Any] = {}
    if "name" in given and body.name is not None:
        changes["name"] = cal.name = _name(body.name)
    if "timezone" in given and body.timezone is not None:
        changes["timezone"] = cal.timezone = _zone(body.timezone)
    for fld in ("description", "color"):
        if fld in given:
            setattr(cal, fld, getattr(body, fld))
            changes[fld] = "changed"
    await session.flush()
    await session.refresh(cal)
    await record(session, "calendar.update", user_id=actor.user_id or cal.user_id,
                 resource_type="calendar", resource_id=cal.id,
                 changes={**changes, **owner_if_other(actor, cal.user_id)})
    return cal


async def delete_calendar(session: AsyncSession, actor: Principal,
                          calendar_id: uuid.UUID) -> None:
    cal = await get_calendar(session, actor, calendar_id, lock=True)
    await session.execute(delete(Calendar).where(Calendar.id == cal.id))
    await record(session, "calendar.delete", user_id=actor.user_id or cal.user_id,
                 resource_type="calendar", resource_id=cal.id,
                 changes={"name": cal.name, **owner_if_other(actor, cal.user_id)})


# --- events ------------------------------------------------------------------------------


def _aware(values: Sequence[datetime] | None, field: str) -> list[datetime]:
    out = []
    for v in values or ():
        if v.tzinfo is None:
            raise Unprocessable(f"{field}: every date-time needs a UTC offset",
                                extra={"field": field})
        try:
            out.append(_whole_seconds(v.astimezone(UTC)))
        except OverflowError:  # 0001-01-01T00:00:00+14:00 is in year 0 in UTC
            raise Unprocessable(f"{field}: {v.isoformat()} is not {recurrence.LIMITS_TEXT}",
                                extra={"field": field}) from None
    return sorted(set(out))


def _recurring(ev: Event) -> Recurring:
    return Recurring(start=ev.start_time, end=ev.end_time, timezone=ev.timezone,
                     rule=ev.recurrence_rule, rdates=ev.rdates or (), exdates=ev.exdates or (),
                     all_day=ev.all_day)


def _normalise_rule(rule: str | None) -> str | None:
    if rule is None or not rule.strip():
        return None
    text = rule.strip()
    return text[6:] if text.upper().startswith("RRULE:") else text


async def _derive(ev: Event) -> None:
    """Validate the event's times and recurrence and store what is derived from them:
    ``recurrence_end`` and ``recurrence_plan``."""
    if ev.start_time.tzinfo is None or ev.end_time.tzinfo is None:
        raise Unprocessable("start_time and end_time need a UTC offset",
                            extra={"field": "start_time"})
    if ev.end_time < ev.start_time:
        raise Unprocessable("end_time is before start_time", extra={"field": "end_time"})
    for field in ("start_time", "end_time", "rdates", "exdates"):
        value = getattr(ev, field)
        outside = recurrence.out_of_limits(*(value or () if field.endswith("dates")
                                             else (value,)))
        if outside is not None:
            raise Unprocessable(f"{field}: {outside.isoformat()} is not "
                                f"{recurrence.LIMITS_TEXT}", extra={"field": field})
    if ev.all_day:
        _whole_days(ev)
    if ev.recurrence_id is not None and (ev.recurrence_rule or ev.rdates or ev.exdates):
        raise InvalidRecurrence("a changed occurrence (recurrence_id) has no recurrence_rule, "
                                "rdates or exdates of its own: change the series instead",
                                extra={"field": "recurrence_rule"})

    def work() -> tuple[datetime | None, list[int]]:
        rec = _recurring(ev)
        recurrence.validate(rec)
        return _derived(rec)

    try:
        ev.recurrence_end, ev.recurrence_plan = (
            await cpu_bound(work) if ev.recurrence_rule else work())
    except RecurrenceError as exc:
        raise InvalidRecurrence(f"recurrence_rule: {exc}",
                                extra={"field": "recurrence_rule"}) from None


def _whole_days(ev: Event) -> None:
    """An all-day event spans whole days of its zone: it starts and ends at a local
    midnight and lasts a day or more (09:00-10:00 exported as DATE values would be a day
    of no length, read back at midnight)."""
    try:
        tz = recurrence.zone(ev.timezone)
    except RecurrenceError:
        return  # the zone's own check names it
    for field in ("start_time", "end_time"):
        at = getattr(ev, field)
        # The day's first instant, as import and the recurrence store it: on a day whose
        # midnight a DST change skips (America/Santiago), the local clock then reads 01:00.
        midnight = datetime.combine(recurrence.local(at, tz).date(), time())
        if at != recurrence.to_utc(midnight, tz):
            raise Unprocessable(f"{field}: an all-day event starts and ends at midnight in its "
                                f"time zone ({ev.timezone})", extra={"field": field})
    if ev.end_time <= ev.start_time:
        raise Unprocessable("end_time: an all-day event lasts at least one day",
                            extra={"field": "end_time"})


def _apply(ev: Event, values: dict[str, Any]) -> None:
    for key, value in values.items():
        if key in ("rdates", "exdates"):
            value = _aware(value, key)
        elif key == "recurrence_rule":
            value = _normalise_rule(value)
        elif key == "attendees" and value is not None:
            value = [{k: v for k, v in (a if isinstance(a, dict) else a.model_dump()).items()
                      if v is not None} for a in value]
        elif key == "timezone":
            value = _zone(value)
        elif key in ("start_time", "end_time"):
            if value.tzinfo is None:
                raise Unprocessable(f"{key} needs a UTC offset", extra={"field": key})
            value = _whole_seconds(value.astimezone(UTC))
        setattr(ev, key, value)


def _whole_seconds(at: datetime) -> datetime:
    """A time as an event stores it: whole seconds.  iCalendar has none smaller (an export
    would read back changed), and a rule's occurrences after DTSTART have none (dateutil
    and the arithmetic plans drop them): a 09:00:00.5 DTSTART was a fourth occurrence
    beside 09:00:00 of a COUNT=3 series."""
    return at.replace(microsecond=0)


async def create_event(session: AsyncSession, actor: Principal, calendar_id: uuid.UUID,
                       body: EventCreate) -> Event:
    cal = await get_calendar(session, actor, calendar_id)
    values = body.model_dump(exclude_unset=True, exclude={"uid"})
    values = {k: v for k, v in values.items() if v is not None}
    ev = Event(user_id=cal.user_id, calendar_id=cal.id, uid=body.uid or f"{uuid.uuid4()}@roost",
               timezone=cal.timezone, rdates=[], exdates=[])
    _apply(ev, values)
    await _derive(ev)
    session.add(ev)
    await session.flush()
    await session.refresh(ev)
    await record(session, "event.create", user_id=actor.user_id or cal.user_id,
                 resource_type="event", resource_id=ev.id,
                 changes={"calendar_id": str(cal.id), "recurring": ev.recurrence_rule is not None,
                          **owner_if_other(actor, cal.user_id)})
    return ev


async def get_event(session: AsyncSession, actor: Principal, calendar_id: uuid.UUID,
                    event_id: uuid.UUID, *, lock: bool = False) -> Event:
    stmt = select(Event).where(Event.id == event_id, Event.calendar_id == calendar_id,
                               _visible(actor, Event.user_id))
    if lock:
        stmt = stmt.with_for_update()
    found = await session.scalar(stmt)
    if found is None:
        raise NotFound(f"event {event_id} does not exist in calendar {calendar_id}")
    return found


async def get_own_event(session: AsyncSession, actor: Principal, event_id: uuid.UUID,
                        *, lock: bool = False) -> Event:
    """One of the actor's own events by id, whatever its calendar (agent tools)."""
    stmt = select(Event).where(Event.id == event_id, Event.user_id == _owner(actor))
    found = await session.scalar(stmt.with_for_update() if lock else stmt)
    if found is None:
        raise NotFound(f"event {event_id} does not exist")
    return found


async def list_events(session: AsyncSession, actor: Principal, calendar_id: uuid.UUID,
                      *, limit: int = 100, offset: int = 0) -> list[Event]:
    cal = await get_calendar(session, actor, calendar_id)
    rows = await session.scalars(select(Event).where(Event.calendar_id == cal.id)
                                 .order_by(Event.start_time, Event.id).offset(offset).limit(limit))
    return list(rows.all())


NOT_NULL: Final = ("summary", "start_time", "end_time", "timezone", "all_day", "category",
                   "event_type", "movability_score", "is_movable", "importance_weight",
                   "status", "transparent")


async def update_event(session: AsyncSession, actor: Principal, calendar_id: uuid.UUID,
                       event_id: uuid.UUID, body: EventUpdate) -> Event:
    ev = await get_event(session, actor, calendar_id, event_id, lock=True)
    given = body.model_fields_set
    for fld in NOT_NULL:
        if fld in given and getattr(body, fld) is None:
            raise Unprocessable(f"{fld} cannot be null", extra={"field": fld})
    values = {k: getattr(body, k) for k in given}
    if values.get("rdates") is None and "rdates" in values:
        values["rdates"] = []
    if values.get("exdates") is None and "exdates" in values:
        values["exdates"] = []
    _apply(ev, values)
    await _derive(ev)
    await session.flush()
    dropped = 0
    if ev.recurrence_id is None and not (ev.recurrence_rule or ev.rdates):
        dropped = await _drop_overrides(session, ev)
    await session.refresh(ev)
    await record(session, "event.update", user_id=actor.user_id or ev.user_id,
                 resource_type="event", resource_id=ev.id,
                 changes={"fields": sorted(given), **({"overrides_deleted": dropped}
                                                      if dropped else {}),
                          **owner_if_other(actor, ev.user_id)})
    return ev


async def _drop_overrides(session: AsyncSession, ev: Event) -> int:
    """Delete the overrides of ``ev``, a series made a single event (its rule and RDATEs
    removed): with no series left, a changed occurrence had no occurrence to replace, and
    the single event was shown or hidden depending on the range queried.  How many."""
    gone = await session.execute(delete(Event).where(
        Event.calendar_id == ev.calendar_id, Event.uid == ev.uid,
        Event.recurrence_id.is_not(None)))
    return int(getattr(gone, "rowcount", 0) or 0)


async def delete_event(session: AsyncSession, actor: Principal, calendar_id: uuid.UUID,
                       event_id: uuid.UUID) -> None:
    """Delete an event; a series with its overrides.  Deleting an override brings the
    series' original occurrence back (to remove one occurrence, cancel it instead)."""
    ev = await get_event(session, actor, calendar_id, event_id, lock=True)
    if ev.recurrence_id is None:
        gone = await session.execute(delete(Event).where(
            Event.calendar_id == ev.calendar_id, Event.uid == ev.uid))
    else:
        gone = await session.execute(delete(Event).where(Event.id == ev.id))
    await record(session, "event.delete", user_id=actor.user_id or ev.user_id,
                 resource_type="event", resource_id=ev.id,
                 changes={"calendar_id": str(calendar_id), "rows": getattr(gone, "rowcount", 1),
                          **owner_if_other(actor, ev.user_id)})


# Columns an override created for one occurrence copies from its series.
COPIED: Final = (*(k for k in IMPORTED if k not in ("start_time", "end_time", "recurrence_rule",
                                                   "rdates", "exdates", "google_event_id")),
                 "semantic_keywords", "semantic_category", "semantic_embedding_id")


async def change_occurrence(session: AsyncSession, actor: Principal, calendar_id: uuid.UUID,
                            event_id: uuid.UUID, recurrence_id: datetime,
                            body: EventUpdate) -> tuple[Event, bool]:
    """Create or change the override of the series' occurrence that starts at
    ``recurrence_id`` (``status: cancelled`` removes that one occurrence); and whether it
    was created.  The override starts as a copy of the occurrence."""
    if recurrence_id.tzinfo is None:
        raise Unprocessable("recurrence_id needs a UTC offset (the occurrence's start, e.g. "
                            "2027-03-15T08:00:00Z)", extra={"field": "recurrence_id"})
    try:
        rid = recurrence_id.astimezone(UTC)
    except OverflowError:
        rid = datetime.min.replace(tzinfo=UTC)
    if not 1 < rid.year < 9999:  # room for the occurrence's window
        raise Unprocessable("recurrence_id is out of range", extra={"field": "recurrence_id"})
    series = await get_event(session, actor, calendar_id, event_id, lock=True)
    if series.recurrence_id is not None:
        raise Unprocessable(f"event {event_id} is itself a changed occurrence: change it with "
                            "PATCH, or address its series", extra={"field": "event_id"})
    if not (series.recurrence_rule or series.rdates):
        raise Unprocessable(f"event {event_id} is not recurring: change the event itself",
                            extra={"field": "event_id"})
    given = body.model_fields_set
    for fld in NOT_NULL:
        if fld in given and getattr(body, fld) is None:
            raise Unprocessable(f"{fld} cannot be null", extra={"field": fld})
    override = await session.scalar(select(Event).where(
        Event.calendar_id == series.calendar_id, Event.uid == series.uid,
        Event.recurrence_id == rid).with_for_update())
    created = override is None
    if override is None:
        found = [(s, e) for s, e in recurrence.occurrences(
            series.start_time, series.end_time, series.timezone, series.recurrence_rule,
            series.rdates, series.exdates, recurrence.Window(rid, rid + timedelta(seconds=1)))
            if s == rid]
        if not found:
            raise NotFound(f"event {event_id} has no occurrence starting at "
                           f"{rid.isoformat().replace('+00:00', 'Z')}")
        override = Event(user_id=series.user_id, calendar_id=series.calendar_id,
                         uid=series.uid, recurrence_id=rid, start_time=found[0][0],
                         end_time=found[0][1], rdates=[], exdates=[],
                         **{k: getattr(series, k) for k in COPIED})
        if series.reminder_minutes is None:
            override.reminder_minutes = null()  # type: ignore[assignment]
    _apply(override, {k: getattr(body, k) for k in given})
    await _derive(override)
    if created:
        session.add(override)
    await session.flush()
    await session.refresh(override)
    await record(session, "event.occurrence", user_id=actor.user_id or series.user_id,
                 resource_type="event",
                 resource_id=series.id, changes={"override_id": str(override.id),
                                                 "recurrence_id": rid.isoformat(),
                                                 "created": created, "fields": sorted(given),
                                                 **owner_if_other(actor, series.user_id)})
    return override, created


# --- ranges ------------------------------------------------------------------------------


OVERRIDE_SLACK: Final = timedelta(days=1)  # wall-clock durations change across DST


async def _events_in(session: AsyncSession, actor: Principal, start: datetime, end: datetime,
                     calendar_ids: Sequence[uuid.UUID] | None) -> list[Event]:
    """The events that may have an occurrence in the range (series, single events and
    overrides by their own times), and the overrides of their occurrences in it (by
    ``recurrence_id``: an override moved out of the range still hides its occurrence).
    A single event's too: none can be made now, but a row left from before (an imported
    override of a single event) answers the same for every range, as the expansion
    applies it whenever it is loaded."""

    def scoped(stmt: Any) -> Any:
        if calendar_ids is None:
            return stmt.where(Event.user_id == _owner(actor))
        return stmt.where(Event.calendar_id.in_(calendar_ids), _visible(actor, Event.user_id))

    found = list((await session.scalars(scoped(select(Event).where(
        Event.start_time < end,
        or_(Event.recurrence_end.is_(None), Event.recurrence_end >= start))))).all())
    candidates = [e for e in found if e.recurrence_id is None]
    if not candidates:
        return found
    # An occurrence of a series in the range starts after start - its length (its
    # wall-clock length, with slack for a DST change); a single event's one occurrence is
    # its start.
    since = min(_first_in(e, start) for e in candidates)
    have = {e.id for e in found}
    more = await session.scalars(scoped(select(Event).where(
        Event.recurrence_id.is_not(None), Event.recurrence_id < end,
        Event.recurrence_id >= since)))
    found.extend(e for e in more.all() if e.id not in have)
    return found


def _first_in(ev: Event, start: datetime) -> datetime:
    """No occurrence of ``ev`` overlapping a range from ``start`` starts before this."""
    if not (ev.recurrence_rule or ev.rdates):
        return ev.start_time
    reach = ev.end_time - ev.start_time + OVERRIDE_SLACK
    # (An event may last millennia: not before the calendar's first instant.)
    return start - reach if start - recurrence.EARLIEST > reach else recurrence.EARLIEST


def expand_events(events: Sequence[Any], start: datetime, end: datetime,
                  limit: int | None = None) -> list[tuple[Any, datetime, datetime]]:
    """Every occurrence of ``events`` overlapping ``[start, end)``, by start time (then
    end, then event id).  Rows with a ``recurrence_id`` (overrides) replace the occurrence
    of their series (same ``calendar_id`` and ``uid``) that starts at it; a cancelled
    override shows nothing.  Expanded all at once (roost.calendar.batch), with the
    garbage collector paused (``batch.collector_paused``).  With a ``limit``, the range is
    expanded from its start in growing spans (``FIRST_SPAN``, ``SPAN_GROWTH``) until one
    has ``limit`` occurrences: the first ones of the range are the first ones of a span
    that starts with it (a later occurrence starts after the span's end).  More than
    ``MAX_EXPANDED`` occurrences expanded raise ``batch.TooManyOccurrences``."""
    with batch.collector_paused():
        if limit is None:
            return _expand_all(events, start, end, None)
        span = FIRST_SPAN
        while True:
            until = end if end - start <= span else start + span  # (no overflow in 9999)
            found = _expand_all(events, start, until, limit)
            if len(found) >= limit or until == end:
                return found
            span *= SPAN_GROWTH


def _expand_all(events: Sequence[Any], start: datetime, end: datetime,
                limit: int | None) -> list[tuple[Any, datetime, datetime]]:
    window = recurrence.Window(start, end)
    rows_have_overrides = bool(events) and hasattr(events[0], "recurrence_id")  # not bench rows
    overrides = [ev for ev in events if ev.recurrence_id is not None] if rows_have_overrides \
        else []
    if overrides:
        events = [ev for ev in events if ev.recurrence_id is None]
    starts, ends, index = batch.expand_many(events, window, MAX_EXPANDED)
    if overrides:
        # Occurrences of a series that an override replaces are dropped...
        series: dict[tuple[Any, str], list[int]] = {}
        for i, ev in enumerate(events):
            series.setdefault((ev.calendar_id, ev.uid), []).append(i)
        keep = np.ones(len(starts), dtype=bool)
        for ev in overrides:
            for i in series.get((ev.calendar_id, ev.uid), ()):
                keep &= ~((index == i) & (starts == batch.micros(ev.recurrence_id)))
        # ...and the overrides themselves expanded as single events, after the series.
        # A cancelled override removes its occurrence, unless its whole series is
        # cancelled: the series' occurrences are listed as cancelled, and an override of
        # one (copying the series' status) is listed alike, not dropped.
        cancelled_series = {(ev.calendar_id, ev.uid) for ev in events if ev.status == "cancelled"}
        live = [ev for ev in overrides if ev.status != "cancelled"
                or (ev.calendar_id, ev.uid) in cancelled_series]
        extra = [(batch.micros(s), batch.micros(e), len(events) + k)
                 for k, ev in enumerate(live)
                 for s, e in recurrence.occurrences(ev.start_time, ev.end_time, ev.timezone,
                                                    None, (), (), window)]
        events = [*events, *live]
        starts = np.concatenate([starts[keep], np.array([x[0] for x in extra], dtype=np.int64)])
        ends = np.concatenate([ends[keep], np.array([x[1] for x in extra], dtype=np.int64)])
        index = np.concatenate([index[keep], np.array([x[2] for x in extra], dtype=np.int64)])
    order = batch.by_start_end_id(starts, ends, index, events)
    if limit is not None:
        order = order[:limit]
    start_at = batch.to_datetimes(starts[order])
    end_at = batch.to_datetimes(ends[order])
    return list(zip(map(events.__getitem__, index[order].tolist()), start_at, end_at,
                    strict=True))


async def _expand(events: Sequence[Event], start: datetime, end: datetime,
                  limit: int | None = None) -> list[tuple[Any, datetime, datetime]]:
    try:
        if sum(1 for e in events if e.recurrence_rule) > INLINE_EXPANSIONS:
            return await cpu_bound(expand_events, events, start, end, limit)
        return expand_events(events, start, end, limit)
    except batch.TooManyOccurrences as exc:
        raise Unprocessable(f"the range has more than {exc.budget} occurrences to expand: "
                            "query a narrower range", extra={"field": "end",
                                                             "limit": exc.budget}) from None
    except (OverflowError, ValueError) as exc:
        # A long event repeated near the end of the year 9999 (the range and the events
        # are inside the limits, an occurrence's end may not be): refused, not a 500.
        log.warning("calendar_range_beyond_limits", error=str(exc))
        raise Unprocessable(f"an occurrence in this range would end after the year 9999: "
                            f"query a range that ends earlier ({recurrence.LIMITS_TEXT})",
                            extra={"field": "end"}) from None


async def occurrences(session: AsyncSession, actor: Principal, start: datetime, end: datetime,
                      *, calendar_id: uuid.UUID | None = None,
                      limit: int = DEFAULT_OCCURRENCES) -> tuple[list[dict[str, Any]], bool]:
    """The occurrences in ``[start, end)`` of one calendar, or of all the actor's; and
    whether there were more than ``limit``."""
    check_range(start, end)
    ids = None
    if calendar_id is not None:
        ids = [(await get_calendar(session, actor, calendar_id)).id]
    events = await _events_in(session, actor, start, end, ids)
    found = await _expand(events, start, end, limit + 1)
    return [_occurrence(ev, s, e) for ev, s, e in found[:limit]], len(found) > limit


def _occurrence(ev: Event, s: datetime, e: datetime) -> dict[str, Any]:
    recurring = bool(ev.recurrence_rule or ev.rdates)
    return {"event_id": ev.id, "calendar_id": ev.calendar_id, "uid": ev.uid,
            "summary": ev.summary, "start": s, "end": e, "all_day": ev.all_day,
            "timezone": ev.timezone, "location": ev.location, "category": ev.category,
            "recurring": recurring or ev.recurrence_id is not None, "status": ev.status,
            "is_movable": ev.is_movable, "movability_score": ev.movability_score,
            "recurrence_id": ev.recurrence_id if ev.recurrence_id is not None
            else s if recurring else None,
            "override": ev.recurrence_id is not None}


async def freebusy(session: AsyncSession, actor: Principal, start: datetime,
                   end: datetime, *, exclude: uuid.UUID | None = None,
                   ) -> tuple[list[tuple[datetime, datetime]], list[tuple[datetime, datetime]]]:
    """Busy intervals (merged, clipped to the range) over all the actor's calendars, and
    the free gaps between them.  Cancelled and transparent events are not busy, nor is the
    event ``exclude`` (one about to be moved)."""
    check_range(start, end)
    events = await _events_in(session, actor, start, end, None)
    found = await _expand(events, start, end)  # overrides applied before filtering
    busy = recurrence.merge((max(s, start), min(e, end)) for ev, s, e in found
                            if e > s and ev.status != "cancelled" and not ev.transparent
                            and ev.id != exclude)
    free: list[tuple[datetime, datetime]] = []
    cursor = start
    for s, e in busy:
        if s > cursor:
            free.append((cursor, s))
        cursor = max(cursor, e)
    if cursor < end:
        free.append((cursor, end))
    return busy, free


# --- iCalendar ---------------------------------------------------------------------------


async def import_ics(session: AsyncSession, actor: Principal, calendar_id: uuid.UUID,
                     raw: bytes) -> dict[str, Any]:
    """Create the file's events in the calendar, or update those whose UID it already has
    (importing the same file twice changes nothing)."""
    if len(raw) > MAX_IMPORT_BYTES:
        raise PayloadTooLarge(f"the iCalendar file is larger than {MAX_IMPORT_BYTES} bytes",
                              extra={"limit": MAX_IMPORT_BYTES})
    cal = await get_calendar(session, actor, calendar_id, lock=True)
    try:
        parsed = await cpu_bound(ical.parse, raw, cal.timezone)
    except ical.ICalError as exc:
        raise InvalidICalendar(str(exc)) from None
    if len(parsed.events) + len(parsed.overrides) > MAX_IMPORT_EVENTS:
        raise PayloadTooLarge(f"the file has more than {MAX_IMPORT_EVENTS} events",
                              extra={"limit": MAX_IMPORT_EVENTS})
    # Rows of the calendar with the file's UIDs: series by UID, overrides by (UID, start).
    existing: dict[tuple[str, datetime | None], Event] = {}
    uids = sorted({e.uid for e in parsed.events} | {o.data.uid for o in parsed.overrides})
    for i in range(0, len(uids), 1000):
        rows = await session.scalars(select(Event).where(Event.calendar_id == cal.id,
                                                         Event.uid.in_(uids[i:i + 1000])))
        existing.update({(e.uid, e.recurrence_id): e for e in rows.all()})
    in_file = {e.uid: e for e in parsed.events}
    skipped = list(parsed.skipped)
    overrides: list[ical.EventData] = []
    placed: set[tuple[str, datetime | None]] = set()
    for over in parsed.overrides:
        series = in_file.get(over.data.uid) or existing.get((over.data.uid, None))
        stamp = (over.data.recurrence_id or over.data.start_time).strftime("%Y%m%dT%H%M%SZ")
        if series is None:
            skipped.append(f"{over.where}: the changed occurrence (RECURRENCE-ID {stamp}) of a "
                           "series that is neither in the file nor in the calendar")
            continue
        if not (series.recurrence_rule or series.rdates):
            # As the API refuses it (change_occurrence): a single event is changed itself.
            skipped.append(f"{over.where}: the changed occurrence (RECURRENCE-ID {stamp}) of "
                           "an event that is not recurring (no RRULE or RDATE)")
            continue
        if over.day is not None:
            # A DATE RECURRENCE-ID is a day of the series' zone (an all-day series
            # need not be in the calendar's): its midnight there is the occurrence.
            over.data.recurrence_id = recurrence.all_day_bounds(
                over.day, over.day, series.timezone)[0]
        key = (over.data.uid, over.data.recurrence_id)
        if key in placed:  # a DATE and a DATE-TIME naming one occurrence of the series
            assert over.data.recurrence_id is not None
            raise InvalidICalendar(
                f"{over.where}: RECURRENCE-ID "
                f"{over.data.recurrence_id.strftime('%Y%m%dT%H%M%SZ')} appears twice for "
                "this UID (the same occurrence changed twice)")
        placed.add(key)
        overrides.append(over.data)
    created = updated = unchanged = 0
    rows_in = [*parsed.events, *overrides]  # series first: an override follows its series
    derived = await cpu_bound(_derive_all, rows_in)
    # A Google id moving from one event to another (each held once in the file): the
    # events losing theirs are cleared first, in a flush of their own, so the unique index
    # never sees one id on two rows halfway through (SQLAlchemy writes rows in key order).
    cleared: set[int] = set()
    for data in rows_in:
        ev = existing.get((data.uid, data.recurrence_id))
        if ev is not None and ev.google_event_id is not None \
                and ev.google_event_id != data.google_event_id:
            ev.google_event_id = None
            cleared.add(id(ev))
    if cleared:
        await session.flush()
    for data, (end, plan) in zip(rows_in, derived, strict=True):
        values = {k: v for k, v in asdict(data).items() if k in IMPORTED}
        ev = existing.get((data.uid, data.recurrence_id))
        if ev is None:
            ev = Event(user_id=cal.user_id, calendar_id=cal.id, uid=data.uid, **values,
                       recurrence_id=data.recurrence_id, recurrence_end=end,
                       recurrence_plan=plan)
            if data.reminder_minutes is None:  # no VALARM: no reminder (not the default 15)
                ev.reminder_minutes = null()  # type: ignore[assignment]
            session.add(ev)
            created += 1
        elif id(ev) in cleared or any(
                _rule_differs(getattr(ev, k), v) if k == "recurrence_rule"
                else _differs(getattr(ev, k), v) for k, v in values.items()):
            for k, v in values.items():
                setattr(ev, k, v)
            ev.recurrence_end, ev.recurrence_plan = end, plan
            updated += 1
        else:
            unchanged += 1
    await session.flush()
    # A series the file makes single (no RRULE or RDATE any more) loses the overrides it
    # had, as with a PATCH (update_event, _drop_overrides).
    with_overrides = {uid for uid, rid in existing if rid is not None}
    made_single = sorted(e.uid for e in parsed.events if e.uid in with_overrides
                         and not (e.recurrence_rule or e.rdates))
    for i in range(0, len(made_single), 1000):
        await session.execute(delete(Event).where(
            Event.calendar_id == cal.id, Event.uid.in_(made_single[i:i + 1000]),
            Event.recurrence_id.is_not(None)))
    result = {"created": created, "updated": updated, "unchanged": unchanged,
              "skipped": skipped}
    await record(session, "calendar.import", user_id=actor.user_id or cal.user_id,
                 resource_type="calendar", resource_id=cal.id,
                 changes={k: v for k, v in result.items() if k != "skipped"}
                 | {"skipped": len(skipped), "overrides": len(overrides)}
                 | owner_if_other(actor, cal.user_id))
    return result


def _derived(rec: Recurring) -> tuple[datetime | None, list[int]]:
    """An event's ``recurrence_end`` and ``recurrence_plan`` (a valid event)."""
    return (recurrence.recurrence_end(rec),
            batch.plan_of(rec.start, rec.end, rec.timezone, rec.rule, rec.rdates, rec.exdates))


def _derive_all(events: Sequence[ical.EventData]) -> list[tuple[datetime | None,
                                                                     list[int]]]:
    return [_derived(Recurring(
        start=e.start_time, end=e.end_time, timezone=e.timezone, rule=e.recurrence_rule,
        rdates=e.rdates, exdates=e.exdates)) for e in events]


def _rule_differs(old: str | None, new: str | None) -> bool:
    """Two RRULE values differ by their parts' values, not their order or spelling: an
    export writes the parts in the iCalendar library's order (FREQ first) and its numbers
    without leading zeros or "+" (INTERVAL=002 as 2), which import back unchanged."""
    if old is None or new is None or old == new:
        return old != new
    try:
        return _rule_values(old) != _rule_values(new)
    except RecurrenceError:
        return True


_NUMBERED: Final = re.compile(r"([+-]?)(\d+)([A-Z]{2})?")  # 002, +1, -1FR


def _rule_values(rule: str) -> dict[str, list[Any]]:
    """A valid rule's parts with their numbers as numbers (UNTIL and weekdays as text)."""
    values: dict[str, list[Any]] = {}
    for key, text in recurrence.parse_rule(rule).parts.items():
        items: list[Any] = []
        for item in text.split(","):
            match = _NUMBERED.fullmatch(item) if key != "UNTIL" else None
            items.append(item if match is None else (
                -int(match[2]) if match[1] == "-" else int(match[2]), match[3]))
        values[key] = items
    return values


def _differs(old: Any, new: Any) -> bool:
    if isinstance(old, float) or isinstance(new, float):
        return old is None or new is None or abs(float(old) - float(new)) > 1e-12
    if isinstance(old, list) and isinstance(new, list):
        return len(old) != len(new) or any(_differs(a, b) for a, b in zip(old, new, strict=True))
    return bool(old != new)


async def export_ics(session: AsyncSession, actor: Principal,
                     calendar_id: uuid.UUID) -> tuple[Calendar, bytes]:
    cal = await get_calendar(session, actor, calendar_id)
    events = (await session.scalars(select(Event).where(Event.calendar_id == cal.id)
                                    .order_by(Event.start_time, Event.uid,
                                              Event.recurrence_id.nulls_first()))).all()
    data = await cpu_bound(ical.build, cal.name, events, description=cal.description,
                           timezone=cal.timezone)
    return cal, data
