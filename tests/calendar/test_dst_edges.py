"""Calendars across DST changes: all-day events on a day whose midnight a change skips;
times in the repeated hour of a fall-back exported so they read back as the same instant."""

from __future__ import annotations

import uuid

import httpx

from tests.calendar.conftest import Headers, make_calendar

User = tuple[uuid.UUID, Headers]


def _ics(body: str) -> bytes:
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//probe//EN\r\n" + body
            + "END:VCALENDAR\r\n").encode()


async def test_all_day_event_via_api_on_a_day_without_midnight(
        client: httpx.AsyncClient, user: User) -> None:
    """Over the API, the all-day event of 2027-09-05 in America/Santiago starts at that
    day's first instant (04:00Z); the user expects 201."""
    _, headers = user
    cal = await make_calendar(client, headers, "Chile", "America/Santiago")
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=headers, json={
        "summary": "Fiesta", "all_day": True, "start_time": "2027-09-05T04:00:00Z",
        "end_time": "2027-09-06T03:00:00Z"})
    assert resp.status_code == 201, resp.text


async def test_imported_all_day_event_on_a_day_without_midnight_can_be_edited(
        client: httpx.AsyncClient, user: User) -> None:
    """An all-day event on 2027-09-05 in America/Santiago imports (starting 04:00Z, the
    day's first instant); the user then renames it (PATCH summary) and expects 200, and
    an export/import round trip unchanged."""
    _, headers = user
    cal = await make_calendar(client, headers, "Chile", "America/Santiago")
    body = ("BEGIN:VEVENT\r\nUID:a@x\r\nDTSTART;VALUE=DATE:20270905\r\n"
            "DTEND;VALUE=DATE:20270906\r\nSUMMARY:Fiesta\r\nEND:VEVENT\r\n")
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                             files={"file": ("c.ics", _ics(body), "text/calendar")})
    assert resp.status_code == 200, resp.text
    occ = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                           params={"start": "2027-09-01T00:00:00Z",
                                   "end": "2027-09-10T00:00:00Z"})
    assert occ.status_code == 200, occ.text
    [o] = occ.json()["occurrences"]
    exported = await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)
    again = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                              files={"file": ("c.ics", exported.content, "text/calendar")})
    assert again.status_code == 200, again.text
    assert again.json()["unchanged"] == 1, again.text
    resp = await client.patch(f"/api/v1/calendars/{cal['id']}/events/{o['event_id']}",
                              headers=headers, json={"summary": "Fiesta 2"})
    assert resp.status_code == 200, resp.text


async def test_change_one_all_day_occurrence_on_a_day_without_midnight(
        client: httpx.AsyncClient, user: User) -> None:
    """A daily all-day series in America/Santiago (from 2027-09-01) has an occurrence on
    2027-09-05 starting 04:00Z (the API lists it). Renaming that one occurrence
    (PUT .../occurrences/2027-09-05T04:00:00Z) should create its override (201); and an
    EXDATE at that instant should remove it."""
    _, headers = user
    cal = await make_calendar(client, headers, "Chile", "America/Santiago")
    ev = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=headers, json={
        "summary": "Daily", "all_day": True, "start_time": "2027-09-01T04:00:00Z",
        "end_time": "2027-09-02T04:00:00Z", "recurrence_rule": "FREQ=DAILY;COUNT=10",
        "exdates": ["2027-09-06T03:00:00Z"]})
    assert ev.status_code == 201, ev.text
    eid = ev.json()["id"]
    occ = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                           params={"start": "2027-09-04T00:00:00Z",
                                   "end": "2027-09-08T00:00:00Z"})
    starts = [o["start"] for o in occ.json()["occurrences"]]
    assert "2027-09-05T04:00:00Z" in starts
    assert "2027-09-06T03:00:00Z" not in starts
    resp = await client.put(
        f"/api/v1/calendars/{cal['id']}/events/{eid}/occurrences/2027-09-05T04:00:00Z",
        headers=headers, json={"summary": "Changed"})
    assert resp.status_code == 201, resp.text



async def test_lord_howe_fold_round_trip(client: httpx.AsyncClient, user: User) -> None:
    """A daily 01:45 Lord Howe series across the 2027-04-04 fall-back (01:30-02:00 is
    repeated) with an RDATE at the *second* 01:45 (15:15Z, beside the rule's 14:45Z). The
    docs promise a calendar's own export imports back unchanged; the export writes the
    RDATE as TZID local 01:45 (no fold), which reads back as the first instant: the import
    counts it `updated` and the extra occurrence is lost."""
    _, headers = user
    cal = await make_calendar(client, headers, "LH", "Australia/Lord_Howe")
    ev = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=headers, json={
        "summary": "D", "start_time": "2027-04-01T01:45:00+11:00",
        "end_time": "2027-04-01T02:15:00+11:00", "recurrence_rule": "FREQ=DAILY;COUNT=8",
        "rdates": ["2027-04-04T01:45:00+10:30"], "exdates": ["2027-04-06T01:45:00+10:30"]})
    assert ev.status_code == 201, ev.text
    params = {"start": "2027-03-30T00:00:00Z", "end": "2027-04-12T00:00:00Z"}
    before = (await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                               params=params)).json()["occurrences"]
    exported = await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)
    again = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                              files={"file": ("c.ics", exported.content, "text/calendar")})
    assert again.status_code == 200 and again.json()["unchanged"] == 1, again.text
    after = (await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                              params=params)).json()["occurrences"]
    assert [(o["start"], o["end"]) for o in before] == [(o["start"], o["end"]) for o in after]
    other = await make_calendar(client, headers, "LH2", "UTC")
    imp = await client.post(f"/api/v1/calendars/{other['id']}/import", headers=headers,
                            files={"file": ("c.ics", exported.content, "text/calendar")})
    assert imp.status_code == 200, imp.text
    third = (await client.get(f"/api/v1/calendars/{other['id']}/events", headers=headers,
                              params=params)).json()["occurrences"]
    assert [(o["start"], o["end"]) for o in before] == [(o["start"], o["end"]) for o in third]
