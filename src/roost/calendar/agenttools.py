"""Calendar tools for agents: ``calendar_list_events``, ``calendar_find_free_slot``,
``calendar_create_event`` and ``calendar_move_event`` (built-in ``tools`` rows from
migration 0890; the agents domain runs them inside a run, roost.agents.jobs).

Each acts for the run's user (the actor is the run's principal, and the session is scoped
to it: row-level security), over bounded ranges (``MAX_TOOL_RANGE``), and answers a
clear 4xx problem on bad arguments, which the model sees as the tool's error.

Moving (docs/calendar.md, "Agent tools"): an agent moves an event only when its owner
let it: ``is_movable`` and ``movability_score >= MIN_AGENT_MOVABILITY`` (0 = fixed, the
default 0.5 = an agent may reschedule it).  Recurring series and all-day events are never
moved by an agent, and a move never lands on busy time unless ``allow_conflict``.
"""

from __future__ import annotations

import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, date, datetime, time, timedelta
from typing import Any, Final

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, model_validator
from sqlalchemy.ext.asyncio import AsyncSession

from roost.calendar import recurrence, service
from roost.calendar.models import Calendar, Event
from roost.calendar.schemas import EventCreate, EventUpdate
from roost.db.engine import Database
from roost.errors import Unprocessable
from roost.identity.tenancy import apply_principal
from roost.inputs import parse_tool_arguments
from roost.principal import Principal

LIST_EVENTS_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000801")
FIND_FREE_SLOT_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000802")
CREATE_EVENT_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000803")
MOVE_EVENT_ID: Final = uuid.UUID("019ad9a0-0000-7000-8000-000000000804")

MAX_TOOL_RANGE: Final = timedelta(days=62)  # an agent plans weeks ahead, not years
MAX_LISTED: Final = 200  # occurrences in one answer (the model's context is the limit)
MAX_EVENT_LENGTH: Final = timedelta(days=14)
MIN_AGENT_MOVABILITY: Final = 0.5
DEFAULT_CALENDAR: Final = "Default Calendar"
SLOT_STEP: Final = timedelta(minutes=15)  # proposed slots start on a quarter hour

Tool = Callable[[Database, Principal, dict[str, Any], uuid.UUID | None],
                Awaitable[dict[str, Any]]]


class _Args(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class _Range(_Args):
    start: AwareDatetime
    end: AwareDatetime

    @model_validator(mode="after")
    def _bounded(self) -> _Range:
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.end - self.start > MAX_TOOL_RANGE:
            raise ValueError(f"the range is longer than {MAX_TOOL_RANGE.days} days")
        return self


class _ListArgs(_Range):
    calendar_id: uuid.UUID | None = None
    limit: int = Field(default=50, ge=1, le=MAX_LISTED)


class WorkingHours(_Args):
    start: time = Field(default=time(9), description="local time, e.g. 09:00")
    end: time = Field(default=time(17), description="local time, e.g. 17:00")
    timezone: str = Field(default="UTC", min_length=1, max_length=64)
    weekdays: list[int] = Field(default=[1, 2, 3, 4, 5], min_length=1, max_length=7,
                                description="ISO weekdays: 1 = Monday ... 7 = Sunday")

    @model_validator(mode="after")
    def _valid(self) -> WorkingHours:
        if self.end <= self.start:
            raise ValueError("working_hours: end must be after start")
        if any(not 1 <= d <= 7 for d in self.weekdays):
            raise ValueError("working_hours.weekdays: 1 (Monday) to 7 (Sunday)")
        try:
            recurrence.zone(self.timezone)
        except recurrence.RecurrenceError:
            # Not the name: a tool's errors never quote what the model sent (it may have
            # copied it from the conversation; roost.inputs.parse_tool_arguments).
            raise ValueError("working_hours.timezone: unknown time zone (an IANA name such "
                             "as Europe/Berlin or UTC)") from None
        return self


class _SlotArgs(_Range):
    duration_minutes: int = Field(ge=5, le=24 * 60)
    working_hours: WorkingHours | None = None
    count: int = Field(default=3, ge=1, le=10)


class _CreateArgs(_Args):
    summary: str = Field(min_length=1, max_length=1000)
    start: AwareDatetime
    end: AwareDatetime | None = None
    duration_minutes: int | None = Field(default=None, ge=1, le=MAX_EVENT_LENGTH.days * 24 * 60)
    calendar_id: uuid.UUID | None = None
    description: str | None = Field(default=None, max_length=10_000)
    location: str | None = Field(default=None, max_length=1000)
    category: str | None = Field(default=None, min_length=1, max_length=50)
    movability_score: float | None = Field(default=None, ge=0, le=1)
    allow_conflict: bool = False

    @model_validator(mode="after")
    def _times(self) -> _CreateArgs:
        if (self.end is None) == (self.duration_minutes is None):
            raise ValueError("give either end or duration_minutes")
        if self.end is None:
            try:
                self.end = self.start + timedelta(minutes=self.duration_minutes or 0)
            except OverflowError:
                raise ValueError("the event would end after the year 9999") from None
        if self.end <= self.start:
            raise ValueError("end must be after start")
        if self.end - self.start > MAX_EVENT_LENGTH:
            raise ValueError(f"an event made by an agent lasts at most {MAX_EVENT_LENGTH.days} days")
        return self


class _MoveArgs(_Args):
    event_id: uuid.UUID
    new_start: AwareDatetime | None = None
    next_free_slot: bool = False
    search_days: int = Field(default=14, ge=1, le=MAX_TOOL_RANGE.days)
    working_hours: WorkingHours | None = None
    allow_conflict: bool = False

    @model_validator(mode="after")
    def _one(self) -> _MoveArgs:
        if (self.new_start is None) == (not self.next_free_slot):
            raise ValueError("give either new_start or next_free_slot: true")
        return self


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).isoformat().replace("+00:00", "Z")


def _event_out(ev: Event) -> dict[str, Any]:
    return {"event_id": str(ev.id), "calendar_id": str(ev.calendar_id), "summary": ev.summary,
            "start": _iso(ev.start_time), "end": _iso(ev.end_time), "timezone": ev.timezone,
            "location": ev.location, "movability_score": ev.movability_score,
            "is_movable": ev.is_movable, "recurring": bool(ev.recurrence_rule or ev.rdates),
            "status": ev.status}


def _windows(start: datetime, end: datetime,
             hours: WorkingHours | None) -> list[tuple[datetime, datetime]]:
    """The parts of ``[start, end)`` an event may be put in: all of it, or its working hours
    (wall-clock times in their zone, so across a DST change too)."""
    if hours is None:
        return [(start, end)]
    tz = recurrence.zone(hours.timezone)
    day = start.astimezone(tz).date() - timedelta(days=1)
    # Not past 9999-12-30: a later local day starts after recurrence.LATEST, and its next
    # would not be a date.
    last = min(end.astimezone(tz).date(), date.max - timedelta(days=1))
    out = []
    while day <= last:
        if day.isoweekday() in hours.weekdays:
            ws = recurrence.to_utc(datetime.combine(day, hours.start), tz)
            we = recurrence.to_utc(datetime.combine(day, hours.end), tz)
            if we > start and ws < end:
                out.append((max(ws, start), min(we, end)))
        day += timedelta(days=1)
    return out


def _round_up(at: datetime) -> datetime:
    """The next quarter hour (UTC; every zone's offset is a whole number of quarters)."""
    base = at.astimezone(UTC).replace(minute=0, second=0, microsecond=0)
    steps = -(-(at - base) // SLOT_STEP)
    return base + steps * SLOT_STEP


async def free_slots(session: AsyncSession, actor: Principal, start: datetime, end: datetime,
                     duration: timedelta, *, hours: WorkingHours | None = None, count: int = 1,
                     exclude: uuid.UUID | None = None) -> list[tuple[datetime, datetime]]:
    """Up to ``count`` free slots of ``duration`` in ``[start, end)``, earliest first, each
    starting on a quarter hour, not in the past, inside working hours when given; busy
    time is all the actor's calendars' (service.freebusy), ``exclude`` left out."""
    start = max(start, datetime.now(UTC))
    if start >= end:
        return []
    _, free = await service.freebusy(session, actor, start, end, exclude=exclude)
    slots: list[tuple[datetime, datetime]] = []
    for ws, we in _windows(start, end, hours):
        for fs, fe in free:
            at, stop = _round_up(max(ws, fs)), min(we, fe)
            while at + duration <= stop and len(slots) < count:
                slots.append((at, at + duration))
                at += duration
            if len(slots) == count:
                return slots
    return slots


async def _calendar(session: AsyncSession, actor: Principal,
                    calendar_id: uuid.UUID | None) -> Calendar:
    """The calendar given, else the user's "Default Calendar" or first one; a user without
    any gets a "Default Calendar" (as an import would)."""
    if calendar_id is not None:
        return await service.get_calendar(session, actor, calendar_id)
    calendars = await service.list_calendars(session, actor)
    for cal in calendars:
        if cal.name == DEFAULT_CALENDAR:
            return cal
    if calendars:
        return calendars[0]
    return await service.ensure_calendar(session, actor, DEFAULT_CALENDAR)


async def _busy_at(session: AsyncSession, actor: Principal, start: datetime, end: datetime,
                   exclude: uuid.UUID | None = None) -> list[tuple[datetime, datetime]]:
    """The busy time in ``[start, end)``, asked ``service.MAX_RANGE`` at a time: an event
    lasting longer than a range query may (the agent gave no range) is checked too."""
    busy: list[tuple[datetime, datetime]] = []
    while start < end:
        until = end if end - start <= service.MAX_RANGE else start + service.MAX_RANGE
        part, _ = await service.freebusy(session, actor, start, until, exclude=exclude)
        busy.extend(part)
        start = until
    return recurrence.merge(busy)  # a busy span across two parts is one


def _conflict(busy: list[tuple[datetime, datetime]]) -> Unprocessable:
    spans = ", ".join(f"{_iso(s)} to {_iso(e)}" for s, e in busy[:5])
    return Unprocessable(f"that time is not free (busy {spans}): find a free slot with "
                         "calendar_find_free_slot, or pass allow_conflict: true to double-book")


def check_movable(ev: Event) -> None:
    """Refuse a move the event's owner did not allow an agent (the module's rule), and of
    a cancelled event or occurrence (it answered "moved" for what shows nowhere)."""
    if ev.status == "cancelled":
        raise Unprocessable(f"event {ev.id} ({ev.summary!r}) is cancelled: there is nothing "
                            "to move; ask the user")
    if ev.recurrence_rule or ev.rdates:
        raise Unprocessable(f"event {ev.id} ({ev.summary!r}) is a recurring series: agents do "
                            "not move series; ask the user")
    if ev.all_day:
        raise Unprocessable(f"event {ev.id} ({ev.summary!r}) is an all-day event: agents do "
                            "not move those; ask the user")
    if not ev.is_movable or ev.movability_score < MIN_AGENT_MOVABILITY:
        raise Unprocessable(
            f"event {ev.id} ({ev.summary!r}) is fixed for agents (is_movable "
            f"{str(ev.is_movable).lower()}, movability_score {ev.movability_score:g}; an agent "
            f"moves only movable events scored {MIN_AGENT_MOVABILITY:g} or more): ask the user")


def builtin_tools(app_role: str | None) -> dict[uuid.UUID, Tool]:
    """The calendar built-ins by ``tools`` row id (run by the agents domain as hosted)."""

    async def scoped(database: Database, actor: Principal, work: Callable[
            [AsyncSession], Awaitable[dict[str, Any]]]) -> dict[str, Any]:
        if actor.user_id is None:
            raise Unprocessable("calendar tools act for a user: run them in a user's agent run")
        async with database.transaction() as session:
            await apply_principal(session, actor, app_role=app_role)
            return await work(session)

    async def list_events(database: Database, actor: Principal, arguments: dict[str, Any],
                          run_id: uuid.UUID | None) -> dict[str, Any]:
        args = parse_tool_arguments(_ListArgs, "calendar_list_events", arguments)

        async def work(session: AsyncSession) -> dict[str, Any]:
            found, truncated = await service.occurrences(
                session, actor, args.start, args.end, calendar_id=args.calendar_id,
                limit=args.limit)
            return {"occurrences": [
                {"event_id": str(o["event_id"]), "calendar_id": str(o["calendar_id"]),
                 "summary": o["summary"], "start": _iso(o["start"]), "end": _iso(o["end"]),
                 "all_day": o["all_day"], "location": o["location"], "status": o["status"],
                 "recurring": o["recurring"], "is_movable": o["is_movable"],
                 "movability_score": o["movability_score"]} for o in found],
                "truncated": truncated}

        return await scoped(database, actor, work)

    async def find_free_slot(database: Database, actor: Principal, arguments: dict[str, Any],
                             run_id: uuid.UUID | None) -> dict[str, Any]:
        args = parse_tool_arguments(_SlotArgs, "calendar_find_free_slot", arguments)

        async def work(session: AsyncSession) -> dict[str, Any]:
            slots = await free_slots(session, actor, args.start, args.end,
                                     timedelta(minutes=args.duration_minutes),
                                     hours=args.working_hours, count=args.count)
            return {"slots": [{"start": _iso(s), "end": _iso(e)} for s, e in slots],
                    "note": None if slots else "no free slot of that length in the range"}

        return await scoped(database, actor, work)

    async def create_event(database: Database, actor: Principal, arguments: dict[str, Any],
                           run_id: uuid.UUID | None) -> dict[str, Any]:
        args = parse_tool_arguments(_CreateArgs, "calendar_create_event", arguments)
        end = args.end if args.end is not None else args.start  # the validator set it
        # The event's own checks (a NUL in a text, ...) as a 422 the model sees, not a
        # ValidationError escaping the tool call.
        body = parse_tool_arguments(EventCreate, "calendar_create_event", {
            "start_time": args.start, "end_time": end, **args.model_dump(
                include={"summary", "description", "location", "category",
                         "movability_score"}, exclude_none=True)})

        async def work(session: AsyncSession) -> dict[str, Any]:
            if not args.allow_conflict:  # over the times as stored: whole seconds
                busy = await _busy_at(session, actor, body.start_time.replace(microsecond=0),
                                      body.end_time.replace(microsecond=0))
                if busy:
                    raise _conflict(busy)
            cal = await _calendar(session, actor, args.calendar_id)
            ev = await service.create_event(session, actor, cal.id, body)
            return {"created": True, "event": _event_out(ev)}

        return await scoped(database, actor, work)

    async def move_event(database: Database, actor: Principal, arguments: dict[str, Any],
                         run_id: uuid.UUID | None) -> dict[str, Any]:
        args = parse_tool_arguments(_MoveArgs, "calendar_move_event", arguments)

        async def work(session: AsyncSession) -> dict[str, Any]:
            ev = await service.get_own_event(session, actor, args.event_id, lock=True)
            check_movable(ev)
            length = ev.end_time - ev.start_time
            before = {"start": _iso(ev.start_time), "end": _iso(ev.end_time)}
            if args.new_start is not None:
                start = args.new_start.replace(microsecond=0)  # as it is stored
                try:
                    start + length
                except OverflowError:
                    raise Unprocessable("new_start: the event would end after the year 9999",
                                        extra={"field": "new_start"}) from None
                if not args.allow_conflict:
                    busy = await _busy_at(session, actor, start, start + length, exclude=ev.id)
                    if busy:
                        raise _conflict(busy)
            else:
                after = max(ev.end_time, datetime.now(UTC))
                # The search stops at the calendar's last day (recurrence.LATEST).
                window = timedelta(days=args.search_days)
                capped = recurrence.LATEST - after < window
                until = max(recurrence.LATEST, after) if capped else after + window
                try:
                    slots = await free_slots(session, actor, after, until, length,
                                             hours=args.working_hours, exclude=ev.id)
                except OverflowError:  # a slot of a long event ending after the year 9999
                    slots = []
                if not slots:
                    raise Unprocessable(f"no free slot of {length} in the {args.search_days} "
                                        "days after the event" + (
                                            " (the calendar ends on 9999-12-30)" if capped
                                            else ""))
                start = slots[0][0]
            moved = await service.update_event(session, actor, ev.calendar_id, ev.id,
                                               EventUpdate(start_time=start,
                                                           end_time=start + length))
            return {"moved": True, "from": before, "event": _event_out(moved)}

        return await scoped(database, actor, work)

    return {LIST_EVENTS_ID: list_events, FIND_FREE_SLOT_ID: find_free_slot,
            CREATE_EVENT_ID: create_event, MOVE_EVENT_ID: move_event}
