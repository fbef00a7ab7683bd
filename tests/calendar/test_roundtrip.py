"""A 1,000-event iCalendar file imported and exported again: no semantic difference
(components compared after parsing: every property Roost imports, as values)."""

from __future__ import annotations

import random
import uuid
from datetime import UTC, date, datetime, timedelta
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import icalendar
import pytest

from tests.calendar.conftest import Headers, make_calendar

ZONES = ["Europe/Berlin", "America/New_York", "Asia/Tokyo", "UTC", "Australia/Sydney"]
RULES = ["FREQ=WEEKLY;BYDAY=MO,WE", "FREQ=DAILY;COUNT=10", "FREQ=MONTHLY;BYMONTHDAY=15",
         "FREQ=YEARLY", "FREQ=WEEKLY;INTERVAL=2;UNTIL=20281231T230000Z",
         "FREQ=MONTHLY;BYDAY=-1FR"]


def source_file(n: int = 1000, seed: int = 18) -> bytes:
    rnd = random.Random(seed)
    cal = icalendar.Calendar()
    cal.add("PRODID", "-//test//round trip//EN")
    cal.add("VERSION", "2.0")
    for i in range(n):
        ev = icalendar.Event()
        ev.add("UID", f"ev-{i}-{uuid.UUID(int=rnd.getrandbits(128))}@example.org")
        ev.add("DTSTAMP", datetime(2027, 1, 1, tzinfo=UTC))
        ev.add("SUMMARY", f"Event {i} - ünïcode, commas; and semicolons")
        day = date(2027, 1, 1) + timedelta(days=rnd.randrange(365))
        all_day = i % 10 == 0
        if all_day:
            start: Any = day
            end: Any = day + timedelta(days=rnd.choice([1, 2, 3]))
        else:
            tz = ZoneInfo(rnd.choice(ZONES))
            start = datetime(day.year, day.month, day.day, rnd.randrange(7, 20),
                             rnd.choice([0, 15, 30, 45]), tzinfo=tz)
            end = start + timedelta(minutes=rnd.choice([15, 30, 60, 90]))
        ev.add("DTSTART", start)
        ev.add("DTEND", end)
        if i % 3 == 0:
            ev.add("DESCRIPTION", f"Line one\nline two of {i}")
        if i % 4 == 0:
            ev.add("LOCATION", f"Room {i % 17}")
        if i % 2 == 0:
            ev.add("RRULE", icalendar.vRecur.from_ical(rnd.choice(RULES)))
            if i % 6 == 0:
                ev.add("EXDATE", [start + timedelta(days=7 * k) for k in (1, 2)])
            if i % 8 == 0:
                ev.add("RDATE", [start + timedelta(days=3)])
        ev.add("CATEGORIES", rnd.sample(["work", "home", "health", "travel"], rnd.randrange(1, 3)))
        for k in range(i % 3):
            ev.add("ATTENDEE", icalendar.vCalAddress(f"mailto:p{k}-{i}@example.org"),
                   parameters={"CN": f"Person {k}", "ROLE": "REQ-PARTICIPANT"})
        ev.add("STATUS", rnd.choice(["CONFIRMED", "TENTATIVE"]))
        ev.add("TRANSP", rnd.choice(["OPAQUE", "TRANSPARENT"]))
        if i % 5 == 0:
            alarm = icalendar.Alarm()
            alarm.add("ACTION", "DISPLAY")
            alarm.add("DESCRIPTION", "reminder")
            alarm.add("TRIGGER", timedelta(minutes=-rnd.choice([5, 10, 30])))
            ev.add_component(alarm)
        cal.add_component(ev)
    cal.add_missing_timezones()
    data: bytes = cal.to_ical()
    return data


def _when(value: Any) -> Any:
    if isinstance(value, datetime):
        zone = getattr(value.tzinfo, "key", None)
        return ("dt", value.astimezone(UTC), "UTC" if zone in (None, "UTC") else zone)
    return ("date", value)


def _dates(comp: Any, name: str) -> list[Any]:
    value = comp.get(name)
    if value is None:
        return []
    return sorted((_when(d.dt) for item in (value if isinstance(value, list) else [value])
                   for d in item.dts), key=repr)


def _list(comp: Any, name: str) -> list[Any]:
    value = comp.get(name)
    return [] if value is None else value if isinstance(value, list) else [value]


def normalise(raw: bytes) -> dict[str, dict[str, Any]]:
    out: dict[str, dict[str, Any]] = {}
    for comp in icalendar.Calendar.from_ical(raw).walk("VEVENT"):
        triggers = [a.decoded("TRIGGER") for a in comp.walk("VALARM")]
        cats = [str(c) for item in _list(comp, "CATEGORIES") for c in item.cats]
        out[str(comp["UID"])] = {
            "summary": str(comp.get("SUMMARY")),
            "description": str(comp["DESCRIPTION"]) if "DESCRIPTION" in comp else None,
            "location": str(comp["LOCATION"]) if "LOCATION" in comp else None,
            "start": _when(comp.decoded("DTSTART")),
            "end": _when(comp.decoded("DTEND")),
            "rrule": dict(comp["RRULE"]) if "RRULE" in comp else None,
            "exdate": _dates(comp, "EXDATE"),
            "rdate": _dates(comp, "RDATE"),
            "categories": cats,
            "attendees": sorted((str(a), str(a.params.get("CN")), str(a.params.get("ROLE")))
                                for a in _list(comp, "ATTENDEE")),
            "status": str(comp.get("STATUS", "CONFIRMED")),
            "transp": str(comp.get("TRANSP", "OPAQUE")),
            "alarm": triggers[:1],
        }
    return out


async def test_a_thousand_events_round_trip_without_semantic_difference(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers]) -> None:
    _, headers = user
    cal = await make_calendar(client, headers, "Imported", "Europe/Berlin")
    source = source_file()
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import",
                             files={"file": ("big.ics", source, "text/calendar")},
                             headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["created"] == 1000
    exported = await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)
    assert exported.status_code == 200
    before, after = normalise(source), normalise(exported.content)
    assert len(before) == 1000
    assert before.keys() == after.keys()
    differing = [uid for uid in before if before[uid] != after[uid]]
    assert not differing, (differing[:3], before[differing[0]], after[differing[0]])
    # and importing the export changes nothing
    again = await client.post(f"/api/v1/calendars/{cal['id']}/import",
                              files={"file": ("again.ics", exported.content)}, headers=headers)
    assert again.json() == {"created": 0, "updated": 0, "unchanged": 1000, "skipped": []}


async def _round_trip(client: httpx.AsyncClient, headers: Headers, cal_id: str
                      ) -> dict[str, Any]:
    """Export the calendar and import the file into the same calendar: the counts."""
    exported = await client.get(f"/api/v1/calendars/{cal_id}/export", headers=headers)
    assert exported.status_code == 200, exported.text
    again = await client.post(f"/api/v1/calendars/{cal_id}/import", headers=headers, files={
        "file": ("cal.ics", exported.content, "text/calendar")})
    assert again.status_code == 200, again.text
    counts: dict[str, Any] = again.json()
    return counts


EVENT = {"summary": "s", "start_time": "2027-01-04T09:00:00Z",
         "end_time": "2027-01-04T10:00:00Z"}


@pytest.mark.parametrize("fields", [
    {"semantic_tags": ["deep-work"]},                   # no category: not "general" as a tag
    {"category": "work", "semantic_tags": ["focus"]},   # the category is not made a tag
    {"category": "work"},                               # no tags: not ["work"]
    {"semantic_tags": []},
    {"category": "a,b;c", "semantic_tags": ["x,y", "new\nline", "back\\slash", '"q"', "general"]},
])
async def test_export_and_reimport_keep_an_events_category_and_tags(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
        fields: dict[str, Any]) -> None:
    """A calendar's own export reads back unchanged, category and tags included
    (X-ROOST-CATEGORY and X-ROOST-TAGS; CATEGORIES stays for other clients)."""
    _, headers = user
    cal = await make_calendar(client, headers)
    made = await client.post(f"/api/v1/calendars/{cal['id']}/events",
                             json={**EVENT, **fields}, headers=headers)
    assert made.status_code == 201, made.text
    exported = await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)
    (comp,) = icalendar.Calendar.from_ical(exported.content).walk("VEVENT")
    if fields.get("semantic_tags"):
        assert str(comp["CATEGORIES"].cats[0]) == made.json()["category"]
    counts = await _round_trip(client, headers, cal["id"])
    got = (await client.get(f"/api/v1/calendars/{cal['id']}/events/{made.json()['id']}",
                            headers=headers)).json()
    assert (got["category"], got["semantic_tags"]) == (
        made.json()["category"], made.json()["semantic_tags"])
    assert counts == {"created": 0, "updated": 0, "unchanged": 1, "skipped": []}


@pytest.mark.parametrize(("fields", "stored"), [
    ({"summary": "line one\r\nline two"}, {"summary": "line one\nline two"}),
    ({"description": "a\rb"}, {"description": "a\nb"}),
    ({"google_event_id": "g\r\n1"}, {"google_event_id": "g\n1"}),
    ({"location": ""}, {"location": None}),
    ({"description": ""}, {"description": None}),
])
async def test_free_text_is_stored_as_an_export_reads_it_back(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
        fields: dict[str, Any], stored: dict[str, Any]) -> None:
    """Line breaks are stored as LF (iCalendar TEXT has no CR) and an empty description or
    location as none: export and re-import then change nothing."""
    _, headers = user
    cal = await make_calendar(client, headers)
    made = await client.post(f"/api/v1/calendars/{cal['id']}/events",
                             json={**EVENT, **fields}, headers=headers)
    assert made.status_code == 201, made.text
    assert {k: made.json()[k] for k in stored} == stored
    counts = await _round_trip(client, headers, cal["id"])
    got = (await client.get(f"/api/v1/calendars/{cal['id']}/events/{made.json()['id']}",
                            headers=headers)).json()
    assert {k: got[k] for k in stored} == stored
    assert counts == {"created": 0, "updated": 0, "unchanged": 1, "skipped": []}


@pytest.mark.parametrize("uid", ["meeting\r\n42", "a\tb", "a\x7fb"])
async def test_a_uid_with_a_control_character_is_a_422(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], uid: str) -> None:
    """A UID with a control character would be exported as another UID (a CR written as a
    newline): re-importing would duplicate the event. Refused instead."""
    _, headers = user
    cal = await make_calendar(client, headers)
    made = await client.post(f"/api/v1/calendars/{cal['id']}/events",
                             json={**EVENT, "uid": uid}, headers=headers)
    assert made.status_code == 422, made.text
    assert "uid" in made.text
