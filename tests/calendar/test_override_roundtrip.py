"""The export/import round trip of a series made all-day after one of its occurrences
was changed."""

from __future__ import annotations

import uuid

import httpx

from tests.calendar.conftest import Headers, make_calendar, make_event

User = tuple[uuid.UUID, Headers]


async def test_series_made_all_day_after_an_override_exports_and_reimports_unchanged(
        client: httpx.AsyncClient, user: User) -> None:
    """Export then import changes nothing, for an override (09:00Z) left from before its
    series was made all-day: its RECURRENCE-ID was written as a DATE, read back as that
    day's midnight, and the import made a second override (listed twice)."""
    _, headers = user
    cal = await make_calendar(client, headers)
    series = await make_event(client, headers, cal["id"], summary="s",
                              start_time="2027-01-01T09:00:00Z", end_time="2027-01-01T10:00:00Z",
                              recurrence_rule="FREQ=DAILY;COUNT=5")
    base = f"/api/v1/calendars/{cal['id']}/events/{series['id']}"
    resp = await client.put(f"{base}/occurrences/2027-01-02T09:00:00Z", json={"summary": "x"},
                            headers=headers)
    assert resp.status_code == 201, resp.text
    resp = await client.patch(base, headers=headers, json={
        "all_day": True, "start_time": "2027-01-01T00:00:00Z", "end_time": "2027-01-02T00:00:00Z"})
    assert resp.status_code == 200, resp.text
    data = (await client.get(f"/api/v1/calendars/{cal['id']}/export", headers=headers)).content
    resp = await client.post(f"/api/v1/calendars/{cal['id']}/import", headers=headers,
                             files={"file": ("c.ics", data)})
    assert resp.status_code == 200, resp.text
    result = resp.json()
    resp = await client.get(f"/api/v1/calendars/{cal['id']}/events", headers=headers, params={
        "start": "2026-12-30T00:00:00Z", "end": "2027-01-10T00:00:00Z"})
    shown = [(o["summary"], o["start"], o["recurrence_id"]) for o in resp.json()["occurrences"]]
    assert result == {"created": 0, "updated": 0, "unchanged": 2, "skipped": []}, shown
