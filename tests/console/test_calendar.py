"""The calendar page in a real browser: create a calendar, a weekly event with an RRULE
(its occurrences in the agenda), edit and delete it, import an .ics file, the export link;
another user's events never show; titles are text, never markup."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]
EVIL = '<img src=x onerror="window.pwned=1">Standup'


async def test_calendars_events_and_import(page: Any, console: str, client: httpx.AsyncClient,
                                          database: Database, test_keys: KeyMaterial,
                                          tmp_path: Path) -> None:
    from playwright.async_api import expect

    user_id, _ = await make_user(database)
    _, other = await make_user(database)
    theirs = await client.post("/api/v1/calendars", json={"name": "Theirs"}, headers=other)
    await client.post(f"/api/v1/calendars/{theirs.json()['id']}/events", headers=other, json={
        "summary": "Their secret", "start_time": "2020-01-06T09:00:00Z",
        "end_time": "2020-01-06T10:00:00Z", "recurrence_rule": "FREQ=DAILY"})

    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/calendar")
    await page.get_by_text("No calendars yet").wait_for()
    await page.get_by_label("Name").fill("Work")
    await page.get_by_label("Time zone").fill("UTC")
    await page.get_by_role("button", name="Create calendar").click()
    await expect(page.locator("#calendars-body")).to_contain_text("Work")
    await expect(page.get_by_role("link", name="Export Work (.ics)")).to_be_visible()

    # A weekly event starting on the Monday of the week shown: 1 occurrence a week.
    monday = await page.locator("#agenda-start").input_value()
    await page.get_by_label("Title").fill(EVIL)
    await page.get_by_label("Starts").fill(f"{monday}T09:00")
    await page.get_by_label("Ends").fill(f"{monday}T09:30")
    await page.get_by_label("Repeats (RRULE)").fill("FREQ=WEEKLY;BYDAY=MO,WE")
    await page.get_by_role("button", name="Create event").click()
    rows = page.locator("#agenda-body tr[data-event-id]")
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text(EVIL)
    assert await page.evaluate("window.pwned") is None
    await expect(page.locator("#agenda-body")).not_to_contain_text("Their secret")
    await page.get_by_label("View").select_option("31")
    await expect(rows).to_have_count(10)  # Mondays and Wednesdays of 31 days from a Monday
    await assert_accessible(page)
    await screenshot(page, "calendar")

    # A bad rule: the server's message is shown, nothing saved.
    await page.get_by_role("button", name=f"Edit {EVIL}").first.click()
    await expect(page.get_by_role("heading", name=f"Edit “{EVIL}”")).to_be_visible()
    await page.get_by_label("Repeats (RRULE)").fill("FREQ=WEEKLY;BYDAY=FUNDAY")
    await page.get_by_role("button", name="Save event").click()
    await expect(page.locator("#notice")).to_contain_text("BYDAY")
    await page.get_by_label("Repeats (RRULE)").fill("FREQ=WEEKLY;BYDAY=MO;COUNT=2")
    await page.get_by_label("Title").fill("Standup")
    await page.get_by_role("button", name="Save event").click()
    await expect(rows).to_have_count(2)
    await expect(rows.first).to_contain_text("Standup")

    page.on("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete Standup").first.click()
    await expect(page.get_by_text("Nothing in this range.")).to_be_visible()

    # Import an .ics file into the calendar.
    ics = tmp_path / "import.ics"
    ics.write_text(
        "BEGIN:VCALENDAR\r\nVERSION:2.0\r\nPRODID:-//t//EN\r\nBEGIN:VEVENT\r\nUID:imp-1\r\n"
        f"DTSTART:{monday.replace('-', '')}T120000Z\r\nDTEND:{monday.replace('-', '')}T130000Z\r\n"
        "RRULE:FREQ=DAILY;COUNT=3\r\nSUMMARY:Imported lunch\r\nEND:VEVENT\r\nEND:VCALENDAR\r\n")
    await page.get_by_label("File (.ics)").set_input_files(str(ics))
    await page.get_by_role("button", name="Import", exact=True).click()
    await expect(page.locator("#import-result")).to_contain_text("1 created")
    await expect(page.locator("#agenda-body")).to_contain_text("Imported lunch")
    await expect(rows).to_have_count(3)

    bad = tmp_path / "bad.ics"
    bad.write_text("BEGIN:VCALENDAR\r\nBEGIN:VEVENT\r\nDTSTART:20270101T090000Z\r\nEND:VEVENT\r\n"
                   "END:VCALENDAR\r\n")
    await page.get_by_label("File (.ics)").set_input_files(str(bad))
    await page.get_by_role("button", name="Import", exact=True).click()
    await expect(page.locator("#notice")).to_contain_text("UID is required")

    # The export link downloads the calendar.
    async with page.expect_download() as info:
        await page.get_by_role("link", name="Export Work (.ics)").click()
    download = await info.value
    saved = tmp_path / "export.ics"
    await download.save_as(str(saved))
    assert "Imported lunch" in saved.read_text()


async def test_calendar_quick_next_next_shows_the_named_week(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """Two quick clicks on Next, the first week's answer arriving last: the agenda shows the
    week its date field names, not the late answer's."""
    user_id, headers = await make_user(database)
    cal = await client.post("/api/v1/calendars", json={"name": "Daily"}, headers=headers)
    assert cal.status_code == 201, cal.text
    ev = await client.post(f"/api/v1/calendars/{cal.json()['id']}/events", headers=headers, json={
        "summary": "Standup", "start_time": "2020-01-06T12:00:00Z",
        "end_time": "2020-01-06T12:15:00Z", "recurrence_rule": "FREQ=DAILY"})
    assert ev.status_code == 201, ev.text
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/calendar")
    await page.locator("#agenda-body tr[data-event-id]").nth(6).wait_for()
    calls = {"n": 0}

    async def slow_first(route: Any) -> None:
        calls["n"] += 1
        if calls["n"] == 1:
            await asyncio.sleep(2)
        await route.continue_()
    await page.route("**/api/v1/calendars/agenda?*", slow_first)
    await page.locator("#agenda-next").click()
    await page.locator("#agenda-next").click()
    await page.wait_for_timeout(3500)  # past the slow answer
    start = await page.locator("#agenda-start").input_value()
    first_day: str = await page.locator("#agenda-body tr.day th").first.inner_text()
    expected: str = await page.evaluate(
        "v => { const [y, m, d] = v.split('-').map(Number); return new Date(y, m - 1, d, 12)"
        ".toLocaleDateString([], { weekday: 'long', year: 'numeric', month: 'long', day: 'numeric' }); }",
        start)
    assert first_day == expected, (start, first_day)
