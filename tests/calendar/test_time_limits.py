"""Events and ranges at the edges of the representable time (years 1 and 9999): every
request gets a clear answer (2xx, or 422 naming the limit), never a 500, whatever the
zone, rule or length of the event."""

from __future__ import annotations

import uuid
from datetime import date, datetime
from typing import Any

import httpx
import pytest

from roost.calendar import recurrence
from tests.calendar.conftest import Headers, make_calendar

User = tuple[uuid.UUID, Headers]

EDGE_EVENTS: list[dict[str, Any]] = [
    {"start_time": "9999-12-31T09:00:00Z", "end_time": "9999-12-31T10:00:00Z",
     "recurrence_rule": "FREQ=DAILY"},
    {"start_time": "9999-12-01T09:00:00Z", "end_time": "9999-12-06T10:00:00Z",
     "recurrence_rule": "FREQ=DAILY", "timezone": "Pacific/Kiritimati"},
    {"start_time": "9999-11-30T09:00:00Z", "end_time": "9999-11-30T10:00:00Z",
     "recurrence_rule": "FREQ=MONTHLY;BYMONTHDAY=1", "timezone": "America/New_York"},
    {"start_time": "9999-12-30T09:00:00Z", "end_time": "9999-12-30T10:00:00Z",
     "recurrence_rule": "FREQ=DAILY;UNTIL=99991231T235959Z"},
    {"start_time": "9999-12-31T23:00:00Z", "end_time": "9999-12-31T23:59:59Z",
     "timezone": "Pacific/Kiritimati"},
    {"start_time": "0001-01-01T00:00:00Z", "end_time": "0001-01-01T01:00:00Z",
     "recurrence_rule": "FREQ=WEEKLY;COUNT=3", "timezone": "Pacific/Pago_Pago"},
    {"start_time": "0001-01-01T12:00:00Z", "end_time": "0001-03-01T12:00:00Z",
     "recurrence_rule": "FREQ=YEARLY;COUNT=2"},
]
EDGE_RANGES = [
    ("9999-12-25T00:00:00Z", "9999-12-30T00:00:00Z"),  # inside the limits: expanded
    ("0001-01-03T00:00:00Z", "0001-02-01T00:00:00Z"),
    ("9999-12-20T00:00:00Z", "9999-12-31T23:00:00Z"),
    ("9999-12-31T00:00:00Z", "9999-12-31T23:59:59Z"),
    ("0001-01-01T00:00:00Z", "0001-01-20T00:00:00Z"),
    ("9999-01-01T00:00:00Z", "9999-12-31T00:00:00Z"),
]


@pytest.mark.parametrize("event", EDGE_EVENTS)
async def test_events_and_ranges_at_the_edges_of_time_never_fail(
        client: httpx.AsyncClient, user: User, event: dict[str, Any]) -> None:
    _, headers = user
    cal = await make_calendar(client, headers)
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/events",
                             json={"summary": "edge", **event}, headers=headers)
    assert resp.status_code in (201, 422), resp.text
    if resp.status_code == 422:
        assert "year" in resp.json()["detail"]
    for start, end in EDGE_RANGES:
        params = {"start": start, "end": end}
        for path in (f"/api/v1/calendars/{cal['id']}/events", "/api/v1/calendars/agenda",
                     "/api/v1/calendars/freebusy"):
            got = await client.get(path, params=params, headers=headers)
            assert got.status_code in (200, 422), (path, params, got.text)
            if got.status_code == 422:
                assert "year" in got.json()["detail"], got.text


async def test_an_imported_event_beyond_the_limits_is_refused_naming_them(
        client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    cal = await make_calendar(client, headers)
    ics = (b"BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//t//EN\r\nBEGIN:VEVENT\r\n"
           b"UID:late@example.org\r\nDTSTAMP:20270101T000000Z\r\n"
           b"DTSTART:99991231T090000Z\r\nDTEND:99991231T100000Z\r\nSUMMARY:late\r\n"
           b"RRULE:FREQ=DAILY\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import",
                             files={"file": ("late.ics", ics, "text/calendar")}, headers=headers)
    assert resp.status_code == 422, resp.text
    assert "9999-12-30" in resp.json()["detail"] and "UID late@example.org" in resp.json()["detail"]
    listed = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                              params={"start": "9999-12-01T00:00:00Z",
                                      "end": "9999-12-29T00:00:00Z"})
    assert listed.status_code == 200 and listed.json()["occurrences"] == []


@pytest.mark.parametrize(("tz", "rule", "hours", "want"), [
    ("Pacific/Kiritimati", "FREQ=DAILY", 1, 5),  # UTC+14: local days past 9999-12-31
    ("Pacific/Pago_Pago", "FREQ=DAILY", 1, 5),  # UTC-11
    ("America/New_York", "FREQ=WEEKLY;BYDAY=MO,WE,FR", 1, 2),
    ("UTC", "FREQ=MONTHLY;BYMONTHDAY=28", 1, 1),
    ("UTC", "FREQ=DAILY", 120, None),  # five-day occurrences ending after 9999: refused
])
async def test_a_range_at_the_end_of_9999_is_expanded_in_every_zone(
        client: httpx.AsyncClient, user: User, tz: str, rule: str, hours: int,
        want: int | None) -> None:
    _, headers = user
    cal = await make_calendar(client, headers)
    start = "9999-12-01T10:00:00Z"
    end = f"9999-12-{1 + (10 + hours) // 24:02d}T{(10 + hours) % 24:02d}:00:00Z"
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=headers, json={
        "summary": "late", "start_time": start, "end_time": end, "timezone": tz,
        "recurrence_rule": rule})
    assert resp.status_code == 201, resp.text
    got = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                           params={"start": "9999-12-25T00:00:00Z",
                                   "end": "9999-12-30T00:00:00Z"})
    if want is None:
        assert got.status_code == 422 and "after the year 9999" in got.json()["detail"]
    else:
        assert got.status_code == 200, got.text
        assert len(got.json()["occurrences"]) == want, got.json()


@pytest.mark.parametrize(("rule", "occurrence"), [
    ("FREQ=MONTHLY;INTERVAL=120;COUNT=900", "9997-01-01T09:00:00Z"),
    ("FREQ=MONTHLY;INTERVAL=10000;COUNT=50000", "9527-01-01T09:00:00Z"),
])
async def test_a_monthly_count_reaching_past_9999_runs_to_the_calendars_end(
        client: httpx.AsyncClient, user: User, rule: str, occurrence: str) -> None:
    """A MONTHLY rule whose COUNT would reach past the year 9999 is accepted (not a 500):
    its occurrences stop with the calendar, and the last ones are expanded."""
    _, headers = user
    cal = await make_calendar(client, headers)
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=headers, json={
        "summary": "x", "start_time": "2027-01-01T09:00:00Z",
        "end_time": "2027-01-01T10:00:00Z", "recurrence_rule": rule})
    assert resp.status_code == 201, resp.text
    year = int(occurrence[:4])
    got = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers,
                           params={"start": f"{year - 1}-06-01T00:00:00Z",
                                   "end": f"{year}-06-01T00:00:00Z"})
    assert got.status_code == 200, got.text
    starts = [o["start"].replace("+00:00", "Z") for o in got.json()["occurrences"]]
    assert starts == [occurrence], got.json()


def test_the_month_plan_of_a_count_past_9999_looks_at_a_few_months_only(
        monkeypatch: pytest.MonkeyPatch) -> None:
    """The month plan finds that COUNT=50,000 every 10,000 months ends past 9999 (never
    ending) by month arithmetic: a couple of month lookups, no walk over the occurrences;
    and a COUNT ending in December 9999 has a last date."""
    looked: list[int] = []
    month_days = recurrence._month_days

    def counted(month: int) -> tuple[int, int]:
        looked.append(month)
        return month_days(month)

    monkeypatch.setattr(recurrence, "_month_days", counted)
    start = datetime(2027, 1, 1, 9)
    plan = recurrence._month_plan("FREQ=MONTHLY;INTERVAL=10000;COUNT=50000", start, "UTC")
    assert plan is not None and plan.last is None
    assert len(looked) <= 2, looked
    # 2027-01 + 25 x 3,827 months = December 9999: the last month that exists
    plan = recurrence._month_plan("FREQ=MONTHLY;INTERVAL=3827;COUNT=26", start, "UTC")
    assert plan is not None and plan.last == date(9999, 12, 1).toordinal()


@pytest.mark.parametrize("extra", [
    {"rdates": ["0001-01-01T00:00:00+14:00"]},  # in the year 0 in UTC
    {"exdates": ["0001-01-01T00:00:00+14:00"]},
    {"rdates": ["9999-12-31T23:59:59-14:00"]},  # in the year 10000 in UTC
    {"exdates": ["9999-12-31T23:59:59-14:00"]},
])
async def test_rdates_or_exdates_outside_years_1_to_9999_in_utc_are_a_422_naming_the_field(
        client: httpx.AsyncClient, user: User, extra: dict[str, Any]) -> None:
    """An RDATE/EXDATE whose UTC instant is not representable is a 422 naming the field
    and the limits (as start_time gets), on create and on change, not a 500."""
    _, headers = user
    cal = await make_calendar(client, headers)
    series = {"summary": "s", "start_time": "2027-03-22T09:00:00Z",
              "end_time": "2027-03-22T10:00:00Z", "recurrence_rule": "FREQ=DAILY;COUNT=3"}
    url = f"/api/v1/calendars/{cal['id']}/events"
    (field,) = extra
    created = await client.post(url, json={**series, **extra}, headers=headers)
    assert created.status_code == 422, created.text
    assert created.json()["field"] == field and "9999-12-30" in created.json()["detail"]
    ok = await client.post(url, json=series, headers=headers)
    assert ok.status_code == 201, ok.text
    patched = await client.patch(f"{url}/{ok.json()['id']}", json=extra, headers=headers)
    assert patched.status_code == 422, patched.text
    assert patched.json()["field"] == field
