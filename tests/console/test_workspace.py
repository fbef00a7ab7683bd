"""The projects and tasks page in a real browser: create a project, add tasks, raise a
task's urgency and see the board re-sort, mark one done, the project's counts; another
user's tasks never show; titles are text, never markup."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]
EVIL = '<img src=x onerror="window.pwned=1">Refactor'
TIMEOUT = 20_000


async def test_the_board_re_sorts_when_urgency_changes(page: Any, console: str,
                                                       client: httpx.AsyncClient,
                                                       database: Database,
                                                       test_keys: KeyMaterial) -> None:
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    _, other = await make_user(database)
    await client.post("/api/v1/tasks-board", json={"title": "Their secret task",
                                                   "priority": "critical"}, headers=other)
    await client.post("/api/v1/tasks-board", json={"title": "Pay invoice", "priority": "high"},
                      headers=headers)

    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/projects")
    await expect(page.get_by_text("No projects yet")).to_be_visible(timeout=TIMEOUT)
    await page.get_by_label("Project name").fill("Website")
    await page.get_by_label("Language").fill("typescript")
    await page.get_by_role("button", name="Create project").click()
    await expect(page.locator("#projects-body")).to_contain_text("Website", timeout=TIMEOUT)

    await page.get_by_label("Title").fill(EVIL)
    await page.get_by_label("Priority").select_option("low")
    await page.get_by_label("In project").select_option(label="Website")
    await page.get_by_role("button", name="Add task").click()
    rows = page.locator("#board-body tr[data-task-id]")
    await expect(rows).to_have_count(2, timeout=TIMEOUT)
    await expect(rows.nth(0)).to_contain_text("Pay invoice")
    await expect(rows.nth(1)).to_contain_text(EVIL)
    assert await page.evaluate("window.pwned") is None
    await expect(page.locator("#board-body")).not_to_contain_text("Their secret task")
    await assert_accessible(page)

    # Raising the low task's urgency puts it first.
    urgency = page.get_by_label(f"Urgency of {EVIL}")
    await urgency.fill("9")
    await urgency.press("Tab")
    await expect(rows.nth(0)).to_contain_text(EVIL, timeout=TIMEOUT)
    await expect(rows.nth(1)).to_contain_text("Pay invoice")
    await screenshot(page, "workspace")

    # An out-of-range weight: the server's message, nothing changed.
    importance = page.get_by_label("Importance of Pay invoice")
    await importance.fill("11")
    await importance.press("Tab")
    await expect(page.locator("#notice")).to_contain_text("importance_weight", timeout=TIMEOUT)
    await expect(rows.nth(0)).to_contain_text(EVIL)

    # Done: to the bottom (the lowest score).
    await page.get_by_role("button", name=f"Mark {EVIL} done").click()
    await expect(rows.nth(1)).to_contain_text(EVIL, timeout=TIMEOUT)
    await expect(rows.nth(1).locator(".score")).to_have_text("0.00")

    # The project's details count what it groups.
    await page.get_by_role("button", name="Show Website").click()
    await expect(page.locator('#detail-counts dd[data-count="tasks"]')).to_have_text("1",
                                                                                     timeout=TIMEOUT)
    await expect(page.locator('#detail-counts dd[data-count="open_tasks"]')).to_have_text("0")
    await page.get_by_role("button", name="Archive Website").click()
    await expect(page.locator("#projects-body")).to_contain_text("archived", timeout=TIMEOUT)
