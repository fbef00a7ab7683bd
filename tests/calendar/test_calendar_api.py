"""The calendar API: CRUD, occurrences of a range, free/busy, import/export, bad input and
another tenant's ids."""

from __future__ import annotations

import uuid
from typing import Any
from urllib.parse import unquote

import httpx
import icalendar
import pytest
from sqlalchemy import update

from roost.calendar import batch, ical, recurrence
from roost.calendar.models import Event
from roost.db.engine import Database
from tests.calendar.conftest import Headers, make_calendar, make_event
from tests.support.identity import make_user

User = tuple[uuid.UUID, Headers]


async def test_calendar_crud_and_a_recurring_event_across_dst(client: httpx.AsyncClient,
                                                               user: User) -> None:
    _, headers = user
    cal = await make_calendar(client, headers, "Work", "America/New_York")
    assert cal["timezone"] == "America/New_York"
    listed = (await client.get("/api/v1/calendars", headers=headers)).json()
    assert [c["name"] for c in listed] == ["Work"]
    ev = await make_event(client, headers, cal["id"], summary="Standup",
                          start_time="2027-03-08T09:00:00-05:00",
                          end_time="2027-03-08T09:15:00-05:00",
                          recurrence_rule="FREQ=WEEKLY;BYDAY=MO",
                          exdates=["2027-03-22T09:00:00-04:00"],
                          attendees=[{"email": "bob@example.org", "name": "Bob"}],
                          movability_score=0.2, is_movable=False, category="work")
    assert ev["timezone"] == "America/New_York" and ev["uid"].endswith("@roost")
    resp = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                            params={"start": "2027-03-01T00:00:00Z", "end": "2027-04-01T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    starts = [o["start"] for o in resp.json()["occurrences"]]
    assert starts == ["2027-03-08T14:00:00Z", "2027-03-15T13:00:00Z", "2027-03-29T13:00:00Z"]
    assert resp.json()["truncated"] is False

    resp = await client.patch(f"/api/v1/calendars/{cal['id']}/events/{ev['id']}",
                              json={"recurrence_rule": "FREQ=WEEKLY;BYDAY=MO;COUNT=2",
                                    "exdates": []}, headers=headers)
    assert resp.status_code == 200, resp.text
    resp = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                            params={"start": "2027-03-01T00:00:00Z", "end": "2027-04-01T00:00:00Z"})
    assert len(resp.json()["occurrences"]) == 2

    resp = await client.patch(f"/api/v1/calendars/{cal['id']}", json={"name": "Job"},
                              headers=headers)
    assert resp.status_code == 200 and resp.json()["name"] == "Job"
    assert (await client.delete(f"/api/v1/calendars/{cal['id']}/events/{ev['id']}",
                                headers=headers)).status_code == 204
    assert (await client.delete(f"/api/v1/calendars/{cal['id']}",
                                headers=headers)).status_code == 204
    assert (await client.get(f"/api/v1/calendars/{cal['id']}",
                             headers=headers)).status_code == 404


async def test_freebusy_merges_over_all_calendars(client: httpx.AsyncClient, user: User,
                                                  other_user: User) -> None:
    _, headers = user
    a = await make_calendar(client, headers, "A")
    b = await make_calendar(client, headers, "B")
    await make_event(client, headers, a["id"], summary="x", start_time="2027-05-03T09:00:00Z",
                     end_time="2027-05-03T10:00:00Z", recurrence_rule="FREQ=DAILY;COUNT=2")
    await make_event(client, headers, b["id"], summary="y", start_time="2027-05-03T09:30:00Z",
                     end_time="2027-05-03T11:00:00Z")
    await make_event(client, headers, b["id"], summary="free", start_time="2027-05-03T12:00:00Z",
                     end_time="2027-05-03T13:00:00Z", transparent=True)
    await make_event(client, headers, b["id"], summary="off", start_time="2027-05-03T14:00:00Z",
                     end_time="2027-05-03T15:00:00Z", status="cancelled")
    # another user's busy time is not ours
    _, other = other_user
    c = await make_calendar(client, other, "C")
    await make_event(client, other, c["id"], summary="z", start_time="2027-05-03T16:00:00Z",
                     end_time="2027-05-03T17:00:00Z")
    resp = await client.get("/api/v1/calendars/freebusy", headers=headers,
                            params={"start": "2027-05-03T00:00:00Z", "end": "2027-05-05T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["busy"] == [
        {"start": "2027-05-03T09:00:00Z", "end": "2027-05-03T11:00:00Z"},
        {"start": "2027-05-04T09:00:00Z", "end": "2027-05-04T10:00:00Z"}]
    assert resp.json()["free"][0] == {"start": "2027-05-03T00:00:00Z",
                                      "end": "2027-05-03T09:00:00Z"}
    agenda = (await client.get("/api/v1/calendars/agenda", headers=headers, params={
        "start": "2027-05-03T00:00:00Z", "end": "2027-05-04T00:00:00Z"})).json()
    assert [o["summary"] for o in agenda["occurrences"]] == ["x", "y", "free", "off"]


@pytest.mark.parametrize(("params", "message"), [
    ({}, None),  # the range is required
    ({"start": "2027-01-01T00:00:00Z"}, None),
    ({"start": "2027-01-01T00:00:00Z", "end": "2029-01-01T00:00:00Z"}, "366 days"),
    ({"start": "2027-01-02T00:00:00Z", "end": "2027-01-01T00:00:00Z"}, "after start"),
    ({"start": "2027-01-01T00:00:00", "end": "2027-01-02T00:00:00"}, "UTC offset"),
    ({"start": "2027-01-01T00:00:00Z", "end": "2027-01-02T00:00:00Z", "limit": "100000"}, None),
])
async def test_unbounded_or_huge_ranges_are_refused(client: httpx.AsyncClient, user: User,
                                                    params: dict[str, str],
                                                    message: str | None) -> None:
    _, headers = user
    cal = await make_calendar(client, headers)
    for path in (f"/api/v1/calendars/{cal['id']}/events", "/api/v1/calendars/agenda",
                 "/api/v1/calendars/freebusy"):
        if "limit" in params and path.endswith("freebusy"):
            continue
        resp = await client.get(path, params=params, headers=headers)
        assert resp.status_code == 422, (path, resp.text)
        if message:
            assert message in resp.json()["detail"]


@pytest.mark.parametrize(("body", "message"), [
    ({"recurrence_rule": "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=31"}, "no occurrence"),
    ({"recurrence_rule": "FREQ=WEEKLY;BYDAY=FUNDAY"}, "BYDAY"),
    ({"recurrence_rule": "FREQ=SECONDLY"}, "not supported"),
    ({"timezone": "Mars/Olympus"}, "unknown time zone"),
    ({"end_time": "2027-01-01T08:00:00Z"}, "before"),
    # Weekly occurrences each lasting millennia: every query of the calendar walked them
    # all (17 s a request), then failed.
    ({"end_time": "9999-12-29T01:00:00Z", "recurrence_rule": "FREQ=WEEKLY"}, "at most 366 days"),
])
async def test_bad_events_are_refused_naming_the_problem(client: httpx.AsyncClient, user: User,
                                                         body: dict[str, Any],
                                                         message: str) -> None:
    _, headers = user
    cal = await make_calendar(client, headers)
    full = {"summary": "x", "start_time": "2027-01-01T09:00:00Z",
            "end_time": "2027-01-01T10:00:00Z", **body}
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/events", json=full, headers=headers)
    assert resp.status_code == 422, resp.text
    assert message in resp.json()["detail"]


async def test_a_single_event_may_last_millennia_and_its_calendar_stays_readable(
        client: httpx.AsyncClient, user: User) -> None:
    """Only recurring events are bounded: one event from 2027 to 9999 is one occurrence,
    in any range it overlaps, and ranges before it or near the calendar's first instant
    answer at once (a series' look-back once overflowed below year 1: a 500)."""
    _, headers = user
    cal = await make_calendar(client, headers)
    await make_event(client, headers, cal["id"], summary="Era", start_time="2027-01-01T00:00:00Z",
                     end_time="9999-12-29T00:00:00Z")
    await make_event(client, headers, cal["id"], summary="Season", start_time="0001-01-04T00:00:00Z",
                     end_time="0001-10-01T00:00:00Z", recurrence_rule="FREQ=YEARLY;COUNT=2")
    for start, end, summaries in (("5000-01-01T00:00:00Z", "5000-02-01T00:00:00Z", ["Era"]),
                                  ("0001-01-03T00:00:00Z", "0001-02-01T00:00:00Z", ["Season"])):
        resp = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                                params={"start": start, "end": end})
        assert resp.status_code == 200, resp.text
        assert [o["summary"] for o in resp.json()["occurrences"]] == summaries


async def test_an_extra_date_whose_occurrence_ends_after_9999_is_kept_readable(
        client: httpx.AsyncClient, user: User) -> None:
    """An RDATE in range whose occurrence (the event's duration after it) ends past year
    9999: the series' end overflowed, a 500; now it is a series without a known end, as a
    rule whose last occurrence ends past 9999 already was, and a range that would hold
    that occurrence is the usual clear 422."""
    _, headers = user
    cal = await make_calendar(client, headers)
    await make_event(client, headers, cal["id"], summary="Long", start_time="2027-01-01T00:00:00Z",
                     end_time="2027-06-01T00:00:00Z", rdates=["9999-12-29T00:00:00Z"])
    url = f"/api/v1/calendars/{cal['id']}/events"
    resp = await client.get(url, headers=headers, params={"start": "2027-02-01T00:00:00Z",
                                                          "end": "2027-03-01T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    assert [o["summary"] for o in resp.json()["occurrences"]] == ["Long"], resp.json()
    late = await client.get(url, headers=headers, params={"start": "9999-12-01T00:00:00Z",
                                                          "end": "9999-12-30T00:00:00Z"})
    assert late.status_code == 422 and "after the year 9999" in late.json()["detail"], late.text


async def test_another_tenants_ids_are_404(client: httpx.AsyncClient, user: User,
                                           other_user: User) -> None:
    _, headers = user
    _, other = other_user
    cal = await make_calendar(client, headers)
    ev = await make_event(client, headers, cal["id"], summary="secret",
                          start_time="2027-01-01T09:00:00Z", end_time="2027-01-01T10:00:00Z")
    base = f"/api/v1/calendars/{cal['id']}"
    rng = {"start": "2027-01-01T00:00:00Z", "end": "2027-01-02T00:00:00Z"}
    for method, path, kwargs in [
        ("GET", base, {}), ("PATCH", base, {"json": {"name": "mine"}}), ("DELETE", base, {}),
        ("GET", f"{base}/events", {"params": rng}),
        ("POST", f"{base}/events", {"json": {"summary": "x", "start_time": rng["start"],
                                             "end_time": rng["end"]}}),
        ("GET", f"{base}/events/{ev['id']}", {}),
        ("PATCH", f"{base}/events/{ev['id']}", {"json": {"summary": "mine"}}),
        ("DELETE", f"{base}/events/{ev['id']}", {}),
        ("GET", f"{base}/export", {}),
        ("POST", f"{base}/import", {"files": {"file": ("a.ics", b"BEGIN:VCALENDAR\r\n")}}),
    ]:
        resp = await client.request(method, path, headers=other, **kwargs)
        assert resp.status_code == 404, (method, path, resp.text)
        assert "secret" not in resp.text
    agenda = (await client.get("/api/v1/calendars/agenda", params=rng, headers=other)).json()
    assert agenda["occurrences"] == []
    assert (await client.get(f"{base}/events/{ev['id']}", headers=headers)).status_code == 200


SMALL_ICS = b"""BEGIN:VCALENDAR\r
VERSION:2.0\r
PRODID:-//test//EN\r
BEGIN:VEVENT\r
UID:one@example.org\r
DTSTART;TZID=Europe/Berlin:20270301T090000\r
DTEND;TZID=Europe/Berlin:20270301T100000\r
RRULE:FREQ=WEEKLY;BYDAY=MO\r
EXDATE;TZID=Europe/Berlin:20270329T090000\r
SUMMARY:Weekly\r
ATTENDEE;CN=Ann:mailto:ann@example.org\r
BEGIN:VALARM\r
ACTION:DISPLAY\r
TRIGGER:-PT10M\r
END:VALARM\r
END:VEVENT\r
BEGIN:VEVENT\r
UID:two@example.org\r
DTSTART;VALUE=DATE:20270305\r
SUMMARY:Holiday\r
END:VEVENT\r
END:VCALENDAR\r
"""


async def test_each_write_stores_the_events_plan_and_rows_without_one_still_expand(
        client: httpx.AsyncClient, user: User, database: Database) -> None:
    """``recurrence_plan`` (what a range query reads instead of parsing the rule) follows
    every change of the times, zone and rule; a row without one (written before migration
    0960) is expanded from its rule, with the same answer."""
    _, headers = user
    cal = await make_calendar(client, headers, "Work", "Europe/Berlin")
    ev = await make_event(client, headers, cal["id"], summary="Sync",
                          start_time="2027-03-01T09:00:00+01:00",
                          end_time="2027-03-01T09:30:00+01:00",
                          recurrence_rule="FREQ=MONTHLY;BYDAY=-1FR;COUNT=4")
    url = f"/api/v1/calendars/{cal['id']}/events"
    spring = {"start": "2027-03-01T00:00:00Z", "end": "2027-07-01T00:00:00Z"}

    async def starts() -> list[str]:
        resp = await client.get(url, headers=headers, params=spring)
        assert resp.status_code == 200, resp.text
        return [o["start"] for o in resp.json()["occurrences"]]

    async def plan() -> list[int] | None:
        async with database.transaction() as session:
            row = await session.get(Event, uuid.UUID(ev["id"]))
            assert row is not None
            return row.recurrence_plan

    # DTSTART (a Monday) and four last Fridays, before and after the DST change
    assert await starts() == ["2027-03-01T08:00:00Z", "2027-03-26T08:00:00Z",
                              "2027-04-30T07:00:00Z", "2027-05-28T07:00:00Z",
                              "2027-06-25T07:00:00Z"]
    first = await plan()
    assert first is not None and first[:2] == [batch.PLAN_VERSION, batch.MONTH]
    for change, want in (
        ({"start_time": "2027-03-01T10:00:00+01:00", "end_time": "2027-03-01T10:30:00+01:00"},
         ["2027-03-01T09:00:00Z", "2027-03-26T09:00:00Z", "2027-04-30T08:00:00Z",
          "2027-05-28T08:00:00Z", "2027-06-25T08:00:00Z"]),
        ({"timezone": "UTC"}, ["2027-03-01T09:00:00Z", "2027-03-26T09:00:00Z",
                               "2027-04-30T09:00:00Z", "2027-05-28T09:00:00Z",
                               "2027-06-25T09:00:00Z"]),
        ({"recurrence_rule": "FREQ=WEEKLY;INTERVAL=4;COUNT=3"},
         ["2027-03-01T09:00:00Z", "2027-03-29T09:00:00Z", "2027-04-26T09:00:00Z"]),
        ({"exdates": ["2027-03-29T09:00:00Z"]}, ["2027-03-01T09:00:00Z", "2027-04-26T09:00:00Z"]),
        ({"rdates": ["2027-06-01T12:00:00Z"]}, ["2027-03-01T09:00:00Z", "2027-04-26T09:00:00Z",
                                                "2027-06-01T12:00:00Z"]),
    ):
        resp = await client.patch(f"{url}/{ev['id']}", json=change, headers=headers)
        assert resp.status_code == 200, resp.text
        assert await starts() == want, change
    assert (await plan() or [])[:2] == [batch.PLAN_VERSION,
                                        batch.DAYS | batch.HAS_RDATES | batch.HAS_EXDATES]
    async with database.transaction() as session:
        await session.execute(update(Event).where(Event.id == uuid.UUID(ev["id"]))
                              .values(recurrence_plan=None))
    assert await starts() == want


async def test_import_is_idempotent_by_uid_and_export_round_trips(client: httpx.AsyncClient,
                                                                  user: User) -> None:
    _, headers = user
    cal = await make_calendar(client, headers, "Home", "Europe/Berlin")
    url = f"/api/v1/calendars/{cal['id']}/import"
    resp = await client.post(url, files={"file": ("a.ics", SMALL_ICS, "text/calendar")},
                             headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"created": 2, "updated": 0, "unchanged": 0, "skipped": []}
    resp = await client.post(url, files={"file": ("a.ics", SMALL_ICS)}, headers=headers)
    assert resp.json() == {"created": 0, "updated": 0, "unchanged": 2, "skipped": []}
    changed = SMALL_ICS.replace(b"SUMMARY:Weekly", b"SUMMARY:Weekly sync")
    resp = await client.post(url, files={"file": ("a.ics", changed)}, headers=headers)
    assert resp.json() == {"created": 0, "updated": 1, "unchanged": 1, "skipped": []}

    occ = (await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers, params={
        "start": "2027-03-01T00:00:00Z", "end": "2027-04-06T00:00:00Z"})).json()["occurrences"]
    assert [(o["summary"], o["start"]) for o in occ] == [
        ("Weekly sync", "2027-03-01T08:00:00Z"), ("Holiday", "2027-03-04T23:00:00Z"),
        ("Weekly sync", "2027-03-08T08:00:00Z"), ("Weekly sync", "2027-03-15T08:00:00Z"),
        ("Weekly sync", "2027-03-22T08:00:00Z"), ("Weekly sync", "2027-04-05T07:00:00Z")]

    resp = await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)
    assert resp.status_code == 200
    assert resp.headers["content-type"].startswith("text/calendar")
    exported = icalendar.Calendar.from_ical(resp.content)
    events = {str(e["UID"]): e for e in exported.walk("VEVENT")}
    assert set(events) == {"one@example.org", "two@example.org"}
    assert events["one@example.org"]["RRULE"].to_ical() == b"FREQ=WEEKLY;BYDAY=MO"
    assert str(events["two@example.org"].decoded("DTSTART")) == "2027-03-05"
    assert "Europe/Berlin" in [str(t["TZID"]) for t in exported.walk("VTIMEZONE")]


@pytest.mark.parametrize(("content", "message"), [
    (b"hello", "BEGIN:VCALENDAR"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nEND:VCALENDAR\r\n", "malformed"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:tomorrow\r\nEND:VEVENT\r\n"
     b"END:VCALENDAR\r\n", "DTSTART"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:20270101T090000Z\r\nEND:VEVENT\r\n"
     b"END:VCALENDAR\r\n", "UID is required"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20270101T090000Z\r\n"
     b"RRULE:FREQ=DAILY;BYMONTH=2;BYMONTHDAY=30\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n", "RRULE"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20270101T090000Z\r\n"
     b"DTEND:20261231T090000Z\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n", "DTEND is before"),
    (b"\xff\xfe garbage", "UTF-8"),
    # A duration past year 9999, after a start in range, was an OverflowError: a 500.
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20270101T090000Z\r\n"
     b"DURATION:P99999999W\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n", "outside the years 1 to 9999"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART;VALUE=DATE:99991231\r\n"
     b"END:VEVENT\r\nEND:VCALENDAR\r\n", "9999"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20270101T090000Z\r\n"
     b"SUMMARY:a\x00b\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n", "NUL"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20270101T090000Z\r\n"
     b"DURATION:P400D\r\nRRULE:FREQ=DAILY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n", "at most 366 days"),
    # A property RFC 5545 allows once, given twice: import read the first (UID, SUMMARY) or
    # none (two DURATIONs stored an event of no length).
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20270101T090000Z\r\n"
     b"DURATION:PT1H\r\nDURATION:PT2H\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
     "DURATION appears more than once"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nUID:y\r\nDTSTART:20270101T090000Z\r\n"
     b"END:VEVENT\r\nEND:VCALENDAR\r\n", "UID appears more than once"),
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20270101T090000Z\r\n"
     b"DTEND:20270101T100000Z\r\nDURATION:PT2H\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n",
     "DTEND and DURATION are both given"),
    # A VEVENT inside another one was imported as an event of its own.
    (b"BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nUID:x\r\nDTSTART:20270101T090000Z\r\n"
     b"BEGIN:VEVENT\r\nUID:y\r\nDTSTART:20270101T090000Z\r\nEND:VEVENT\r\n"
     b"END:VEVENT\r\nEND:VCALENDAR\r\n", "nested inside another component"),
])
async def test_malformed_icalendar_is_422_naming_the_problem(client: httpx.AsyncClient,
                                                             user: User, content: bytes,
                                                             message: str) -> None:
    _, headers = user
    cal = await make_calendar(client, headers)
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import",
                             files={"file": ("bad.ics", content)}, headers=headers)
    assert resp.status_code == 422, resp.text
    assert message in resp.json()["detail"]


async def test_oversized_icalendar_is_413(client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    cal = await make_calendar(client, headers)
    big = b"BEGIN:VCALENDAR\r\n" + b"X-PAD:" + b"a" * (6 * 1024 * 1024) + b"\r\nEND:VCALENDAR\r\n"
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import",
                             files={"file": ("big.ics", big)}, headers=headers)
    assert resp.status_code == 413, resp.text
    assert "iCalendar file is larger" in resp.json()["detail"]


async def test_free_text_with_newlines_and_separators_exports_and_reimports_as_written(
        client: httpx.AsyncClient, user: User) -> None:
    """Names and extension fields are free text: exported escaped (a raw newline broke
    the content line: a 500), read back unchanged.  An attendee's address holds no
    control characters (422)."""
    _, headers = user
    name, description = "Team\nplans; a, b", "line one\nline two"
    created = await client.post("/api/v1/calendars", headers=headers, json={
        "name": name, "description": description, "timezone": "UTC"})
    assert created.status_code == 201, created.text
    cal = created.json()
    event = {"summary": "Focus", "start_time": "2027-01-01T09:00:00Z",
             "end_time": "2027-01-01T10:00:00Z", "event_type": "deep\nwork",
             "google_event_id": "g;1,\n2", "attendees": [{"email": "ann@example.org"}]}
    bad = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=headers, json={
        **event, "attendees": [{"email": "ann@example.org\r\nX-EVIL:1"}]})
    assert bad.status_code == 422, bad.text
    await make_event(client, headers, cal["id"], **event)
    resp = await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)
    assert resp.status_code == 200, resp.text
    lines = resp.content.decode().splitlines()
    for line in ("X-WR-CALNAME:Team\\nplans\\; a\\, b", "X-WR-CALDESC:line one\\nline two",
                 "X-ROOST-EVENT-TYPE:deep\\nwork", "X-GOOGLE-EVENT-ID:g\\;1\\,\\n2"):
        assert line in lines, lines
    assert ical.parse(resp.content, "UTC").name == name
    # Read back as written: importing the export into the same calendar changes nothing.
    again = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                              files={"file": ("team.ics", resp.content, "text/calendar")})
    assert again.status_code == 200, again.text
    assert again.json() == {"created": 0, "updated": 0, "unchanged": 1, "skipped": []}


async def test_export_of_a_calendar_named_in_any_script_names_the_download_exactly(
        client: httpx.AsyncClient, user: User) -> None:
    """A header carries Latin-1 only: a name with CJK characters was a 500.  The download
    is offered under its exact name (RFC 6266 ``filename*``) and a plain ASCII one."""
    _, headers = user
    name = '\U0002d06e 日本 "plans"\nv2'
    created = await client.post("/api/v1/calendars", headers=headers,
                                json={"name": name, "timezone": "UTC"})
    assert created.status_code == 201, created.text
    resp = await client.get(f"/api/v1/calendars/{created.json()['id']}/export", headers=headers)
    assert resp.status_code == 200, resp.text
    disposition = resp.headers["content-disposition"]
    plain, exact = disposition.split("; filename*=UTF-8''")
    assert plain == 'attachment; filename="plans_v2.ics"', disposition
    assert unquote(exact) == f"{name}.ics"


async def test_an_event_id_from_google_used_twice_is_a_409_naming_the_key(
        client: httpx.AsyncClient, user: User) -> None:
    """Google's event id is unique per user: a second event with it, or an import that
    brings one in another calendar, is refused naming the columns (never the values)."""
    _, headers = user
    first, second = await make_calendar(client, headers, "One"), await make_calendar(
        client, headers, "Two")
    event = {"summary": "Sync", "start_time": "2027-01-01T09:00:00Z",
             "end_time": "2027-01-01T10:00:00Z", "google_event_id": "g-secret-1"}
    await make_event(client, headers, first["id"], **event)
    again = await client.post(f"/api/v1/calendars/{second['id']}/events", headers=headers,
                              json=event)
    assert again.status_code == 409, again.text
    detail = again.json()["detail"]
    assert "the same user_id, google_event_id" in detail and "g-secret-1" not in detail
    exported = await client.get(f"/api/v1/calendars/{first['id']}/export", headers=headers)
    imported = await client.post(f"/api/v1/calendars/{second['id']}/import", headers=headers,
                                 files={"file": ("one.ics", exported.content, "text/calendar")})
    assert imported.status_code == 409 and "google_event_id" in imported.json()["detail"]
    listed = await client.get(f"/api/v1/calendars/{second['id']}/events", headers=headers,
                              params={"start": "2027-01-01T00:00:00Z",
                                      "end": "2027-01-02T00:00:00Z"})
    assert listed.json()["occurrences"] == []  # nothing half-imported


class _Counting:
    """A dateutil rrule that counts what a query iterates (and stops at a cap)."""

    seen = 0
    CAP = 500_000

    def __init__(self, inner: Any) -> None:
        self._inner = inner

    def __getattr__(self, name: str) -> Any:
        return getattr(self._inner, name)

    def __iter__(self) -> Any:
        return iter(self._inner)

    def xafter(self, dt: Any, count: int | None = None, inc: bool = False) -> Any:
        """dateutil's own ``xafter``: every occurrence from DTSTART on, those after ``dt``
        yielded (here each one counted)."""
        for occ in self._inner:
            _Counting.seen += 1
            if _Counting.seen > _Counting.CAP:
                return
            if occ >= dt if inc else occ > dt:
                yield occ


@pytest.mark.parametrize("rule", [
    "FREQ=HOURLY;BYSETPOS=1",  # not moved forward: BYSETPOS
    "FREQ=YEARLY;BYMONTH=" + ",".join(str(m) for m in range(1, 13)) + ";BYMONTHDAY="
    + ",".join(str(d) for d in range(1, 32)) + ";BYHOUR=" + ",".join(str(h) for h in range(24)),
])
async def test_a_one_day_query_of_a_series_from_year_one_is_bounded_work(
        client: httpx.AsyncClient, user: User, monkeypatch: pytest.MonkeyPatch,
        rule: str) -> None:
    """A one-day query of a series that started in year 1 does bounded work: it does not
    iterate the rule's ~17 million hours since DTSTART (about 150 s of one CPU, on the
    event loop) on every request."""
    _, headers = user
    cal = await make_calendar(client, headers)
    await make_event(client, headers, cal["id"], summary="old", start_time="0001-01-03T00:00:00Z",
                     end_time="0001-01-03T00:30:00Z", recurrence_rule=rule)
    real = recurrence._build
    monkeypatch.setattr(recurrence, "_build", lambda *a: _Counting(real(*a)))
    _Counting.seen = 0
    resp = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                            params={"start": "2027-03-01T00:00:00Z",
                                    "end": "2027-03-02T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    assert _Counting.seen < 100_000, f"{_Counting.seen} occurrences iterated for one day"


async def test_a_count_series_with_a_sub_second_start_has_count_occurrences(
        client: httpx.AsyncClient, user: User) -> None:
    """A daily COUNT=3 series given a 09:00:00.5 start has three occurrences: times are
    stored in whole seconds (the rule's own occurrences have none smaller; DTSTART's stood
    beside them as a fourth)."""
    _, h = user
    cal = await make_calendar(client, h)
    await make_event(client, h, cal["id"], summary="x", start_time="2027-03-01T09:00:00.5Z",
                     end_time="2027-03-01T10:00:00.5Z", recurrence_rule="FREQ=DAILY;COUNT=3")
    r = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=h, params={
        "start": "2027-03-01T00:00:00Z", "end": "2027-03-10T00:00:00Z"})
    assert r.status_code == 200, r.text
    assert [o["start"] for o in r.json()["occurrences"]] == [
        "2027-03-01T09:00:00Z", "2027-03-02T09:00:00Z", "2027-03-03T09:00:00Z"]


async def test_admin_changing_another_users_calendar_is_recorded_as_the_admins(
        client: httpx.AsyncClient, database: Database, admin_headers: Headers) -> None:
    """An administrator who changes a user's event and renames and deletes their calendar
    is the ``user_id`` of those audit records, the owner in ``changes.owner`` (the records
    named the owner as having acted)."""
    owner_id, owner = await make_user(database)
    admin_id, admin = await make_user(database, admin=True)
    cal = await client.post("/api/v1/calendars", json={"name": "Work", "timezone": "UTC"},
                            headers=owner)
    assert cal.status_code == 201, cal.text
    cal_id = cal.json()["id"]
    ev = await client.post(f"/api/v1/calendars/{cal_id}/events", headers=owner,
                           json={"summary": "x", "start_time": "2027-03-08T09:00:00Z",
                                 "end_time": "2027-03-08T10:00:00Z"})
    assert ev.status_code == 201, ev.text
    ev_id = ev.json()["id"]
    resp = await client.patch(f"/api/v1/calendars/{cal_id}/events/{ev_id}",
                              json={"summary": "y"}, headers=admin)
    assert resp.status_code == 200, resp.text
    resp = await client.patch(f"/api/v1/calendars/{cal_id}", json={"name": "Job"},
                              headers=admin)
    assert resp.status_code == 200, resp.text
    resp = await client.delete(f"/api/v1/calendars/{cal_id}", headers=admin)
    assert resp.status_code == 204, resp.text
    listed = await client.get("/api/v1/audit/logs", headers=admin_headers,
                              params={"limit": "200"})
    actors = {r["action"]: (r["user_id"], (r["changes"] or {}).get("owner"))
              for r in listed.json()["items"]
              if r["action"] in ("event.update", "calendar.update", "calendar.delete")}
    acted = (str(admin_id), str(owner_id))
    assert actors == {"event.update": acted, "calendar.update": acted,
                      "calendar.delete": acted}, actors
