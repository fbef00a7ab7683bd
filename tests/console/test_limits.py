"""The rate limits page in a real browser: an administrator sees the defaults, sets a
user's limits by username (a refused value shows the API's message under the form),
sees and resets the override; plain users get "Not found"; the form finds any account by
username or e-mail as sign-in does (the 501st, an address typed decomposed)."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import select

from roost.config import Settings
from roost.db.engine import Database
from roost.identity.accounts import create_user
from roost.identity.models import User
from roost.keyfiles import KeyMaterial
from roost.principal import SYSTEM
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_local_model=False,
                    rate_limit_requests_per_minute=600)


async def _stored(database: Database, user_id: uuid.UUID) -> tuple[int | None, int | None]:
    async with database.transaction() as s:
        row = (await s.execute(select(User.rate_limit_rpm, User.rate_limit_streams)
                               .where(User.id == user_id))).one()
        return row[0], row[1]


async def test_set_refuse_and_reset_limits(
        page: Any, console: str, database: Database, test_keys: KeyMaterial) -> None:
    from playwright.async_api import expect

    admin_id, _ = await make_user(database, admin=True, username="boss")
    lou_id, _ = await make_user(database, username="lou")
    await sign_in_as(page.context, console, database, test_keys, admin_id)
    await page.goto("/console/admin/limits")
    await expect(page.locator("#default-rpm")).to_have_text("600")
    await expect(page.locator("#default-streams")).to_have_text("unlimited")
    await expect(page.get_by_text("No overrides: the defaults apply to everyone.")).to_be_visible()
    await assert_accessible(page)

    await page.get_by_label("Username, e-mail or id").fill("lou")
    await page.get_by_label("Requests per minute").fill("-1")
    await page.get_by_role("button", name="Save limits").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "requests_per_minute: Input should be greater than or equal to 0")
    assert await _stored(database, lou_id) == (None, None)

    await page.get_by_label("Requests per minute").fill("120")
    await page.get_by_label("Concurrent streams").fill("2")
    await page.get_by_role("button", name="Save limits").click()
    await expect(page.get_by_role("status")).to_have_text(
        "lou: 120 requests per minute, 2 concurrent streams.")
    row = page.locator("#overrides tr").filter(has_text="lou")
    await expect(row).to_contain_text("120")
    await expect(row.locator("td").nth(1)).to_have_text("2")
    await expect(page.get_by_role("alert")).to_be_hidden()
    assert await _stored(database, lou_id) == (120, 2)
    await screenshot(page, "admin-limits")

    # Edit fills the form; an unknown user is said so, nothing changes.
    await row.get_by_role("button", name="Edit user lou").click()
    await expect(page.get_by_label("Requests per minute")).to_have_value("120")
    await page.get_by_label("Username, e-mail or id").fill("nobody-at-all")
    await page.get_by_role("button", name="Save limits").click()
    await expect(page.get_by_role("alert")).to_have_text(
        "no active account with that username, e-mail or id")

    await row.get_by_role("button", name="Reset user lou").click()
    await expect(page.get_by_role("status")).to_have_text("user lou is back to the defaults.")
    await expect(page.get_by_text("No overrides: the defaults apply to everyone.")).to_be_visible()
    assert await _stored(database, lou_id) == (None, None)


async def test_a_plain_user_cannot_see_the_limits(
        page: Any, console: str, database: Database, test_keys: KeyMaterial) -> None:
    user_id, _ = await make_user(database, username="plain")
    await sign_in_as(page.context, console, database, test_keys, user_id)
    answer = await page.goto("/console/admin/limits")
    assert answer is not None and answer.status == 404
    await page.get_by_role("heading", name="Not found").wait_for()


async def test_the_form_finds_any_account_as_sign_in_does(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """The form named only the first 500 accounts it listed ("no user named late-comer"
    for the 501st) and compared an address as typed (one with a decomposed "é" matched
    nothing): the server now looks the name up among every account, as sign-in reads it."""
    from playwright.async_api import expect

    admin_id, _ = await make_user(database, admin=True)
    async with database.transaction() as session:
        for n in range(500):
            await create_user(session, SYSTEM, username=f"filler-{n:04d}",
                              email=f"filler-{n:04d}@example.test", password=None,
                              status="active", first_becomes_root=False)
        for name, email in (("late-comer", "late-comer@example.test"),
                            ("jose", "jos\u00e9@example.test")):
            await create_user(session, SYSTEM, username=name, email=email, password=None,
                              status="active", first_becomes_root=False)
    await sign_in_as(page.context, console, database, test_keys, admin_id)
    await page.goto("/console/admin/limits")
    for typed, shown in (("late-comer", "late-comer"), ("jose\u0301@example.test", "jose")):
        await page.locator("#limit-target").fill(typed)
        await page.locator("#limit-rpm").fill("7")
        await page.locator("#set-form").locator("button[type=submit]").click()
        await expect(page.locator("#limits-status")).to_contain_text(shown, timeout=20_000)
        assert await page.locator("#set-error").is_hidden(), \
            await page.locator("#set-error").text_content()
    await page.locator("#limit-target").fill("nobody-here")
    await page.locator("#limit-rpm").fill("7")
    await page.locator("#set-form").locator("button[type=submit]").click()
    await expect(page.locator("#set-error")).to_contain_text("no active account")
