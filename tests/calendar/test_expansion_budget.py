"""What one range query expands: an agenda with a limit expands from the range's start
until it has its limit (not every occurrence of the range), and no query expands more than
``service.MAX_EXPANDED`` occurrences (a 422 asking for a narrower range, not seconds of CPU
and hundreds of MB)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from roost.calendar import batch, service
from tests.calendar.conftest import Headers, make_calendar

User = tuple[uuid.UUID, Headers]
YEAR = {"start": "2027-01-01T00:00:00Z", "end": "2028-01-01T00:00:00Z"}


def _hourly(n: int) -> bytes:
    """``n`` hourly series of 30 s, at minute 0, 1, ...: 8,760 occurrences a year each."""
    return ("BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\n" + "".join(
        f"BEGIN:VEVENT\r\nUID:h{i}\r\nDTSTART:20270101T00{i:02d}00Z\r\n"
        f"DTEND:20270101T00{i:02d}30Z\r\nRRULE:FREQ=HOURLY;BYMINUTE={i}\r\nSUMMARY:h{i}\r\n"
        "END:VEVENT\r\n" for i in range(n)) + "END:VCALENDAR\r\n").encode()


async def _calendar_of_hourly_series(client: httpx.AsyncClient, headers: Headers,
                                     n: int) -> str:
    cal = await make_calendar(client, headers)
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                             files={"file": ("c.ics", _hourly(n))})
    assert resp.status_code == 200, resp.text
    return str(cal["id"])


def _spy(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many occurrences each ``batch.expand_many`` call made."""
    seen: list[int] = []
    real = batch.expand_many

    def spy(*args: Any, **kwargs: Any) -> Any:
        out = real(*args, **kwargs)
        seen.append(len(out[0]))
        return out

    monkeypatch.setattr(batch, "expand_many", spy)
    return seen


async def test_a_limited_agenda_does_not_expand_every_occurrence_of_the_range(
        client: httpx.AsyncClient, user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    """An agenda with limit=10 over a year of 30 hourly series (262,800 occurrences) expands
    a few hundred, and answers the same first occurrences, in order, truncated."""
    _, headers = user
    await _calendar_of_hourly_series(client, headers, 30)
    seen = _spy(monkeypatch)
    resp = await client.get("/api/v1/calendars/agenda", headers=headers,
                            params={**YEAR, "limit": 10})
    assert resp.status_code == 200, resp.text
    assert resp.json()["truncated"] is True
    assert sum(seen) <= service.MAX_OCCURRENCES, seen
    starts = [o["start"] for o in resp.json()["occurrences"]]
    assert starts == [f"2027-01-01T00:{i:02d}:00Z" for i in range(10)], starts
    # The limit reached only late in the range: expanded in growing spans, the same answer.
    resp = await client.get("/api/v1/calendars/agenda", headers=headers, params={
        **YEAR, "limit": 10_000})
    assert resp.status_code == 200, resp.text
    body = resp.json()
    assert body["truncated"] is True and len(body["occurrences"]) == 10_000
    assert body["occurrences"][-1]["start"] == "2027-01-14T21:09:00Z", body["occurrences"][-1]


async def test_free_busy_over_more_than_max_expanded_occurrences_is_a_422(
        client: httpx.AsyncClient, user: User, monkeypatch: pytest.MonkeyPatch) -> None:
    """Free/busy has no limit: a range with more than MAX_EXPANDED occurrences (here 30
    hourly series over a year, with the budget lowered) is a 422 asking for a narrower
    range; a narrower one answers."""
    _, headers = user
    await _calendar_of_hourly_series(client, headers, 30)
    monkeypatch.setattr(service, "MAX_EXPANDED", 100_000)
    resp = await client.get("/api/v1/calendars/freebusy", headers=headers, params=YEAR)
    assert resp.status_code == 422, resp.text
    assert "narrower range" in resp.json()["detail"], resp.text
    resp = await client.get("/api/v1/calendars/freebusy", headers=headers, params={
        "start": "2027-01-01T00:00:00Z", "end": "2027-02-01T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    assert len(resp.json()["busy"]) == 31 * 24 * 30, resp.json()["busy"][:3]


@pytest.mark.parametrize("rule", [
    "FREQ=HOURLY;BYMONTH=2;BYMONTHDAY=29;BYHOUR=0;COUNT=50000",
    "FREQ=DAILY;BYMONTH=2;BYMONTHDAY=29;COUNT=100",
])
async def test_a_count_rule_walked_over_millennia_is_a_422(
        client: httpx.AsyncClient, user: User, rule: str) -> None:
    """A COUNT rule is walked from DTSTART at every write and query: one whose occurrences
    are spread over more than MAX_COUNT of its periods (a leap day at a time) cost seconds
    of CPU each time, on the event loop.  Refused, naming why; the same days as a YEARLY
    rule are fine."""
    _, h = user
    cal = await make_calendar(client, h)
    times = {"summary": "x", "start_time": "8000-01-01T00:00:00Z",
             "end_time": "8000-01-01T01:00:00Z"}
    r = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=h,
                          json={**times, "recurrence_rule": rule})
    assert r.status_code == 422, r.text
    assert "COUNT" in r.json()["detail"]
    ok = await client.post(f"/api/v1/calendars/{cal['id']}/events", headers=h, json={
        **times, "recurrence_rule": "FREQ=YEARLY;BYMONTH=2;BYMONTHDAY=29;COUNT=50000"})
    assert ok.status_code == 201, ok.text
