"""HTTP routes: /api/v1/calendars (calendars, events, occurrences of a range, free/busy,
iCalendar import and export).  Paths take ``{...:uuid}``: ``/agenda`` and ``/freebusy``
are never read as a calendar id."""

from __future__ import annotations

import uuid
from typing import Annotated, Final

from fastapi import Depends, File, Query, Response, UploadFile, status

from roost.calendar import service
from roost.calendar.schemas import (
    BusyInterval,
    CalendarCreate,
    CalendarOut,
    CalendarUpdate,
    EventCreate,
    EventOut,
    EventUpdate,
    FreeBusyOut,
    ImportOut,
    Occurrence,
    OccurrencesOut,
)
from roost.http.auth import CurrentPrincipal
from roost.http.deps import DbSession
from roost.http.responses import attachment_disposition
from roost.http.routing import RoostRouter
from roost.http.uploads import read_capped, sent_once
from roost.inputs import IsoDatetimeAsGiven

router = RoostRouter(prefix="/api/v1/calendars", tags=["calendar"])

RANGE_HELP: Final = "With a UTC offset; the range is at most 366 days"
Start = Annotated[IsoDatetimeAsGiven, Query(description="Range start (inclusive). " + RANGE_HELP)]
End = Annotated[IsoDatetimeAsGiven, Query(description="Range end (exclusive). " + RANGE_HELP)]
OccurrenceLimit = Annotated[int, Query(ge=1, le=service.MAX_OCCURRENCES)]


@router.post("", status_code=status.HTTP_201_CREATED, response_model=CalendarOut,
             summary="Create a calendar")
async def create_calendar(body: CalendarCreate, principal: CurrentPrincipal,
                          db: DbSession) -> CalendarOut:
    return CalendarOut.model_validate(await service.create_calendar(db, principal, body))


@router.get("", response_model=list[CalendarOut], summary="Your calendars, by name")
async def list_calendars(principal: CurrentPrincipal, db: DbSession) -> list[CalendarOut]:
    return [CalendarOut.model_validate(c) for c in await service.list_calendars(db, principal)]


@router.get("/agenda", response_model=OccurrencesOut,
            summary="Occurrences of all your calendars' events in a range (recurrence expanded)")
async def agenda(principal: CurrentPrincipal, db: DbSession, start: Start, end: End,
                 limit: OccurrenceLimit = service.DEFAULT_OCCURRENCES) -> OccurrencesOut:
    found, truncated = await service.occurrences(db, principal, start, end, limit=limit)
    return OccurrencesOut(start=start, end=end, truncated=truncated,
                          occurrences=[Occurrence(**o) for o in found])


@router.get("/freebusy", response_model=FreeBusyOut,
            summary="Busy intervals (merged) and free gaps over all your calendars in a range")
async def freebusy(principal: CurrentPrincipal, db: DbSession, start: Start,
                   end: End) -> FreeBusyOut:
    busy, free = await service.freebusy(db, principal, start, end)
    return FreeBusyOut(start=start, end=end,
                       busy=[BusyInterval(start=s, end=e) for s, e in busy],
                       free=[BusyInterval(start=s, end=e) for s, e in free])


@router.get("/{calendar_id:uuid}", response_model=CalendarOut, summary="A calendar")
async def get_calendar(calendar_id: uuid.UUID, principal: CurrentPrincipal,
                       db: DbSession) -> CalendarOut:
    return CalendarOut.model_validate(await service.get_calendar(db, principal, calendar_id))


@router.patch("/{calendar_id:uuid}", response_model=CalendarOut,
              summary="Change a calendar's name, description, time zone or color")
async def update_calendar(calendar_id: uuid.UUID, body: CalendarUpdate,
                          principal: CurrentPrincipal, db: DbSession) -> CalendarOut:
    return CalendarOut.model_validate(
        await service.update_calendar(db, principal, calendar_id, body))


@router.delete("/{calendar_id:uuid}", status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete a calendar and its events")
async def delete_calendar(calendar_id: uuid.UUID, principal: CurrentPrincipal,
                          db: DbSession) -> Response:
    await service.delete_calendar(db, principal, calendar_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{calendar_id:uuid}/events", status_code=status.HTTP_201_CREATED,
             response_model=EventOut,
             summary="Create an event (optionally recurring: an RFC 5545 RRULE)")
async def create_event(calendar_id: uuid.UUID, body: EventCreate, principal: CurrentPrincipal,
                       db: DbSession) -> EventOut:
    return EventOut.model_validate(await service.create_event(db, principal, calendar_id, body))


@router.get("/{calendar_id:uuid}/events", response_model=OccurrencesOut,
            summary="The calendar's occurrences in a range, recurrence expanded (a range is "
                    "required)")
async def list_occurrences(calendar_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
                           start: Start, end: End,
                           limit: OccurrenceLimit = service.DEFAULT_OCCURRENCES) -> OccurrencesOut:
    found, truncated = await service.occurrences(db, principal, start, end,
                                                 calendar_id=calendar_id, limit=limit)
    return OccurrencesOut(start=start, end=end, truncated=truncated,
                          occurrences=[Occurrence(**o) for o in found])


@router.get("/{calendar_id:uuid}/events/{event_id:uuid}", response_model=EventOut,
            summary="An event as stored (its rule, not its occurrences)")
async def get_event(calendar_id: uuid.UUID, event_id: uuid.UUID, principal: CurrentPrincipal,
                    db: DbSession) -> EventOut:
    return EventOut.model_validate(
        await service.get_event(db, principal, calendar_id, event_id))


@router.patch("/{calendar_id:uuid}/events/{event_id:uuid}", response_model=EventOut,
              summary="Change an event (the whole series)")
async def update_event(calendar_id: uuid.UUID, event_id: uuid.UUID, body: EventUpdate,
                       principal: CurrentPrincipal, db: DbSession) -> EventOut:
    return EventOut.model_validate(
        await service.update_event(db, principal, calendar_id, event_id, body))


@router.put("/{calendar_id:uuid}/events/{event_id:uuid}/occurrences/{recurrence_id}",
            response_model=EventOut, responses={201: {"model": EventOut,
                                                      "description": "The override, created"}},
            summary="Change one occurrence of a recurring event (its original start, with a "
                    "UTC offset): creates or changes its override; status cancelled removes it")
async def change_occurrence(calendar_id: uuid.UUID, event_id: uuid.UUID,
                            recurrence_id: IsoDatetimeAsGiven, body: EventUpdate,
                            principal: CurrentPrincipal, db: DbSession,
                            response: Response) -> EventOut:
    ev, created = await service.change_occurrence(db, principal, calendar_id, event_id,
                                                  recurrence_id, body)
    if created:
        response.status_code = status.HTTP_201_CREATED
    return EventOut.model_validate(ev)


@router.delete("/{calendar_id:uuid}/events/{event_id:uuid}",
               status_code=status.HTTP_204_NO_CONTENT,
               summary="Delete an event (a series with its changed occurrences)")
async def delete_event(calendar_id: uuid.UUID, event_id: uuid.UUID, principal: CurrentPrincipal,
                       db: DbSession) -> Response:
    await service.delete_event(db, principal, calendar_id, event_id)
    return Response(status_code=status.HTTP_204_NO_CONTENT)


@router.post("/{calendar_id:uuid}/import", response_model=ImportOut,
             dependencies=[Depends(sent_once("file"))],
             summary="Import an .ics file: creates its events, updates those whose UID the "
                     "calendar has (idempotent); 422 names what is malformed, 413 over 5 MiB")
async def import_ics(calendar_id: uuid.UUID, principal: CurrentPrincipal, db: DbSession,
                     file: Annotated[UploadFile, File(description="An iCalendar (.ics) file")],
                     ) -> ImportOut:
    raw = await read_capped(file, service.MAX_IMPORT_BYTES, "the iCalendar file")
    return ImportOut(**await service.import_ics(db, principal, calendar_id, raw))


@router.get("/{calendar_id:uuid}/export", summary="The calendar as an iCalendar (.ics) file",
            response_class=Response,
            responses={200: {"content": {"text/calendar": {}}, "description": "The .ics file"}})
async def export_ics(calendar_id: uuid.UUID, principal: CurrentPrincipal,
                     db: DbSession) -> Response:
    cal, data = await service.export_ics(db, principal, calendar_id)
    name = (cal.name.strip() or "calendar")[:60]
    return Response(content=data, media_type="text/calendar; charset=utf-8", headers={
        "Content-Disposition": attachment_disposition(f"{name}.ics")})
