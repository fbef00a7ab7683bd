"""The prompts page in a real browser: publish a version with a variable, publish a second
to staging, promote it to production, preview a render (and its 422 for a missing
variable), bad JSON; another user's prompts never show; texts are text, never markup."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.prompts.conftest import publish
from tests.support.identity import make_user

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]
EVIL = '<img src=x onerror="window.pwned=1">'


async def test_publish_promote_and_preview(page: Any, console: str, client: httpx.AsyncClient,
                                          database: Database, test_keys: KeyMaterial) -> None:
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    _, other = await make_user(database)
    resp = await client.post("/api/v1/prompts", headers=other, json={
        "prompt_key": "their.secret", "prompt_text": "Their secret text"})
    assert resp.status_code == 201, resp.text

    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/prompts")
    keys = page.locator("#keys-body")
    await expect(keys).to_contain_text("agent.system")  # the factory default
    await expect(keys).not_to_contain_text("their.secret")

    # Publish v1 (production) with a variable; the text is shown as text.
    await page.get_by_role("textbox", name="Key", exact=True).fill("chat.system")
    await page.get_by_role("textbox", name="Text", exact=True).fill(EVIL + " Hello {{name}}")
    await page.get_by_label("Variables (JSON)").fill('[{"name": "name"}]')
    await page.get_by_role("button", name="Publish").click()
    await expect(page.locator("#notice")).to_contain_text("Published chat.system v1")
    versions = page.locator("#versions-body tr")
    await expect(versions).to_have_count(1)
    await expect(versions.first.locator("td.labels")).to_have_text("production")

    # v2 to staging, then promoted to production.
    await page.get_by_label("Label to move").fill("staging")
    await page.get_by_role("textbox", name="Text", exact=True).fill("Hi {{name}}, v2")
    await page.get_by_role("button", name="Publish").click()
    await expect(versions).to_have_count(2)
    await expect(page.locator('#versions-body tr[data-version="2"] td.labels')).to_contain_text("staging")
    await page.get_by_role("button", name="Move production to v2").click()
    await expect(page.locator('#versions-body tr[data-version="2"] td.labels')).to_contain_text(
        "production")
    await expect(page.locator('#versions-body tr[data-version="1"] td.labels')).to_have_text("—")
    await expect(keys.locator('tr[data-key="chat.system"]')).to_contain_text("production → v2")
    resolved = await client.get("/api/v1/prompts/resolve", headers=headers,
                                params={"key": "chat.system"})
    assert resolved.json()["version"] == 2

    # Preview v1: the markup stays text; a missing variable is the server's 422.
    await page.get_by_role("button", name="Preview v1").click()
    await expect(page.locator("#preview-source")).to_have_text(EVIL + " Hello {{name}}")
    await page.get_by_label("Values (JSON)").fill('{"name": "Ada"}')
    await page.get_by_role("button", name="Render").click()
    await expect(page.locator("#preview-output")).to_have_text(EVIL + " Hello Ada")
    assert await page.evaluate("window.pwned") is None
    await page.get_by_label("Values (JSON)").fill("{}")
    await page.get_by_role("button", name="Render").click()
    await expect(page.locator("#notice")).to_contain_text("missing required variable 'name'")
    await page.get_by_label("Values (JSON)").fill("{nope")
    await page.get_by_role("button", name="Render").click()
    await expect(page.locator("#notice")).to_contain_text("Values is not valid JSON")

    # An arbitrary label by the form; a placeholder without a definition is refused.
    await page.get_by_label("Label", exact=True).fill("canary")
    await page.get_by_label("Version", exact=True).select_option(label="v1")
    await page.get_by_role("button", name="Move label").click()
    await expect(page.locator('#versions-body tr[data-version="1"] td.labels')).to_contain_text("canary")
    await page.get_by_role("textbox", name="Text", exact=True).fill("Hi {{nobody}}")
    await page.get_by_role("button", name="Publish").click()
    await expect(page.locator("#notice")).to_contain_text("nobody")
    await assert_accessible(page)
    await screenshot(page, "prompts")


async def test_console_moves_a_label_to_any_version_of_a_long_key(
        page: Any, console: str, client: httpx.AsyncClient, database: Database,
        test_keys: KeyMaterial) -> None:
    """The console shows a key's versions with a form to move any label to any version:
    with 101 versions it showed only the newest 100 (one page, next_cursor ignored), so v1
    could be neither previewed nor made production from the console."""
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    for i in range(101):
        await publish(client, headers, "probe.long", f"text {i}")
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/prompts")
    await page.get_by_role("button", name="Versions of probe.long (user)").click()
    await expect(page.locator("#versions-body tr").first).to_be_visible()
    await expect(page.locator("#label-version option")).to_have_count(101)
    await expect(page.locator('#versions-body tr[data-version="1"]')).to_have_count(1)
