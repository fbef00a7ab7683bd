"""Changed occurrences (RFC 5545 RECURRENCE-ID): imported as overrides, applied by the
range expansion (moved, retitled, cancelled, moved across a DST change), compared with
recurring-ical-events (the oracle) over the same file, exported after their series and
imported back unchanged; orphans and RANGE=THISANDFUTURE are skipped with the reason."""

from __future__ import annotations

import uuid
from datetime import UTC, date, datetime
from itertools import pairwise
from typing import Any
from zoneinfo import ZoneInfo

import httpx
import icalendar
import pytest
import recurring_ical_events

from roost.calendar import agenttools
from roost.config import Settings
from roost.db.engine import Database
from roost.principal import Principal
from tests.calendar.conftest import Headers, make_calendar, make_event

User = tuple[uuid.UUID, Headers]
CAL_TZ = "Europe/Berlin"  # the calendar's zone: all-day dates are read in it
BERLIN = ZoneInfo(CAL_TZ)

# A weekly 09:00 Berlin meeting across the 2027-03-28 DST change, with a moved, a retitled
# and a cancelled occurrence, one moved across the DST change (its RECURRENCE-ID given in
# UTC), one moved out of March; a New York daily series with a floating-time override; an
# all-day yearly series with a DATE override; an orphan and a THISANDFUTURE override.
ICS = """BEGIN:VCALENDAR
VERSION:2.0
PRODID:-//test//overrides//EN
BEGIN:VEVENT
UID:weekly@example.org
DTSTART;TZID=Europe/Berlin:20270301T090000
DTEND;TZID=Europe/Berlin:20270301T100000
RRULE:FREQ=WEEKLY;BYDAY=MO;COUNT=12
SUMMARY:Team meeting
LOCATION:Room 1
END:VEVENT
BEGIN:VEVENT
UID:weekly@example.org
RECURRENCE-ID;TZID=Europe/Berlin:20270308T090000
DTSTART;TZID=Europe/Berlin:20270309T140000
DTEND;TZID=Europe/Berlin:20270309T150000
SUMMARY:Team meeting
LOCATION:Room 1
END:VEVENT
BEGIN:VEVENT
UID:weekly@example.org
RECURRENCE-ID;TZID=Europe/Berlin:20270315T090000
DTSTART;TZID=Europe/Berlin:20270315T090000
DTEND;TZID=Europe/Berlin:20270315T100000
SUMMARY:Quarterly review
LOCATION:Room 1
END:VEVENT
BEGIN:VEVENT
UID:weekly@example.org
RECURRENCE-ID;TZID=Europe/Berlin:20270322T090000
DTSTART;TZID=Europe/Berlin:20270322T090000
DTEND;TZID=Europe/Berlin:20270322T100000
SUMMARY:Team meeting
STATUS:CANCELLED
END:VEVENT
BEGIN:VEVENT
UID:weekly@example.org
RECURRENCE-ID:20270329T070000Z
DTSTART;TZID=Europe/Berlin:20270326T160000
DTEND;TZID=Europe/Berlin:20270326T170000
SUMMARY:Team meeting (Friday before the change)
END:VEVENT
BEGIN:VEVENT
UID:weekly@example.org
RECURRENCE-ID;TZID=Europe/Berlin:20270405T090000
DTSTART;TZID=Europe/Berlin:20270601T090000
DTEND;TZID=Europe/Berlin:20270601T093000
SUMMARY:Team meeting (postponed)
END:VEVENT
BEGIN:VEVENT
UID:daily@example.org
DTSTART;TZID=America/New_York:20270310T083000
DTEND;TZID=America/New_York:20270310T084500
RRULE:FREQ=DAILY;UNTIL=20270320T235959Z
SUMMARY:Standup
END:VEVENT
BEGIN:VEVENT
UID:daily@example.org
RECURRENCE-ID;TZID=America/New_York:20270315T083000
DTSTART;TZID=America/New_York:20270315T113000
DTEND;TZID=America/New_York:20270315T114500
SUMMARY:Standup (late)
END:VEVENT
BEGIN:VEVENT
UID:birthday@example.org
DTSTART;VALUE=DATE:20270320
DTEND;VALUE=DATE:20270321
RRULE:FREQ=YEARLY
SUMMARY:Birthday
TRANSP:TRANSPARENT
END:VEVENT
BEGIN:VEVENT
UID:birthday@example.org
RECURRENCE-ID;VALUE=DATE:20270320
DTSTART;VALUE=DATE:20270327
DTEND;VALUE=DATE:20270328
SUMMARY:Birthday party
TRANSP:TRANSPARENT
END:VEVENT
BEGIN:VEVENT
UID:orphan@example.org
RECURRENCE-ID;TZID=Europe/Berlin:20270310T100000
DTSTART;TZID=Europe/Berlin:20270310T110000
DTEND;TZID=Europe/Berlin:20270310T120000
SUMMARY:Orphan
END:VEVENT
BEGIN:VEVENT
UID:daily@example.org
RECURRENCE-ID;RANGE=THISANDFUTURE;TZID=America/New_York:20270318T083000
DTSTART;TZID=America/New_York:20270318T090000
DTEND;TZID=America/New_York:20270318T091500
SUMMARY:Standup (later from now on)
END:VEVENT
END:VCALENDAR
""".replace("\n", "\r\n").encode()

SERIES, OVERRIDES = 3, 7  # rows the file creates (the orphan and THISANDFUTURE skipped)

RANGES = [
    ("2027-03-01T00:00:00Z", "2027-04-01T00:00:00Z"),  # March
    ("2027-03-25T00:00:00Z", "2027-04-06T00:00:00Z"),  # across the DST change
    ("2027-03-08T07:30:00Z", "2027-03-09T00:00:00Z"),  # the moved occurrence's old time
    ("2027-03-09T12:00:00Z", "2027-03-10T00:00:00Z"),  # and its new one
    ("2027-04-01T00:00:00Z", "2027-07-01T00:00:00Z"),  # postponed out of April into June
    ("2027-01-01T00:00:00Z", "2028-01-01T00:00:00Z"),  # the year
]


def _iso(at: datetime) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _instant(value: Any) -> datetime:
    if isinstance(value, datetime):
        return value.astimezone(UTC)
    assert isinstance(value, date)
    return datetime.combine(value, datetime.min.time(), tzinfo=BERLIN).astimezone(UTC)


def oracle(raw: bytes, start: str, end: str) -> list[tuple[str, str, str, str]]:
    """recurring-ical-events over the file: cancelled occurrences are not shown; the
    skipped components are left out of its input as they are out of the import."""
    cal = icalendar.Calendar.from_ical(raw)
    for comp in list(cal.subcomponents):
        rid = comp.get("RECURRENCE-ID")
        if comp.name == "VEVENT" and (str(comp.get("UID")) == "orphan@example.org" or (
                rid is not None and rid.params.get("RANGE"))):
            cal.subcomponents.remove(comp)
    found = []
    for comp in recurring_ical_events.of(cal).between(
            datetime.fromisoformat(start), datetime.fromisoformat(end)):
        if str(comp.get("STATUS", "")).upper() == "CANCELLED":
            continue
        found.append((str(comp["UID"]), _iso(_instant(comp.decoded("DTSTART"))),
                      _iso(_instant(comp.decoded("DTEND"))), str(comp["SUMMARY"])))
    return sorted(found)


async def _import(client: httpx.AsyncClient, headers: Headers, cal_id: str,
                  raw: bytes) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/calendars/{cal_id}/import",
                             files={"file": ("cal.ics", raw, "text/calendar")}, headers=headers)
    assert resp.status_code == 200, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _occurrences(client: httpx.AsyncClient, headers: Headers, cal_id: str, start: str,
                       end: str) -> list[dict[str, Any]]:
    resp = await client.get(f"/api/v1/calendars/{cal_id}/events", headers=headers,
                            params={"start": start, "end": end})
    assert resp.status_code == 200, resp.text
    found: list[dict[str, Any]] = resp.json()["occurrences"]
    return found


def _tuples(found: list[dict[str, Any]]) -> list[tuple[str, str, str, str]]:
    return sorted((o["uid"], o["start"], o["end"], o["summary"]) for o in found)


async def test_changed_occurrences_are_shown_moved_retitled_or_not_at_all(
        client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    cal = await make_calendar(client, headers, "Imported", CAL_TZ)
    result = await _import(client, headers, cal["id"], ICS)
    assert (result["created"], result["updated"], result["unchanged"]) == (
        SERIES + OVERRIDES, 0, 0)
    assert len(result["skipped"]) == 2
    orphan, future = sorted(result["skipped"], key=lambda r: "THISANDFUTURE" in r)
    assert "UID orphan@example.org" in orphan and "neither in the file nor in the calendar" \
        in orphan and "RECURRENCE-ID 20270310T090000Z" in orphan
    assert "RANGE=THISANDFUTURE" in future and "UID daily@example.org" in future

    march = await _occurrences(client, headers, cal["id"], *RANGES[0])
    weekly = [o for o in march if o["uid"] == "weekly@example.org"]
    assert [(o["start"], o["summary"]) for o in weekly] == [
        ("2027-03-01T08:00:00Z", "Team meeting"),
        ("2027-03-09T13:00:00Z", "Team meeting"),  # moved from Monday 8th to Tuesday 14:00
        ("2027-03-15T08:00:00Z", "Quarterly review"),  # retitled; the 22nd is cancelled
        ("2027-03-26T15:00:00Z", "Team meeting (Friday before the change)"),
    ]
    assert [o["override"] for o in weekly] == [False, True, True, True]
    assert weekly[0]["recurrence_id"] == "2027-03-01T08:00:00Z"
    assert weekly[1]["recurrence_id"] == "2027-03-08T08:00:00Z"
    assert weekly[3]["recurrence_id"] == "2027-03-29T07:00:00Z"  # after the DST change
    assert all(o["recurring"] for o in weekly)
    assert "2027-03-22T08:00:00Z" not in {o["start"] for o in march}
    standup = {o["start"]: o["summary"] for o in march if o["uid"] == "daily@example.org"}
    assert standup["2027-03-15T15:30:00Z"] == "Standup (late)"
    assert "2027-03-15T12:30:00Z" not in standup and len(standup) == 11
    birthday = [(o["start"], o["summary"], o["all_day"]) for o in march
                if o["uid"] == "birthday@example.org"]
    assert birthday == [("2027-03-26T23:00:00Z", "Birthday party", True)]

    # the occurrence moved out of April is in June, and April 5th is empty
    later = await _occurrences(client, headers, cal["id"], *RANGES[4])
    starts = {o["start"]: o["summary"] for o in later if o["uid"] == "weekly@example.org"}
    assert "2027-04-05T07:00:00Z" not in starts
    assert starts["2027-06-01T07:00:00Z"] == "Team meeting (postponed)"
    assert len(starts) == 7  # April 12th to May 17th (COUNT=12), and June 1st


async def test_occurrences_equal_recurring_ical_events_over_the_same_file(
        client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    cal = await make_calendar(client, headers, "Imported", CAL_TZ)
    await _import(client, headers, cal["id"], ICS)
    for start, end in RANGES:
        ours = _tuples(await _occurrences(client, headers, cal["id"], start, end))
        theirs = oracle(ICS, start, end)
        assert ours == theirs, (start, end)
    assert len(oracle(ICS, *RANGES[-1])) > 20


async def test_free_busy_follows_the_changed_occurrences(client: httpx.AsyncClient,
                                                         user: User) -> None:
    _, headers = user
    cal = await make_calendar(client, headers, "Imported", CAL_TZ)
    await _import(client, headers, cal["id"], ICS)
    resp = await client.get("/api/v1/calendars/freebusy", headers=headers, params={
        "start": "2027-03-08T00:00:00Z", "end": "2027-03-10T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["busy"] == [{"start": "2027-03-09T13:00:00Z",
                                    "end": "2027-03-09T14:00:00Z"}]
    resp = await client.get("/api/v1/calendars/freebusy", headers=headers, params={
        "start": "2027-03-22T00:00:00Z", "end": "2027-03-23T00:00:00Z"})
    assert resp.json()["busy"] == []  # cancelled


async def test_export_and_reimport_change_nothing(client: httpx.AsyncClient,
                                                  user: User) -> None:
    _, headers = user
    cal = await make_calendar(client, headers, "Imported", CAL_TZ)
    first = await _import(client, headers, cal["id"], ICS)
    again = await _import(client, headers, cal["id"], ICS)
    assert again == {"created": 0, "updated": 0, "unchanged": SERIES + OVERRIDES,
                     "skipped": first["skipped"]}

    resp = await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)
    assert resp.status_code == 200
    exported = resp.content
    comps = [c for c in icalendar.Calendar.from_ical(exported).walk("VEVENT")]
    assert len(comps) == SERIES + OVERRIDES
    # every override right after its series (or another override of it)
    for before, comp in pairwise(comps):
        if "RECURRENCE-ID" in comp:
            assert str(before["UID"]) == str(comp["UID"])
    rid = next(c for c in comps if str(c["UID"]) == "birthday@example.org"
               and "RECURRENCE-ID" in c).decoded("RECURRENCE-ID")
    assert rid == date(2027, 3, 20)  # DATE, like the series' DTSTART
    assert await _import(client, headers, cal["id"], exported) == {
        "created": 0, "updated": 0, "unchanged": SERIES + OVERRIDES, "skipped": []}

    # into a new calendar: the same occurrences as the source file everywhere
    copy = await make_calendar(client, headers, "Copy", CAL_TZ)
    assert (await _import(client, headers, copy["id"], exported))["created"] == \
        SERIES + OVERRIDES
    for start, end in RANGES:
        assert _tuples(await _occurrences(client, headers, copy["id"], start, end)) == \
            oracle(ICS, start, end)
        assert _tuples(await _occurrences(client, headers, copy["id"], start, end)) == \
            oracle(exported, start, end)


async def test_a_changed_override_is_updated_and_an_orphan_finds_its_series_later(
        client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    cal = await make_calendar(client, headers, "Imported", CAL_TZ)
    await _import(client, headers, cal["id"], ICS)
    changed = ICS.replace(b"SUMMARY:Quarterly review", b"SUMMARY:Annual review")
    result = await _import(client, headers, cal["id"], changed)
    assert (result["created"], result["updated"], result["unchanged"]) == (
        0, 1, SERIES + OVERRIDES - 1)
    found = await _occurrences(client, headers, cal["id"], "2027-03-15T00:00:00Z",
                               "2027-03-16T00:00:00Z")
    assert [o["summary"] for o in found if o["uid"] == "weekly@example.org"] == [
        "Annual review"]

    # an override alone in a file: imported when the calendar has its series
    alone = b"\r\n".join([
        b"BEGIN:VCALENDAR", b"VERSION:2.0", b"PRODID:-//t//EN", b"BEGIN:VEVENT",
        b"UID:daily@example.org", b"RECURRENCE-ID:20270312T133000Z",
        b"DTSTART:20270312T200000Z", b"DTEND:20270312T201500Z", b"SUMMARY:Evening standup",
        b"END:VEVENT", b"BEGIN:VEVENT", b"UID:nowhere@example.org",
        b"RECURRENCE-ID:20270312T133000Z", b"DTSTART:20270312T200000Z",
        b"SUMMARY:No series", b"END:VEVENT", b"END:VCALENDAR", b""])
    result = await _import(client, headers, cal["id"], alone)
    assert result["created"] == 1 and len(result["skipped"]) == 1
    assert "nowhere@example.org" in result["skipped"][0]
    found = await _occurrences(client, headers, cal["id"], "2027-03-12T00:00:00Z",
                               "2027-03-13T00:00:00Z")
    assert [(o["start"], o["summary"]) for o in found if o["uid"] == "daily@example.org"] == [
        ("2027-03-12T20:00:00Z", "Evening standup")]


async def test_deleting_a_series_deletes_its_overrides(client: httpx.AsyncClient,
                                                       user: User) -> None:
    _, headers = user
    cal = await make_calendar(client, headers, "Imported", CAL_TZ)
    await _import(client, headers, cal["id"], ICS)
    march = await _occurrences(client, headers, cal["id"], *RANGES[0])
    moved = next(o for o in march if o["summary"] == "Quarterly review")
    series = next(o for o in march if o["uid"] == "weekly@example.org" and not o["override"])
    base = f"/api/v1/calendars/{cal['id']}/events"
    resp = await client.get(f"{base}/{moved['event_id']}", headers=headers)
    assert resp.status_code == 200
    assert resp.json()["recurrence_id"] == "2027-03-15T08:00:00Z"
    assert resp.json()["recurrence_rule"] is None
    # an override cannot get a rule of its own
    resp = await client.patch(f"{base}/{moved['event_id']}", headers=headers,
                              json={"recurrence_rule": "FREQ=DAILY"})
    assert resp.status_code == 422, resp.text
    assert resp.json()["type"].endswith("invalid-recurrence")

    assert (await client.delete(f"{base}/{series['event_id']}",
                                headers=headers)).status_code == 204
    assert (await client.get(f"{base}/{moved['event_id']}", headers=headers)).status_code == 404
    left = await _occurrences(client, headers, cal["id"], *RANGES[-1])
    assert "weekly@example.org" not in {o["uid"] for o in left}
    assert {o["uid"] for o in left} == {"daily@example.org", "birthday@example.org"}


@pytest.mark.parametrize(("extra", "problem"), [
    (b"RECURRENCE-ID;TZID=Europe/Berlin:20270308T090000", "RECURRENCE-ID appears twice"),
    (b"RECURRENCE-ID:notadate", "RECURRENCE-ID"),
])
async def test_bad_overrides_are_refused_naming_the_problem(
        client: httpx.AsyncClient, user: User, extra: bytes, problem: str) -> None:
    _, headers = user
    cal = await make_calendar(client, headers, "Imported", CAL_TZ)
    bad = ICS.replace(b"RECURRENCE-ID;TZID=Europe/Berlin:20270315T090000", extra)
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import",
                             files={"file": ("bad.ics", bad)}, headers=headers)
    assert resp.status_code == 422, resp.text
    assert problem in resp.json()["detail"] and "UID weekly@example.org" in resp.json()["detail"]


async def test_one_occurrence_is_changed_or_cancelled_over_the_api(
        client: httpx.AsyncClient, user: User, other_user: User) -> None:
    _, headers = user
    cal = await make_calendar(client, headers, "Work", CAL_TZ)
    base = f"/api/v1/calendars/{cal['id']}/events"
    resp = await client.post(base, headers=headers, json={
        "summary": "Standup", "start_time": "2027-03-22T09:00:00+01:00",
        "end_time": "2027-03-22T09:15:00+01:00", "recurrence_rule": "FREQ=DAILY;COUNT=10",
        "location": "Room 2", "google_event_id": "g-1", "category": "work"})
    assert resp.status_code == 201, resp.text
    series = resp.json()
    week = ("2027-03-22T00:00:00Z", "2027-03-29T00:00:00Z")
    before = await _occurrences(client, headers, cal["id"], *week)
    assert len(before) == 7 and before[6]["start"] == "2027-03-28T07:00:00Z"  # after DST

    # move Tuesday's to the afternoon (the path has the occurrence's original start)
    url = f"{base}/{series['id']}/occurrences/2027-03-23T09:00:00+01:00"
    resp = await client.put(url, headers=headers, json={
        "start_time": "2027-03-23T15:00:00+01:00", "end_time": "2027-03-23T15:30:00+01:00",
        "summary": "Standup (afternoon)"})
    assert resp.status_code == 201, resp.text
    moved = resp.json()
    assert moved["recurrence_id"] == "2027-03-23T08:00:00Z" and moved["uid"] == series["uid"]
    assert (moved["location"], moved["category"], moved["google_event_id"]) == (
        "Room 2", "work", None)
    # again: the same override is changed (200), not a second one
    resp = await client.put(url, headers=headers, json={"location": "Room 3"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["id"] == moved["id"] and resp.json()["summary"] == "Standup (afternoon)"
    # cancel Sunday's, after the DST change (addressed in UTC)
    resp = await client.put(f"{base}/{series['id']}/occurrences/2027-03-28T07:00:00Z",
                            headers=headers, json={"status": "cancelled"})
    assert resp.status_code == 201, resp.text
    after = await _occurrences(client, headers, cal["id"], *week)
    assert [(o["start"], o["summary"], o["location"]) for o in after][:3] == [
        ("2027-03-22T08:00:00Z", "Standup", "Room 2"),
        ("2027-03-23T14:00:00Z", "Standup (afternoon)", "Room 3"),
        ("2027-03-24T08:00:00Z", "Standup", "Room 2")]
    assert len(after) == 6 and "2027-03-28T07:00:00Z" not in {o["start"] for o in after}
    busy = (await client.get("/api/v1/calendars/freebusy", headers=headers, params={
        "start": "2027-03-28T00:00:00Z", "end": "2027-03-29T00:00:00Z"})).json()["busy"]
    assert busy == []

    # the export carries the overrides; a fresh import shows the same occurrences
    exported = (await client.get(f"/api/v1/calendars/{cal['id']}/export",
                                 headers=headers)).content
    _, other = other_user  # (google_event_id is unique per owner: another user's calendar)
    copy = await make_calendar(client, other, "Copy", CAL_TZ)
    assert (await _import(client, other, copy["id"], exported))["created"] == 3
    assert _tuples(await _occurrences(client, other, copy["id"], *week)) == _tuples(after)

    # no such occurrence, a non-recurring event, an override addressed as a series, no
    # offset, a rule on one occurrence, another user
    for path, body, code in [
        (f"{series['id']}/occurrences/2027-03-23T09:30:00+01:00", {}, 404),
        (f"{series['id']}/occurrences/2027-04-05T08:00:00Z", {}, 404),  # after COUNT
        (f"{moved['id']}/occurrences/2027-03-23T08:00:00Z", {}, 422),
        (f"{series['id']}/occurrences/2027-03-24T08:00:00", {}, 422),
        (f"{series['id']}/occurrences/2027-03-24T08:00:00Z",
         {"recurrence_rule": "FREQ=DAILY"}, 422),
        (f"{series['id']}/occurrences/2027-03-24T08:00:00Z", {"summary": None}, 422),
        (f"{series['id']}/occurrences/not-a-time", {}, 422),
    ]:
        resp = await client.put(f"{base}/{path}", headers=headers, json=body)
        assert resp.status_code == code, (path, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
    single = await client.post(base, headers=headers, json={
        "summary": "Once", "start_time": "2027-03-25T12:00:00Z",
        "end_time": "2027-03-25T13:00:00Z"})
    resp = await client.put(f"{base}/{single.json()['id']}/occurrences/2027-03-25T12:00:00Z",
                            headers=headers, json={})
    assert resp.status_code == 422 and "not recurring" in resp.json()["detail"]
    resp = await client.put(url, headers=other, json={"summary": "mine"})
    assert resp.status_code == 404


async def _tools(database: Database, settings: Settings, user_id: uuid.UUID) -> Any:
    tools = agenttools.builtin_tools(settings.db_app_role)
    actor = Principal(user_id=user_id, is_admin=False, kind="job")

    async def call(tool_id: uuid.UUID, **arguments: Any) -> dict[str, Any]:
        return await tools[tool_id](database, actor, arguments, None)

    return call


async def test_agent_tools_see_the_changed_occurrences(
        database: Database, client: httpx.AsyncClient, test_settings: Settings,
        user: User) -> None:
    user_id, headers = user
    cal = await make_calendar(client, headers, "Imported", CAL_TZ)
    await _import(client, headers, cal["id"], ICS)
    call = await _tools(database, test_settings, user_id)
    listed = await call(agenttools.LIST_EVENTS_ID, start="2027-03-08T00:00:00Z",
                        end="2027-03-10T00:00:00Z")
    assert [(o["summary"], o["start"]) for o in listed["occurrences"]
            if o["summary"].startswith("Team")] == [("Team meeting", "2027-03-09T13:00:00Z")]
    # Monday 22nd 08:00-09:00Z is free (cancelled); the moved Tuesday hour is busy
    slots = await call(agenttools.FIND_FREE_SLOT_ID, start="2027-03-22T08:00:00Z",
                       end="2027-03-22T09:00:00Z", duration_minutes=60)
    assert [s["start"] for s in slots["slots"]] == ["2027-03-22T08:00:00Z"]
    slots = await call(agenttools.FIND_FREE_SLOT_ID, start="2027-03-09T13:00:00Z",
                       end="2027-03-09T14:30:00Z", duration_minutes=60)
    assert slots["slots"] == []


async def test_retitling_one_occurrence_of_a_cancelled_series_keeps_it_listed(
        client: httpx.AsyncClient, user: User) -> None:
    """A cancelled series' occurrences are listed as cancelled; retitling one (its
    override copies the series' status) keeps it listed with its new title: only an
    explicit cancel of an occurrence of a live series removes it."""
    _, h = user
    cal = (await make_calendar(client, h))["id"]
    ev = await make_event(client, h, cal, summary="C", status="cancelled",
                          start_time="2027-03-01T09:00:00Z", end_time="2027-03-01T10:00:00Z",
                          recurrence_rule="FREQ=WEEKLY;COUNT=6")

    async def summaries() -> list[str]:
        r = await client.get(f"/api/v1/calendars/{cal}/events", headers=h, params={
            "start": "2027-03-01T00:00:00Z", "end": "2027-04-30T00:00:00Z"})
        assert r.status_code == 200, r.text
        return [o["summary"] for o in r.json()["occurrences"]]

    assert await summaries() == ["C"] * 6
    r = await client.put(f"/api/v1/calendars/{cal}/events/{ev['id']}/occurrences/"
                         "2027-03-08T09:00:00Z", json={"summary": "C retitled"}, headers=h)
    assert r.status_code == 201, r.text
    assert await summaries() == ["C", "C retitled", "C", "C", "C", "C"]


SINGLE_MOVED = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//test//single//EN\r
BEGIN:VEVENT\r
UID:single@example.org\r
DTSTART:20270110T090000Z\r
DTEND:20270110T100000Z\r
SUMMARY:Dentist\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:single@example.org\r
RECURRENCE-ID:20270110T090000Z\r
DTSTART:20270120T090000Z\r
DTEND:20270120T100000Z\r
SUMMARY:Dentist moved\r
END:VEVENT\r
END:VCALENDAR\r
"""


async def _summaries_on_the_10th(client: httpx.AsyncClient, headers: Headers,
                                 cal_id: str) -> tuple[list[str], list[str]]:
    """The summaries on 2027-01-10 of a day query and of a month query."""
    day = await _occurrences(client, headers, cal_id, "2027-01-10T00:00:00Z",
                             "2027-01-11T00:00:00Z")
    month = await _occurrences(client, headers, cal_id, "2027-01-01T00:00:00Z",
                               "2027-02-01T00:00:00Z")
    return ([o["summary"] for o in day],
            [o["summary"] for o in month if o["start"].startswith("2027-01-10")])


async def test_an_imported_change_of_a_single_event_is_skipped_and_every_range_agrees(
        client: httpx.AsyncClient, user: User) -> None:
    """A file "moving" a single event with a RECURRENCE-ID: the change is listed in
    `skipped` (the API refuses it: not recurring) and the event is where it is, in a day
    query, a month query and free/busy alike.  It was stored: a day query showed the event
    at its old time, a month query only at the new one."""
    _, headers = user
    cal = await make_calendar(client, headers)
    result = await _import(client, headers, cal["id"], SINGLE_MOVED)
    assert result["created"] == 1, result
    assert len(result["skipped"]) == 1 and "not recurring" in result["skipped"][0], result
    day, month = await _summaries_on_the_10th(client, headers, cal["id"])
    assert day == month == ["Dentist"], (day, month)
    busy = [(b["start"], b["end"]) for start, end in (("2027-01-10", "2027-01-11"),
                                                      ("2027-01-01", "2027-02-01"))
            for b in (await client.get("/api/v1/calendars/freebusy", headers=headers, params={
                "start": f"{start}T00:00:00Z", "end": f"{end}T00:00:00Z"})).json()["busy"]]
    assert busy == [("2027-01-10T09:00:00Z", "2027-01-10T10:00:00Z")] * 2, busy


async def test_removing_a_series_rule_deletes_its_changed_occurrences(
        client: httpx.AsyncClient, user: User) -> None:
    """A series with a moved occurrence made a single event (PATCH `recurrence_rule`
    null): its changed occurrences go with the rule, and a day and a month query agree.
    The override stayed: the day query showed the event, the month query only the moved
    occurrence."""
    _, headers = user
    cal = await make_calendar(client, headers)
    ev = await make_event(client, headers, cal["id"], summary="S",
                          start_time="2027-01-10T09:00:00Z", end_time="2027-01-10T10:00:00Z",
                          recurrence_rule="FREQ=DAILY;COUNT=3")
    base = f"/api/v1/calendars/{cal['id']}/events"
    resp = await client.put(f"{base}/{ev['id']}/occurrences/2027-01-10T09:00:00Z",
                            headers=headers, json={"start_time": "2027-01-20T09:00:00Z",
                                                   "end_time": "2027-01-20T10:00:00Z",
                                                   "summary": "moved"})
    assert resp.status_code == 201, resp.text
    override_id = resp.json()["id"]
    resp = await client.patch(f"{base}/{ev['id']}", headers=headers,
                              json={"recurrence_rule": None})
    assert resp.status_code == 200, resp.text
    assert (await client.get(f"{base}/{override_id}", headers=headers)).status_code == 404
    day, month = await _summaries_on_the_10th(client, headers, cal["id"])
    assert day == month == ["S"], (day, month)


async def test_reimporting_a_series_without_its_rule_deletes_its_changed_occurrences(
        client: httpx.AsyncClient, user: User) -> None:
    """A file making a known series single (no RRULE) drops its overrides, as a PATCH
    does: the event is then where the file says, for every range."""
    _, headers = user
    cal = await make_calendar(client, headers)
    series = SINGLE_MOVED.replace(b"SUMMARY:Dentist\r\n",
                                  b"SUMMARY:Dentist\r\nRRULE:FREQ=DAILY;COUNT=3\r\n")
    first = await _import(client, headers, cal["id"], series)
    assert (first["created"], first["skipped"]) == (2, []), first
    # The file again without the override, and the series without its rule.
    single = SINGLE_MOVED[:SINGLE_MOVED.rindex(b"BEGIN:VEVENT")] + b"END:VCALENDAR\r\n"
    again = await _import(client, headers, cal["id"], single)
    assert (again["updated"], again["skipped"]) == (1, []), again
    day, month = await _summaries_on_the_10th(client, headers, cal["id"])
    assert day == month == ["Dentist"], (day, month)
    rest = await _occurrences(client, headers, cal["id"], "2027-01-01T00:00:00Z",
                              "2027-02-01T00:00:00Z")
    assert [o["summary"] for o in rest] == ["Dentist"], rest


async def test_one_occurrence_changed_twice_as_a_date_and_a_date_time_is_a_422(
        client: httpx.AsyncClient, user: User) -> None:
    """Two overrides of one occurrence of a Tokyo all-day series, one RECURRENCE-ID a DATE
    and the other the same instant in UTC, are "the same RECURRENCE-ID twice": a 422
    naming it.  They met only at the database's unique index, a 409 about columns."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
           b"BEGIN:VEVENT\r\nUID:d\r\nDTSTART;VALUE=DATE:20270110\r\n"
           b"DTEND;VALUE=DATE:20270111\r\nX-ROOST-TIMEZONE:Asia/Tokyo\r\n"
           b"RRULE:FREQ=DAILY;COUNT=5\r\nEND:VEVENT\r\n"
           b"BEGIN:VEVENT\r\nUID:d\r\nRECURRENCE-ID;VALUE=DATE:20270112\r\n"
           b"DTSTART;VALUE=DATE:20270112\r\nSUMMARY:one\r\nEND:VEVENT\r\n"
           b"BEGIN:VEVENT\r\nUID:d\r\nRECURRENCE-ID:20270111T150000Z\r\n"
           b"DTSTART:20270111T160000Z\r\nSUMMARY:two\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                             files={"file": ("c.ics", raw, "text/calendar")})
    assert resp.status_code == 422, resp.text
    assert resp.json()["type"].endswith("/invalid-icalendar"), resp.text
    detail = resp.json()["detail"]
    assert "VEVENT #3 (UID d): RECURRENCE-ID 20270111T150000Z appears twice" in detail, detail
