"""The .ics import holds a file's text to the API's rules (a UID without control
characters, line breaks as LF, at most 500 attendees), so a calendar's own export imports
back unchanged, and unfolds lines before decoding UTF-8 (RFC 5545 3.1)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from tests.calendar.conftest import Headers, make_calendar

User = tuple[uuid.UUID, Headers]

HEAD = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
TAIL = "END:VCALENDAR\r\n"


async def _import(client: httpx.AsyncClient, headers: Headers, cal_id: str,
                  raw: str | bytes) -> httpx.Response:
    data = raw.encode() if isinstance(raw, str) else raw
    return await client.post(f"/api/v1/calendars/{cal_id}/import", headers=headers,
                             files={"file": ("c.ics", data, "text/calendar")})


async def _only_event(client: httpx.AsyncClient, headers: Headers, cal_id: str) -> dict[str, Any]:
    ag = await client.get(f"/api/v1/calendars/{cal_id}/events", headers=headers,
                          params={"start": "2026-12-01T00:00:00Z", "end": "2027-02-01T00:00:00Z"})
    assert ag.status_code == 200, ag.text
    occ = ag.json()["occurrences"]
    assert len(occ) == 1, occ
    ev = await client.get(f"/api/v1/calendars/{cal_id}/events/{occ[0]['event_id']}",
                          headers=headers)
    assert ev.status_code == 200, ev.text
    out: dict[str, Any] = ev.json()
    return out


async def test_an_imported_uid_with_a_control_character_is_refused(
        client: httpx.AsyncClient, user: User) -> None:
    """As the API's 422 for `uid`: an imported `UID:a<CR>b` was stored as is; its export
    wrote `UID:a\\nb` and importing that back created a second event."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = HEAD + ("BEGIN:VEVENT\r\nUID:a\rb\r\nDTSTART:20270101T090000Z\r\n"
                  "DTEND:20270101T100000Z\r\nSUMMARY:x\r\nEND:VEVENT\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 422 and "UID holds a control character" in resp.text, resp.text


async def test_an_imported_summary_with_a_bare_cr_is_stored_with_lf_and_reimports_unchanged(
        client: httpx.AsyncClient, user: User) -> None:
    """docs/calendar.md: "Text is stored as an export reads it back: line breaks in
    summary, description, location ... as LF". The API stores "a\\rb" as "a\\nb", but an
    imported `SUMMARY:a<CR>b` / `LOCATION:c<CR>d` is stored with the CR; the export writes
    LF, so importing the calendar's own export back reports `updated` instead of
    `unchanged`."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = HEAD + ("BEGIN:VEVENT\r\nUID:x\r\nSUMMARY:a\rb\r\nLOCATION:c\rd\r\n"
                  "DTSTART:20270101T090000Z\r\nDTEND:20270101T100000Z\r\nEND:VEVENT\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 200, resp.text
    ev = await _only_event(client, headers, cal["id"])
    assert (ev["summary"], ev["location"]) == ("a\nb", "c\nd"), ev
    export = await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)
    again = await _import(client, headers, cal["id"], export.content)
    assert again.json() == {"created": 0, "updated": 0, "unchanged": 1, "skipped": []}


async def test_a_line_folded_inside_a_utf8_character_imports(
        client: httpx.AsyncClient, user: User) -> None:
    """RFC 5545 3.1: simple writers fold lines in the middle of a UTF-8 multi-octet
    sequence, so "implementations need to unfold lines in such a way to properly restore
    the original sequence". A SUMMARY `café` folded between the two octets of `é` is a
    422 "the file is not UTF-8 text" (the bytes are decoded before unfolding)."""
    _, headers = user
    cal = await make_calendar(client, headers)
    e_acute = "é".encode()
    raw = (HEAD + "BEGIN:VEVENT\r\nUID:u1\r\nDTSTART:20270101T090000Z\r\n"
           "DTEND:20270101T100000Z\r\n").encode() + \
        b"SUMMARY:caf" + e_acute[:1] + b"\r\n " + e_acute[1:] + b"\r\n" + \
        ("END:VEVENT\r\n" + TAIL).encode()
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 200, resp.text
    assert (await _only_event(client, headers, cal["id"]))["summary"] == "café"


async def test_an_import_with_more_attendees_than_the_api_allows_is_refused(
        client: httpx.AsyncClient, user: User) -> None:
    """docs/calendar.md: "An import keeps to the API's limits of an event" (RDATEs,
    EXDATEs, DESCRIPTION, CATEGORIES, attendee addresses: each a 422 naming the VEVENT).
    The API refuses more than 500 attendees; an import of a VEVENT with 600 ATTENDEEs
    answered 200 `created: 1` and kept the first 500 (100 attendees lost): now a 422."""
    _, headers = user
    cal = await make_calendar(client, headers)
    people = "".join(f"ATTENDEE;CN=P{i}:mailto:p{i}@example.com\r\n" for i in range(600))
    raw = HEAD + ("BEGIN:VEVENT\r\nUID:u1\r\nDTSTART:20270101T090000Z\r\n"
                  f"DTEND:20270101T100000Z\r\nSUMMARY:x\r\n{people}END:VEVENT\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 422 and "more than 500 ATTENDEEs" in resp.text, resp.text


async def test_a_utf8_file_starting_with_a_byte_order_mark_imports(
        client: httpx.AsyncClient, user: User) -> None:
    """A UTF-8 .ics file with a byte order mark (as Windows tools write them) imports like
    one without; it was a 422 "malformed iCalendar: Content line could not be parsed"."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = b"\xef\xbb\xbf" + (HEAD + "BEGIN:VEVENT\r\nUID:b\r\nDTSTART:20270110T090000Z\r\n"
                             "DTEND:20270110T100000Z\r\nSUMMARY:x\r\nEND:VEVENT\r\n"
                             + TAIL).encode()
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 200, resp.text
    assert resp.json()["created"] == 1
    assert (await _only_event(client, headers, cal["id"]))["summary"] == "x"


async def test_an_imported_attendee_without_an_address_is_dropped(
        client: httpx.AsyncClient, user: User) -> None:
    """``ATTENDEE;CN=Nobody:mailto:`` names no one: the import keeps the other attendees
    and the event's attendees can be sent back in a PATCH; the empty address was stored,
    and the PATCH refused it (an attendee's email may not be empty)."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = HEAD + ("BEGIN:VEVENT\r\nUID:e\r\nDTSTART:20270110T090000Z\r\n"
                  "DTEND:20270110T100000Z\r\nATTENDEE;CN=Nobody:mailto:\r\n"
                  "ATTENDEE;CN=Ann:mailto:ann@example.com\r\nEND:VEVENT\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 200, resp.text
    event = await _only_event(client, headers, cal["id"])
    assert event["attendees"] == [{"email": "ann@example.com", "name": "Ann"}]
    resp = await client.patch(f"/api/v1/calendars/{cal['id']}/events/{event['id']}",
                              headers=headers, json={"attendees": event["attendees"]})
    assert resp.status_code == 200, resp.text
