"""A form is sent once at a time (``submitOnce`` in static/console.js): a double click on a
create button creates one object, and a new account is told it was created, not taken."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.console.conftest import sign_in_as
from tests.support.identity import make_user

pytestmark = pytest.mark.needs_browser


def _items(body: Any) -> list[Any]:
    if isinstance(body, dict):
        return list(body.get("items", []))
    return list(body)


async def _count(client: httpx.AsyncClient, headers: dict[str, str], path: str) -> int:
    answer = await client.get(path, headers=headers)
    assert answer.status_code == 200, (path, answer.text)
    return len(_items(answer.json()))


async def test_a_double_click_on_a_create_button_creates_one_object(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """Add task, Create project and Create key each create one object on a double click,
    and their button is enabled again once the answer is in (the next one can be made)."""
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    keys_before = await _count(client, headers, "/api/v1/api-keys")
    forms = (
        ("/console/tasks-board", "task-title", "Add task", "/api/v1/tasks-board", 0),
        ("/console/projects", "project-name", "Create project", "/api/v1/projects", 0),
        ("/console/profile", "key-name", "Create key", "/api/v1/api-keys", keys_before),
    )
    made: dict[str, int] = {}
    for path, field, name, api, before in forms:
        await page.goto(path)
        await page.wait_for_load_state("networkidle")
        await page.locator(f"#{field}").fill(f"once-{uuid.uuid4().hex[:8]}")
        button = page.get_by_role("button", name=name, exact=True)
        await button.dblclick()
        await expect(page.locator(f"#{field}")).to_have_value("")  # the first answer is in
        await page.wait_for_timeout(1000)  # room for a second request, were one sent
        await page.wait_for_load_state("networkidle")
        await expect(button).to_be_enabled()
        made[path] = await _count(client, headers, api) - before
    assert made == {path: 1 for path, *_ in forms}, made


async def test_a_double_click_on_create_account_says_the_account_was_created(
    page: Any, database: Database,
) -> None:
    """A double click on Create account posts it once: "created, awaiting approval", never
    the second request's "that username is already taken"."""
    from playwright.async_api import expect

    await make_user(database, admin=True)  # not the first account: it awaits approval
    await page.goto("/console/register")
    await page.wait_for_load_state("networkidle")
    await page.locator("#username").fill("newcomer")
    await page.locator("#email").fill("newcomer@example.test")
    await page.locator("#password").fill("plum-velvet-orbit-93!")
    await page.locator("#register-form button[type=submit]").dblclick()
    notice = page.locator("#notice")
    await expect(notice).to_have_text(
        "Account created. An administrator must approve it before you can sign in.")
    await page.wait_for_timeout(1000)  # room for a second answer, were one asked for
    await page.wait_for_load_state("networkidle")
    assert (await notice.get_attribute("data-kind"), await notice.inner_text()) == (
        "info", "Account created. An administrator must approve it before you can sign in.")
