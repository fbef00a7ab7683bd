"""The calendar's API, import and CLI with input a sloppy client or a hostile file sends:
RDATE series of centuries, all-day events at clock times, values too large to store, NUL
characters, an over-long calendar name in the CLI, and the export of an API-made series
read back unchanged."""

from __future__ import annotations

import unicodedata
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.calendar import ical
from roost.db.engine import Database
from tests.agents.test_agents_cli import cli_env
from tests.calendar.conftest import Headers, make_calendar, make_event
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer

User = tuple[uuid.UUID, Headers]


def _body(**extra: Any) -> dict[str, Any]:
    return {"summary": "x", "start_time": "2027-01-01T09:00:00Z",
            "end_time": "2027-01-01T10:00:00Z", **extra}


async def test_export_then_import_of_api_made_series_changes_nothing(
        client: httpx.AsyncClient, user: User) -> None:
    """A calendar's export imported back into it changes nothing (docs: "a Roost export
    imports back whole"), also for rules written in another part order than icalendar's."""
    _, headers = user
    cal = await make_calendar(client, headers)
    for rule in ("FREQ=DAILY;COUNT=3", "FREQ=YEARLY;BYMONTH=1;BYMONTHDAY=1",
                 "COUNT=3;FREQ=DAILY", "FREQ=WEEKLY;WKST=SU;BYDAY=MO"):
        await make_event(client, headers, cal["id"], **_body(recurrence_rule=rule))
    data = (await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)).content
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                             files={"file": ("c.ics", data)})
    assert resp.status_code == 200, resp.text
    assert resp.json() == {"created": 0, "updated": 0, "unchanged": 4, "skipped": []}


async def test_an_rdate_series_whose_occurrences_last_centuries_is_refused(
        client: httpx.AsyncClient, user: User) -> None:
    """An event with RDATEs is recurring (its occurrences say so): an occurrence lasting
    more than 366 days is a 422 invalid-recurrence, as for an RRULE series."""
    _, headers = user
    cal = await make_calendar(client, headers)
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=headers, json=_body(
        end_time="2900-01-01T00:00:00Z", rdates=["2028-01-01T09:00:00Z"]))
    assert resp.status_code == 422, resp.text


async def test_an_all_day_event_at_clock_times_is_refused_or_made_whole_days(
        client: httpx.AsyncClient, user: User) -> None:
    """An all-day event spans whole local days: 09:00-10:00 with all_day true is refused
    or stored as the whole day (export would write DATE 20270101/20270101, a zero-length
    day that imports back at midnight)."""
    _, headers = user
    cal = await make_calendar(client, headers)
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                             json=_body(all_day=True))
    if resp.status_code == 201:
        ev = resp.json()
        assert (ev["start_time"], ev["end_time"]) == ("2027-01-01T00:00:00Z",
                                                      "2027-01-02T00:00:00Z"), ev
    else:
        assert resp.status_code == 422, resp.text


@pytest.mark.parametrize("prop", [
    "X-GOOGLE-EVENT-ID:" + "g" * 400,
    "BEGIN:VALARM\r\nACTION:DISPLAY\r\nTRIGGER:-P9999999W\r\nEND:VALARM",
])
async def test_import_values_too_large_to_store_are_a_422_naming_the_event(
        client: httpx.AsyncClient, user: User, prop: str) -> None:
    """A VEVENT with a 400-character X-GOOGLE-EVENT-ID or an alarm 190 years ahead is a 422
    invalid-icalendar naming the VEVENT (or is read within limits), not the database's
    anonymous 400 "a value is out of range or malformed for its field"."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:u1\r\n"
           "DTSTART:20270101T090000Z\r\nDTEND:20270101T100000Z\r\nSUMMARY:x\r\n"
           f"{prop}\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n").encode()
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                             files={"file": ("c.ics", raw)})
    assert resp.status_code in (200, 422), resp.text
    if resp.status_code == 422:
        assert "VEVENT #1" in resp.json()["detail"], resp.text


async def test_a_nul_in_an_event_text_is_a_422_naming_the_field(client: httpx.AsyncClient,
                                                               user: User) -> None:
    """A NUL in summary/location is a 422 naming the field (as projects and tasks answer),
    not the anonymous 400 of the database's "invalid byte sequence"."""
    _, headers = user
    cal = await make_calendar(client, headers)
    for field in ("summary", "location"):
        resp = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                                 json=_body(**{field: "a\x00b"}))
        assert resp.status_code == 422, resp.text
        assert field in resp.text, resp.text


async def test_cli_import_creating_a_calendar_with_a_too_long_name_is_one_line(
        pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path) -> None:
    """`roost calendar import F --calendar NAME` with a name the API refuses (300
    characters) exits 1 with a one-line message, not a pydantic traceback."""
    env = cli_env(pg_server, db_name, tmp_path)
    await make_user(database, username="cal")
    ics = tmp_path / "a.ics"
    ics.write_text("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nEND:VCALENDAR\r\n")
    out = run_roost("calendar", "import", str(ics), "--calendar", "n" * 300, "--user", "cal",
                    env=env)
    assert out.returncode == 1, out.stdout
    assert "Traceback" not in out.stderr and "ValidationError" not in out.stderr, out.stderr


HEAD = "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n"
TAIL = "END:VCALENDAR\r\n"


def _vevent(extra: str = "",
            start: str = "DTSTART:20270101T090000Z\r\nDTEND:20270101T100000Z\r\n") -> str:
    return f"BEGIN:VEVENT\r\nUID:u1\r\n{start}SUMMARY:x\r\n{extra}END:VEVENT\r\n"


async def _import(client: httpx.AsyncClient, headers: Headers, cal_id: str,
                  raw: str) -> httpx.Response:
    return await client.post(f"/api/v1/calendars/{cal_id}/import", headers=headers,
                             files={"file": ("c.ics", raw.encode(), "text/calendar")})


async def test_two_files_in_one_import_is_a_422_and_imports_neither(
        client: httpx.AsyncClient, user: User) -> None:
    """Two .ics files in one import request: refused naming the field, not one imported
    and the other dropped in silence."""
    _, headers = user
    cal = await make_calendar(client, headers)
    one = (HEAD + _vevent() + TAIL).encode()
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                             files=[("file", ("a.ics", one, "text/calendar")),
                                    ("file", ("b.ics", one, "text/calendar"))])
    assert resp.status_code == 422, resp.text
    assert resp.json()["fields"] == ["file"]
    events = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                              params={"start": "2027-01-01T00:00:00Z",
                                      "end": "2027-01-02T00:00:00Z"})
    assert events.status_code == 200, events.text
    assert events.json()["occurrences"] == []


@pytest.mark.parametrize("zone", ["America", "Etc", "__pycache__"])
async def test_a_zone_naming_a_folder_of_the_zone_database_is_a_422(
        client: httpx.AsyncClient, user: User, zone: str) -> None:
    """A time zone naming a folder of the zone database (a group of zones) is a 422 naming
    the time zone on calendar create and update and event create, not a 500 (the zone
    loader's IsADirectoryError)."""
    _, headers = user
    resp = await client.post("/api/v1/calendars", json={"name": "Z", "timezone": zone},
                             headers=headers)
    assert resp.status_code == 422 and "time zone" in resp.text, resp.text
    cal = await make_calendar(client, headers, name=f"Z {zone}")
    resp = await client.patch(f"/api/v1/calendars/{cal['id']}", json={"timezone": zone},
                              headers=headers)
    assert resp.status_code == 422 and "time zone" in resp.text, resp.text
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                             json=_body(timezone=zone))
    assert resp.status_code == 422 and "time zone" in resp.text, resp.text


async def test_an_imported_tzid_naming_a_folder_of_zones_is_a_422(
        client: httpx.AsyncClient, user: User) -> None:
    """An .ics with TZID=America (which the iCalendar library tries to open as a zone) is a
    422 saying what is wrong, without the server's paths."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = HEAD + _vevent(start="DTSTART;TZID=America:20270101T090000\r\n"
                               "DTEND;TZID=America:20270101T100000\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 422, resp.text
    assert "TZID" in resp.json()["detail"] and "zoneinfo" not in resp.text, resp.text


async def test_an_imported_rdate_series_whose_occurrences_last_centuries_is_refused(
        client: httpx.AsyncClient, user: User) -> None:
    """As on create: an RDATE series' occurrence lasts at most 366 days, on import too."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = HEAD + _vevent(start="DTSTART:20270101T090000Z\r\nDTEND:29000101T000000Z\r\n",
                         extra="RDATE:20280101T090000Z\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 422, resp.text
    assert "VEVENT #1" in resp.json()["detail"] and "366 days" in resp.text, resp.text


def _stamps(n: int) -> str:
    return ",".join(f"{2027 + i // 300:04d}{1 + (i // 25) % 12:02d}{1 + i % 25:02d}T090000Z"
                    for i in range(n))


@pytest.mark.parametrize(("prop", "value", "limit"), [
    ("RDATE", _stamps(1001), "1000 RDATE"),
    ("EXDATE", _stamps(5001), "5000 EXDATE"),
    ("DESCRIPTION", "d" * 100_001, "100000 characters"),
])
async def test_an_import_keeps_to_the_apis_limits_of_an_event(
        client: httpx.AsyncClient, user: User, prop: str, value: str, limit: str) -> None:
    """An import refuses what the API refuses (1,000 RDATEs, 5,000 EXDATEs, a 100,000
    character description): 422 naming the VEVENT and the limit, nothing stored."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = HEAD + _vevent(extra=f"{prop}:{value}\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 422, resp.text[:300]
    detail = resp.json()["detail"]
    assert "VEVENT #1" in detail and limit in detail, detail
    got = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                           params={"start": "2027-01-01T00:00:00Z",
                                   "end": "2027-12-31T00:00:00Z"})
    assert got.json()["occurrences"] == [], got.text


@pytest.mark.parametrize("tags", ["not json", "{}", "[1]", '["a\\\\u0000b"]',
                                  "[" + ",".join(['"t"'] * 201) + "]"],
                         ids=["not-json", "object", "number", "nul", "201-tags"])
async def test_an_imported_x_roost_tags_that_is_not_a_list_of_tags_is_a_422(
        client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], tags: str) -> None:
    """Roost's own tags property is checked as the API checks tags (a JSON list of at most
    200 texts without NUL), a 422 naming it."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = HEAD + _vevent(f"X-ROOST-CATEGORY:work\r\nX-ROOST-TAGS:{tags}\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 422, resp.text
    assert "X-ROOST-TAGS" in resp.json()["detail"]


async def test_an_imported_x_roost_tag_with_a_lone_surrogate_is_a_422_naming_the_vevent(
        client: httpx.AsyncClient, user: User) -> None:
    """X-ROOST-TAGS holding the JSON escape of a lone surrogate (``\\ud800``: not a
    character, PostgreSQL cannot store it) is a 422 naming the VEVENT and the property;
    it was a generic 400 "a value is out of range" from the database."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = HEAD + _vevent('X-ROOST-CATEGORY:c\r\nX-ROOST-TAGS:["a\\ud800b"]\r\n') + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 422, resp.text
    assert resp.json()["type"].endswith("/invalid-icalendar"), resp.text
    assert "VEVENT #1 (UID u1): X-ROOST-TAGS" in resp.json()["detail"], resp.text


async def test_an_imported_x_roost_tags_nested_thousands_deep_is_a_422(
        client: httpx.AsyncClient, user: User) -> None:
    """X-ROOST-TAGS of 100,000 nested JSON lists (the parser's RecursionError) is a 422
    naming it, not a 500."""
    _, headers = user
    cal = await make_calendar(client, headers)
    tags = "[" * 100_000 + "]" * 100_000
    raw = HEAD + _vevent(f"X-ROOST-CATEGORY:a\r\nX-ROOST-TAGS:{tags}\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 422, resp.text
    assert "X-ROOST-TAGS" in resp.json()["detail"], resp.text


async def test_an_import_with_more_categories_than_the_tag_limit_is_a_422(
        client: httpx.AsyncClient, user: User) -> None:
    """CATEGORIES become the tags: more than 200 (the API's limit, which an export's
    X-ROOST-TAGS would not import back past) is a 422 naming CATEGORIES; 200 import and
    their export imports back unchanged."""
    _, headers = user
    cal = await make_calendar(client, headers)
    many = HEAD + _vevent("CATEGORIES:" + ",".join(f"c{i}" for i in range(201)) + "\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], many)
    assert resp.status_code == 422, resp.text
    assert "CATEGORIES" in resp.json()["detail"] and "200" in resp.text, resp.text
    enough = HEAD + _vevent("CATEGORIES:" + ",".join(f"c{i}" for i in range(200)) + "\r\n") + TAIL
    assert (await _import(client, headers, cal["id"], enough)).status_code == 200
    export = await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)
    again = await _import(client, headers, cal["id"], export.text)
    assert again.status_code == 200 and again.json()["unchanged"] == 1, again.text


async def test_an_imported_attendee_address_with_a_control_character_is_a_422(
        client: httpx.AsyncClient, user: User) -> None:
    """An ATTENDEE address with a tab (which the API refuses, and an export would drop) is a
    422 naming the VEVENT and ATTENDEE, nothing stored."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = HEAD + _vevent("ATTENDEE;CN=Bob:mailto:a\tb@example.org\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert "VEVENT #1" in detail and "ATTENDEE" in detail, detail
    events = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                              params={"start": "2027-01-01T00:00:00Z",
                                      "end": "2027-02-01T00:00:00Z"})
    assert events.json()["occurrences"] == [], events.text


async def test_an_attendee_name_with_a_crlf_reads_back_from_the_export_unchanged(
        client: httpx.AsyncClient, user: User) -> None:
    """An attendee's name, role and status are stored with line breaks as LF (as summary
    and the other texts), so the export imports back unchanged."""
    _, headers = user
    cal = await make_calendar(client, headers)
    ev = await make_event(client, headers, cal["id"], **_body(attendees=[
        {"email": "a@example.org", "name": "Ann\r\nSmith", "role": "A\rB"}]))
    assert ev["attendees"][0]["name"] == "Ann\nSmith", ev
    export = await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)
    again = await _import(client, headers, cal["id"], export.text)
    assert again.status_code == 200 and again.json()["unchanged"] == 1, again.text


@pytest.mark.parametrize("zone", ["right/Europe/Berlin", "posix/Europe/Berlin", "localtime",
                                  "posixrules"])
async def test_zones_outside_the_iana_names_are_a_422(
        client: httpx.AsyncClient, user: User, zone: str) -> None:
    """A zone the host's zone database has beside the IANA names (leap-second 'right/',
    'posix/', the server's own 'localtime') is a 422 like an unknown zone; an imported TZID
    naming one keeps its instants in UTC."""
    _, headers = user
    resp = await client.post("/api/v1/calendars", headers=headers,
                             json={"name": "z", "timezone": zone})
    assert resp.status_code == 422 and "time zone" in resp.text, resp.text
    cal = await make_calendar(client, headers)
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                             json=_body(timezone=zone))
    assert resp.status_code == 422 and "time zone" in resp.text, resp.text
    raw = HEAD + _vevent(start=f"DTSTART;TZID={zone}:20270101T090000\r\n") + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    if resp.status_code == 200:  # the host has no such file: the library's floating time
        events = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                                  params={"start": "2027-01-01T00:00:00Z",
                                          "end": "2027-01-02T00:00:00Z"})
        assert events.json()["occurrences"][0]["timezone"] == "UTC", \
            events.text


def _vtimezone(rule: str, tzid: str = "Bogus") -> str:
    return (f"BEGIN:VTIMEZONE\r\nTZID:{tzid}\r\nBEGIN:STANDARD\r\nDTSTART:16010101T000000\r\n"
            f"TZOFFSETFROM:+0100\r\nTZOFFSETTO:+0000\r\nRRULE:{rule}\r\nEND:STANDARD\r\n"
            "BEGIN:DAYLIGHT\r\nDTSTART:16010101T000000\r\nTZOFFSETFROM:+0000\r\n"
            "TZOFFSETTO:+0100\r\nRRULE:FREQ=YEARLY;BYMONTH=3;BYDAY=-1SU\r\nEND:DAYLIGHT\r\n"
            "END:VTIMEZONE\r\n")


@pytest.mark.parametrize("rule", [
    "FREQ=HOURLY", "FREQ=MINUTELY", "FREQ=DAILY",
    "FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU;BYHOUR=0,1,2,3,4,5,6,7,8,9,10,11",
    "FREQ=YEARLY;BYMONTH=1,2,3,4,5,6,7,8,9,10,11,12;BYMONTHDAY=1,2,3,4,5,6,7,8,9,10",
    "FREQ=MONTHLY;BYDAY=SU,MO",
], ids=["hourly", "minutely", "daily", "byhour", "daily-by-monthday", "monthly-two-days"])
async def test_an_imported_vtimezone_changing_more_than_twice_a_month_is_refused(
        client: httpx.AsyncClient, user: User, rule: str) -> None:
    """A VTIMEZONE observance repeating more often than DST rules do (the iCalendar library
    would make every transition since 1601: minutes of CPU) is a 422 naming VTIMEZONE and
    the rule, refused before it is read."""
    _, headers = user
    cal = await make_calendar(client, headers)
    raw = HEAD + _vtimezone(rule) + _vevent(
        start="DTSTART;TZID=Bogus:20270101T090000\r\nDTEND;TZID=Bogus:20270101T100000\r\n"
    ) + TAIL
    resp = await _import(client, headers, cal["id"], raw)
    assert resp.status_code == 422, resp.text
    detail = resp.json()["detail"]
    assert "VTIMEZONE" in detail and rule.split(";")[0] in detail, detail


async def test_an_imported_outlook_style_vtimezone_still_imports(
        client: httpx.AsyncClient, user: User) -> None:
    """The rules real VTIMEZONEs have (yearly, the last or the nth Sunday of a month, the
    old BYMONTHDAY=8..14;BYDAY=SU form, folded lines) import, and keep the instants."""
    _, headers = user
    cal = await make_calendar(client, headers)
    for rule in ("FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU",
                 "FREQ=YEARLY;BYMONTH=11;BYMONTHDAY=1,2,3,4,5,6,7;BYDAY=SU",
                 "FREQ=YEARLY;BYMONTH=10;\r\n BYDAY=1SU;UNTIL=20361231T000000Z"):
        raw = HEAD + _vtimezone(rule, "Custom") + _vevent(
            start="DTSTART;TZID=Custom:20270101T090000\r\n"
                  "DTEND;TZID=Custom:20270101T100000\r\n") + TAIL
        resp = await _import(client, headers, cal["id"], raw)
        assert resp.status_code == 200, resp.text
    events = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                              params={"start": "2027-01-01T00:00:00Z",
                                      "end": "2027-01-02T00:00:00Z"})
    assert events.json()["occurrences"][0]["start"] == "2027-01-01T09:00:00Z", events.text


async def test_an_import_with_too_many_vtimezones_or_transitions_is_a_422(
        client: httpx.AsyncClient, user: User) -> None:
    """More than 100 VTIMEZONE components in one file, or more than 5,000 RDATE values in
    their observances (each a transition the library computes), is a 422 naming them."""
    _, headers = user
    cal = await make_calendar(client, headers)
    zones = "".join(_vtimezone("FREQ=YEARLY;BYMONTH=10;BYDAY=-1SU", f"Z{i}") for i in range(101))
    resp = await _import(client, headers, cal["id"], HEAD + zones + _vevent() + TAIL)
    assert resp.status_code == 422, resp.text
    assert "100 VTIMEZONE" in resp.json()["detail"], resp.text
    rdates = ",".join(f"{1700 + i // 12:04d}{1 + i % 12:02d}01T000000" for i in range(5001))
    zone = ("BEGIN:VTIMEZONE\r\nTZID:Q\r\nBEGIN:DAYLIGHT\r\nDTSTART:16010101T000000\r\n"
            "TZOFFSETFROM:+0000\r\nTZOFFSETTO:+0100\r\nRDATE:" + rdates +
            "\r\nEND:DAYLIGHT\r\nEND:VTIMEZONE\r\n")
    resp = await _import(client, headers, cal["id"], HEAD + zone + _vevent() + TAIL)
    assert resp.status_code == 422, resp.text
    assert "5000 RDATE" in resp.json()["detail"], resp.text


def _corp_time_file(offset: str, with_zone: bool = True) -> bytes:
    zone = ("BEGIN:VTIMEZONE\r\nTZID:Corp Time\r\nBEGIN:STANDARD\r\n"
            f"DTSTART:19700101T000000\r\nTZOFFSETFROM:{offset}\r\nTZOFFSETTO:{offset}\r\n"
            "END:STANDARD\r\nEND:VTIMEZONE\r\n") if with_zone else ""
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//test//EN\r\n" + zone
            + "BEGIN:VEVENT\r\nUID:corp-1\r\nSUMMARY:Stand-up\r\n"
            "DTSTART;TZID=Corp Time:20260105T090000\r\n"
            "DTEND;TZID=Corp Time:20260105T093000\r\n"
            "END:VEVENT\r\nEND:VCALENDAR\r\n").encode()


def test_a_files_own_custom_zone_is_never_another_files() -> None:
    """Two accounts' files each define a custom zone named "Corp Time": each file's events
    are read with its own definition (the library's per-process cache kept the first one:
    the second account's 09:00 at -03:00 was stored as 04:00 UTC, the first's +05:00)."""
    first = ical.parse(_corp_time_file("+0500"), "UTC").events[0]
    second = ical.parse(_corp_time_file("-0300"), "UTC").events[0]
    assert first.start_time == datetime(2026, 1, 5, 4, 0, tzinfo=UTC)
    assert second.start_time == datetime(2026, 1, 5, 12, 0, tzinfo=UTC)
    undefined = ical.parse(_corp_time_file("+0500", with_zone=False), "UTC").events[0]
    assert undefined.start_time != first.start_time  # not the other file's definition


CALS = "/api/v1/calendars"


async def test_zero_width_calendar_name_is_refused(client: httpx.AsyncClient,
                                                   user: User) -> None:
    """A calendar name of zero-width spaces shows nothing: a 422 like a blank one (it was
    created), on create and rename."""
    _, headers = user
    resp = await client.post(CALS, json={"name": "\u200b\u200b"}, headers=headers)
    assert resp.status_code == 422 and resp.json()["field"] == "name", resp.text
    cal = await make_calendar(client, headers, "Work")
    renamed = await client.patch(f"{CALS}/{cal['id']}", json={"name": " \u2060 "},
                                 headers=headers)
    assert renamed.status_code == 422, renamed.text


async def test_nfc_nfd_calendar_names_are_one_name(client: httpx.AsyncClient,
                                                   user: User) -> None:
    """"Café" typed composed and decomposed is one name (unique per user): a second
    calendar of the other form is a 409, not a look-alike twin; stored composed."""
    _, headers = user
    nfc = unicodedata.normalize("NFC", "Café")
    nfd = unicodedata.normalize("NFD", "Café")
    made = await client.post(CALS, json={"name": nfd}, headers=headers)
    assert made.status_code == 201 and made.json()["name"] == nfc, made.text
    resp = await client.post(CALS, json={"name": nfc}, headers=headers)
    assert resp.status_code == 409, resp.text


async def test_a_name_of_255_characters_typed_decomposed_is_accepted(
        client: httpx.AsyncClient, user: User) -> None:
    """A name's limit, 255, counts it composed, as stored: 255 "é" typed decomposed (510
    code points) are a 201, stored composed, and 256 a 422 naming the field (the 255 were
    refused by the limit counted on the text as sent)."""
    _, headers = user
    resp = await client.post(CALS, json={"name": "e\u0301" * 255}, headers=headers)
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "\u00e9" * 255
    over = await client.post(CALS, json={"name": "e\u0301" * 256}, headers=headers)
    assert over.status_code == 422 and over.json()["field"] == "name", over.text


async def test_a_rename_to_255_characters_typed_decomposed_is_accepted(
        client: httpx.AsyncClient, user: User) -> None:
    """Renaming counts the name as creating does: 255 "é" typed decomposed are a 200 with
    the composed name (it was a 422 "at most 255 characters")."""
    _, headers = user
    cal = await make_calendar(client, headers, "Work")
    resp = await client.patch(f"{CALS}/{cal['id']}", json={"name": "e\u0301" * 255},
                              headers=headers)
    assert resp.status_code == 200, resp.text
    assert resp.json()["name"] == "\u00e9" * 255


async def test_a_name_of_255_letters_with_a_trailing_zero_width_space_is_accepted(
        client: httpx.AsyncClient, user: User) -> None:
    """A name is stored without invisible characters around it and limited as stored: 255
    letters pasted with a trailing zero-width space are the 255-letter name (it was a 422
    counting the zero-width space)."""
    _, headers = user
    resp = await client.post(CALS, json={"name": "a" * 255 + "\u200b"}, headers=headers)
    assert resp.status_code == 201, resp.text
    assert resp.json()["name"] == "a" * 255


async def test_import_moving_a_google_id_to_another_event(client: httpx.AsyncClient,
                                                         user: User) -> None:
    """A re-import in which an X-GOOGLE-EVENT-ID moves from one event of the calendar to
    another (each id held once in the end) updates both (it was a 409: the rows were
    written one at a time, the id on both halfway)."""
    _, headers = user
    cal = await make_calendar(client, headers)
    await make_event(client, headers, cal["id"], summary="b", uid="b@x",
                     start_time="2027-01-01T09:00:00Z", end_time="2027-01-01T10:00:00Z")
    await make_event(client, headers, cal["id"], summary="a", uid="a@x", google_event_id="g1",
                     start_time="2027-01-02T09:00:00Z", end_time="2027-01-02T10:00:00Z")
    ics = ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\n"
           "BEGIN:VEVENT\r\nUID:b@x\r\nDTSTART:20270101T090000Z\r\n"
           "DTEND:20270101T100000Z\r\nSUMMARY:b\r\nX-GOOGLE-EVENT-ID:g1\r\nEND:VEVENT\r\n"
           "BEGIN:VEVENT\r\nUID:a@x\r\nDTSTART:20270102T090000Z\r\n"
           "DTEND:20270102T100000Z\r\nSUMMARY:a\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    resp = await client.post(f"{CALS}/{cal['id']}/import", headers=headers,
                             files={"file": ("c.ics", ics.encode())})
    assert resp.status_code == 200, resp.text
    assert resp.json()["updated"] == 2


async def test_a_series_starting_in_the_repeated_hour_of_a_dst_end_is_refused(
        client: httpx.AsyncClient, user: User) -> None:
    """New York's fall-back night repeats 01:00-02:00: a daily series given as starting at
    the second 01:30 (-05:00) is a 422 (a repeated wall time is its first instance, so the
    series was listed an hour early and its own start was no occurrence); the first 01:30
    (-04:00) is its first occurrence, and a single event at the second 01:30 is kept."""
    _, headers = user
    cal = await make_calendar(client, headers, "NY", "America/New_York")
    events = f"{CALS}/{cal['id']}/events"
    second = await client.post(events, headers=headers, json={
        "summary": "s", "start_time": "2027-11-07T01:30:00-05:00",
        "end_time": "2027-11-07T02:00:00-05:00", "recurrence_rule": "FREQ=DAILY;COUNT=3"})
    assert second.status_code == 422 and "second time" in second.text, second.text
    first = await make_event(client, headers, cal["id"], summary="f",
                             start_time="2027-11-07T01:30:00-04:00",
                             end_time="2027-11-07T02:00:00-05:00",
                             recurrence_rule="FREQ=DAILY;COUNT=3")
    occ = (await client.get(events, headers=headers, params={
        "start": "2027-11-06T00:00:00Z", "end": "2027-11-12T00:00:00Z"})).json()["occurrences"]
    assert occ[0]["start"] == first["start_time"] == "2027-11-07T05:30:00Z", occ
    single = await make_event(client, headers, cal["id"], summary="once",
                              start_time="2027-11-07T01:30:00-05:00",
                              end_time="2027-11-07T01:45:00-05:00")
    assert single["start_time"] == "2027-11-07T06:30:00Z"

