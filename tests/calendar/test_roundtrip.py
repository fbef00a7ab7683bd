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

from tests.calendar.conftest import Headers, make_calendar, make_event

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
    ({"category": "a\r\nb"}, {"category": "a\nb"}),  # X-ROOST-CATEGORY reads back LF
    ({"event_type": "a\rb"}, {"event_type": "a\nb"}),
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


async def test_sub_second_times_are_stored_as_whole_seconds_and_read_back_unchanged(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers]) -> None:
    """iCalendar has no fractions of a second: an event is stored in whole seconds, so its
    export reads back unchanged (it was counted updated)."""
    _, headers = user
    cal = await make_calendar(client, headers)
    made = await make_event(client, headers, cal["id"], summary="x",
                            start_time="2027-03-01T09:00:00.5Z",
                            end_time="2027-03-01T10:00:00.25Z",
                            rdates=["2027-03-05T09:00:00.75Z"])
    assert (made["start_time"], made["end_time"], made["rdates"]) == (
        "2027-03-01T09:00:00Z", "2027-03-01T10:00:00Z", ["2027-03-05T09:00:00Z"])
    counts = await _round_trip(client, headers, cal["id"])
    assert counts == {"created": 0, "updated": 0, "unchanged": 1, "skipped": []}


async def test_an_all_day_event_in_another_zone_than_its_calendar_reads_back_unchanged(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers]) -> None:
    """An all-day event's DATE values are days of its own zone: an export names the zone
    (X-ROOST-TIMEZONE) when it is not the calendar's, so the event keeps its zone and days
    (it came back a UTC event nine hours later)."""
    _, headers = user
    cal = await make_calendar(client, headers, timezone="UTC")
    ev = await make_event(client, headers, cal["id"], summary="Tokyo holiday", all_day=True,
                          timezone="Asia/Tokyo", start_time="2027-03-01T00:00:00+09:00",
                          end_time="2027-03-02T00:00:00+09:00")
    counts = await _round_trip(client, headers, cal["id"])
    after = (await client.get(f"/api/v1/calendars/{cal['id']}/events/{ev['id']}",
                              headers=headers)).json()
    assert (after["timezone"], after["start_time"], after["end_time"]) == (
        ev["timezone"], ev["start_time"], ev["end_time"])
    assert counts == {"created": 0, "updated": 0, "unchanged": 1, "skipped": []}


async def test_an_unknown_x_roost_timezone_is_a_422(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers]) -> None:
    _, headers = user
    cal = await make_calendar(client, headers)
    ics = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:x\r\nBEGIN:VEVENT\r\nUID:a\r\n"
           "DTSTART;VALUE=DATE:20270301\r\nX-ROOST-TIMEZONE:Mars/Olympus\r\nEND:VEVENT\r\n"
           "END:VCALENDAR\r\n")
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                             files={"file": ("a.ics", ics.encode(), "text/calendar")})
    assert resp.status_code == 422, resp.text
    assert "X-ROOST-TIMEZONE" in resp.text


async def test_a_changed_day_of_an_all_day_series_in_another_zone_is_not_duplicated(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers]) -> None:
    """An override's DATE RECURRENCE-ID is a day of its series' zone: re-importing the
    export (with or without the series) finds the existing override instead of moving the
    series and adding a second one."""
    _, headers = user
    cal = await make_calendar(client, headers, timezone="America/Los_Angeles")
    ev = await make_event(client, headers, cal["id"], summary="Holiday", all_day=True,
                          timezone="Pacific/Auckland", start_time="2027-03-01T00:00:00+13:00",
                          end_time="2027-03-02T00:00:00+13:00",
                          recurrence_rule="FREQ=WEEKLY;COUNT=5")
    changed = await client.put(
        f"/api/v1/calendars/{cal['id']}/events/{ev['id']}/occurrences/2027-03-07T11:00:00Z",
        json={"summary": "moved"}, headers=headers)
    assert changed.status_code == 201, changed.text
    counts = await _round_trip(client, headers, cal["id"])
    assert counts == {"created": 0, "updated": 0, "unchanged": 2, "skipped": []}
    # The override alone (its series only in the calendar): read in the series' zone too.
    exported = await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)
    parsed = icalendar.Calendar.from_ical(exported.content)
    parsed.subcomponents = [c for c in parsed.subcomponents
                            if c.name != "VEVENT" or c.get("RECURRENCE-ID") is not None]
    alone = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers, files={
        "file": ("o.ics", parsed.to_ical(), "text/calendar")})
    assert alone.json() == {"created": 0, "updated": 0, "unchanged": 1, "skipped": []}
    listed = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                              params={"start": "2027-02-28T00:00:00Z",
                                      "end": "2027-04-05T00:00:00Z"})
    assert [o["summary"] for o in listed.json()["occurrences"]] == [
        "Holiday", "moved", "Holiday", "Holiday", "Holiday"]


async def test_a_rule_with_zero_padded_numbers_reads_back_unchanged(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers]) -> None:
    """INTERVAL=002 is exported as INTERVAL=2: the same rule, counted unchanged."""
    _, headers = user
    cal = await make_calendar(client, headers)
    await make_event(client, headers, cal["id"], summary="x", start_time="2027-03-01T09:00:00Z",
                     end_time="2027-03-01T10:00:00Z",
                     recurrence_rule="FREQ=MONTHLY;INTERVAL=002;BYDAY=+01MO;COUNT=010")
    counts = await _round_trip(client, headers, cal["id"])
    assert counts == {"created": 0, "updated": 0, "unchanged": 1, "skipped": []}
