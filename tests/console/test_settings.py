"""The runtime settings page in a real browser: an administrator overrides a setting
(a value the schema refuses shows the schema's message under the field), flips a
boolean, resets to the default; sign-up follows at once; plain users get "Not found"."""

from __future__ import annotations

from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]


async def _stored(database: Database, key: str) -> str | None:
    async with database.transaction() as s:
        value: str | None = await s.scalar(
            text("SELECT value FROM system_settings WHERE key = :k"), {"k": key})
        return value


async def test_override_refuse_and_reset_settings(
        page: Any, console: str, database: Database, test_keys: KeyMaterial) -> None:
    from playwright.async_api import expect

    admin_id, _ = await make_user(database, admin=True, username="boss")
    await sign_in_as(page.context, console, database, test_keys, admin_id)
    async with httpx.AsyncClient(base_url=console) as http:
        form = await http.get("/console/register")
        assert "wait for an administrator" in form.text
    await page.goto("/console/settings")  # redirects to the administration section
    await expect(page).to_have_url(f"{console}/console/admin/settings", timeout=20_000)
    row = page.locator("#settings tr").filter(has_text="chat_context_messages")
    await expect(row).to_contain_text("Earlier messages sent to the model", timeout=20_000)
    await expect(row).to_contain_text("default 20")
    await assert_accessible(page)

    field = page.get_by_label("Value of chat_context_messages")
    await expect(field).to_have_value("20")
    await field.fill("5000")
    await row.get_by_role("button", name="Save chat_context_messages").click()
    await expect(row.get_by_role("alert")).to_have_text(
        "chat_context_messages: Input should be less than or equal to 1000", timeout=20_000)
    await expect(field).to_have_attribute("aria-invalid", "true")
    assert await _stored(database, "chat_context_messages") is None

    await field.fill("40")
    await row.get_by_role("button", name="Save chat_context_messages").click()
    await expect(page.get_by_role("status")).to_have_text("chat_context_messages is now 40.",
                                                          timeout=20_000)
    row = page.locator("#settings tr").filter(has_text="chat_context_messages")
    await expect(row.get_by_text("override", exact=True)).to_be_visible()
    await expect(row.get_by_role("alert")).to_be_hidden()
    assert await _stored(database, "chat_context_messages") == "40"
    await screenshot(page, "admin-settings")

    # A boolean is a checkbox; sign-up applies it on the very next request.
    flag = page.get_by_label("Value of open_registration")
    await expect(flag).not_to_be_checked()
    await flag.check()
    await page.get_by_role("button", name="Save open_registration").click()
    await expect(page.get_by_role("status")).to_have_text("open_registration is now true.",
                                                          timeout=20_000)
    async with httpx.AsyncClient(base_url=console) as http:
        form = await http.get("/console/register")  # the sign-up page says so too
        assert form.status_code == 200 and "wait for an administrator" not in form.text
        for name in ("first", "second"):  # the first account becomes root
            signed = await http.post("/api/v1/auth/register", json={
                "username": name, "email": f"{name}@example.test",
                "password": "plum-quartz-river-kettle"})
        assert signed.json()["status"] == "active", signed.text

    await page.get_by_role("button", name="Reset chat_context_messages").click()
    await expect(page.get_by_role("status")).to_have_text(
        "chat_context_messages is back to its default, 20.", timeout=20_000)
    await expect(page.get_by_label("Value of chat_context_messages")).to_have_value("20")
    await expect(page.get_by_role("button", name="Reset chat_context_messages")).to_be_disabled()
    assert await _stored(database, "chat_context_messages") is None


async def test_saving_or_resetting_a_setting_keeps_the_focus_in_its_row(
        page: Any, console: str, database: Database, test_keys: KeyMaterial) -> None:
    """A keyboard user saves a setting with Enter in its field or on Save, then resets it:
    the focus stays on the control used (on the field once Reset is disabled again), where
    before the redrawn row dropped it to the top of the page."""
    from playwright.async_api import expect

    admin_id, _ = await make_user(database, admin=True)
    await sign_in_as(page.context, console, database, test_keys, admin_id)
    await page.goto("/console/admin/settings")
    field = page.get_by_label("Value of chat_context_messages")
    await expect(field).to_have_value("20", timeout=20_000)
    await field.focus()
    await field.fill("40")
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_have_text("chat_context_messages is now 40.",
                                                          timeout=20_000)
    await expect(field).to_be_focused()

    await field.fill("41")
    await page.get_by_role("button", name="Save chat_context_messages").focus()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_have_text("chat_context_messages is now 41.",
                                                          timeout=20_000)
    await expect(page.get_by_role("button", name="Save chat_context_messages")).to_be_focused()

    await page.keyboard.press("Tab")
    await expect(page.get_by_role("button", name="Reset chat_context_messages")).to_be_focused()
    await page.keyboard.press("Enter")
    await expect(page.get_by_role("status")).to_have_text(
        "chat_context_messages is back to its default, 20.", timeout=20_000)
    await expect(field).to_be_focused()


async def test_a_plain_user_cannot_see_the_settings(
        page: Any, console: str, database: Database, test_keys: KeyMaterial) -> None:
    user_id, _ = await make_user(database, username="plain")
    await sign_in_as(page.context, console, database, test_keys, user_id)
    answer = await page.goto("/console/admin/settings")
    assert answer is not None and answer.status == 404
    await page.get_by_role("heading", name="Not found").wait_for()
