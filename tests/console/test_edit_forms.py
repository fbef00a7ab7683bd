"""An edit form never alters a field the user did not touch."""

from __future__ import annotations

from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.agents.conftest import make_agent
from tests.console.conftest import sign_in_as
from tests.support.identity import make_user

pytestmark = [pytest.mark.needs_browser]


async def test_editing_an_agents_name_keeps_its_multi_line_description(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """Only the name is changed on the agent page: the description (set through the API,
    several lines, trailing spaces) stays as it was.  A single-line <input> dropped the
    line break and the trimming the spaces, so the PATCH rewrote it "Line oneLine two"."""
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    description = "Line one\nLine two  "
    agent = await make_agent(database, user_id, description=description)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto(f"/console/agents/{agent.id}")
    await page.wait_for_load_state("networkidle")
    await expect(page.locator("#edit-name")).to_have_value("Helper")
    await page.locator("#edit-name").fill("Helper renamed")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator("#notice")).to_have_text("Saved.")
    answer = await client.get(f"/api/v1/agents/{agent.id}", headers=headers)
    assert answer.status_code == 200, answer.text
    assert answer.json()["name"] == "Helper renamed"
    assert answer.json()["description"] == description


async def test_renaming_a_persona_keeps_its_mail_agent_beyond_the_first_50_agents(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """Renaming a persona keeps the agent that answers its mail when that agent is older
    than the 50 the page lists: the select shows it, and only what the user changed is
    sent (the select's "None", for want of an option, unset it)."""
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    created = await client.post("/api/v1/personas", json={"name": "Desk"}, headers=headers)
    assert created.status_code == 201, created.text
    persona_id = created.json()["id"]
    mailman = await make_agent(database, user_id, name="Mailman", persona_id=persona_id)
    bound = await client.patch(f"/api/v1/personas/{persona_id}", headers=headers,
                               json={"email_agent_id": str(mailman.id)})
    assert bound.status_code == 200, bound.text
    for n in range(50):  # newer agents of the persona: the mail agent is the 51st, newest first
        await make_agent(database, user_id, name=f"Helper {n}", persona_id=persona_id)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto(f"/console/personas/{persona_id}")
    await expect(page.locator("#agents-list > li")).to_have_count(50)
    await page.locator("#edit-fields").locator("input[name=name]").fill("Front desk")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator("#notice")).to_have_text("Saved.")
    after = await client.get(f"/api/v1/personas/{persona_id}", headers=headers)
    assert after.json()["name"] == "Front desk"
    assert after.json()["email_agent_id"] == str(mailman.id), "renaming unset the mail agent"
