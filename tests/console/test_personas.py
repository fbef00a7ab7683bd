"""The personas and persona pages in a real browser: create a persona, set a secret (its
value never comes back), add a member, read its mail (the text body; an HTML body is never
rendered) and its health samples; a viewer member sees it without the owner's controls; a
stranger gets the 404 page; names are text, never markup."""

from __future__ import annotations

import asyncio
import re
from email.message import EmailMessage
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.agents import health, mail
from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]
EVIL = '<img src=x onerror="window.pwned=1">Concierge'
SECRET = "ghp_never-shown-0123456789"


def _mail_to(address: str) -> bytes:
    message = EmailMessage()
    message["From"] = "guest@example.org"
    message["To"] = address
    message["Subject"] = "Late check-in"
    message["Message-ID"] = "<late-1@example.org>"
    message.set_content("We arrive after midnight.\nPlease leave the key.")
    message.add_alternative('<p>We arrive <img src=x onerror="window.pwned=2">late</p>',
                            subtype="html")
    message.add_attachment(b"booking 42", maintype="text", subtype="plain",
                           filename="booking.txt")
    return message.as_bytes()


async def test_create_a_persona_and_manage_its_secrets_members_mail_and_health(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial, test_settings: Settings,
) -> None:
    from playwright.async_api import expect

    owner_id, owner_headers = await make_user(database)
    member_id, member_headers = await make_user(database)
    async with database.transaction() as session:
        member_name = await session.scalar(text("SELECT username FROM users WHERE id = :id"),
                                           {"id": member_id})
    await sign_in_as(page.context, console, database, test_keys, owner_id)
    await page.goto("/console/personas")
    await page.get_by_text("No personas yet").wait_for()
    await page.get_by_label("Name").fill(EVIL)
    await page.get_by_label("System prompt").fill("Be courteous.")
    await page.get_by_label("E-mail address").fill("concierge@hotel.example")
    await assert_accessible(page)
    await page.get_by_role("button", name="Create persona").click()

    await page.wait_for_url(re.compile(r"/console/personas/[0-9a-f-]{36}$"))
    persona_id = page.url.rsplit("/", 1)[-1]
    await expect(page.get_by_role("heading", level=1)).to_have_text(EVIL)  # text, not markup
    await expect(page.locator("#persona-details")).to_contain_text("concierge@hotel.example")
    await expect(page.locator("#persona-details")).to_contain_text("owner")
    await page.get_by_text("No agent acts as this persona yet").wait_for()

    # A secret: listed by name, its value gone from the page and from every answer.
    await page.get_by_label("Type").select_option("api_token")
    await page.get_by_label("Name", exact=True).last.fill("GITHUB_TOKEN")
    await page.get_by_label("Value").fill(SECRET)
    await page.get_by_role("button", name="Save secret").click()
    await expect(page.locator("#secrets-body")).to_contain_text("GITHUB_TOKEN")
    await expect(page.get_by_label("Value")).to_have_value("")
    assert SECRET not in await page.content()
    listed = await client.get(f"/api/v1/personas/{persona_id}/secrets", headers=owner_headers)
    assert listed.status_code == 200 and SECRET not in listed.text

    # A member, by username, as a viewer: invited, a member once they accept.
    await page.get_by_label("User", exact=True).fill(str(member_name))
    await page.get_by_label("Role").select_option("viewer")
    await page.get_by_role("button", name="Add member").click()
    await page.get_by_text("is invited as a viewer").wait_for()
    mine = (await client.get("/api/v1/personas/invitations", headers=member_headers)).json()
    accepted = await client.post(f"/api/v1/personas/invitations/{mine['items'][0]['id']}/accept",
                                 headers=member_headers)
    assert accepted.status_code == 201, accepted.text
    await page.reload()
    await expect(page.locator("#members-body")).to_contain_text(str(member_name))
    await expect(page.locator("#members-body")).to_contain_text("viewer")

    # Mail that arrived over SMTP (the listener's own storing step) and a health sample.
    delivered = await mail.receive(database, mail.MailConfig.from_settings(test_settings),
                                   _mail_to("concierge@hotel.example"),
                                   ["concierge@hotel.example"])
    assert len(delivered) == 1
    await health.sample(database, data_dir=test_settings.data_dir, interval_s=3600,
                        retention_days=30)
    # An agent of the persona, made on the agents page.
    await page.goto("/console/agents")
    await page.get_by_label("Name").fill("Night desk")
    await page.get_by_label("Persona").select_option(label=EVIL)
    await page.get_by_role("button", name="Create agent").click()
    await page.wait_for_url(re.compile(r"/console/agents/[0-9a-f-]{36}$"))
    agent_id = page.url.rsplit("/", 1)[-1]
    await expect(page.locator("#agent-details").get_by_role("link", name=EVIL)).to_have_attribute(
        "href", f"/console/personas/{persona_id}")
    await page.goto(f"/console/personas/{persona_id}")
    await page.get_by_role("button", name="Late check-in").click()
    view = page.locator("#mail-view")
    await expect(view).to_contain_text("We arrive after midnight.")
    await expect(view).to_contain_text("guest@example.org")
    await expect(view.get_by_role("link", name="booking.txt")).to_have_attribute(
        "href", re.compile(r"^/api/v1/attachments/[0-9a-f-]{36}/content$"))
    await expect(page.locator("#health-body tr")).to_have_count(1)
    await expect(page.get_by_role("link", name="Night desk")).to_have_attribute(
        "href", f"/console/agents/{agent_id}")
    await screenshot(page, "persona")
    await assert_accessible(page)

    # A tool granted with a limit, and the agent that answers the persona's mail.
    await page.get_by_label("Tool", exact=True).select_option(label="current_time")
    await page.get_by_label("Calls a run (at most)").fill("3")
    await page.get_by_role("button", name="Grant tool").click()
    await expect(page.locator("#grants-body")).to_contain_text("current_time")
    await expect(page.locator("#grants-body")).to_contain_text("3")
    await page.get_by_label("Description").fill("Answers the guests.")
    await page.get_by_label("Agent that answers mail").select_option(label="Night desk")
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.locator("#persona-description")).to_have_text("Answers the guests.")
    stored = await client.get(f"/api/v1/personas/{persona_id}", headers=owner_headers)
    assert stored.json()["email_agent_id"] == agent_id
    grants = await client.get(f"/api/v1/personas/{persona_id}/tools", headers=owner_headers)
    assert [(g["tool_name"], g["max_calls_per_run"]) for g in grants.json()] == [("current_time", 3)]
    assert await page.evaluate("window.pwned") is None

    # The viewer: the persona, without the owner's and editors' controls.
    await page.context.clear_cookies()
    await sign_in_as(page.context, console, database, test_keys, member_id)
    await page.goto("/console/personas")
    await page.get_by_role("link", name=EVIL).click()
    await expect(page.locator("#persona-details")).to_contain_text("viewer")
    await expect(page.locator("#members-body")).to_contain_text(str(member_name))
    await expect(page.locator("#grants-body")).to_contain_text("current_time")
    await expect(page.get_by_role("button", name="Revoke current_time")).to_have_count(0)
    for hidden in ("#edit-card", "#secrets-card", "#member-form", "#grant-form"):
        await expect(page.locator(hidden)).to_be_hidden()
    await expect(page.get_by_role("button", name="Late check-in")).to_be_visible()
    await assert_accessible(page)


async def test_a_strangers_persona_is_not_found_and_the_owner_deletes_it(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    owner_id, owner_headers = await make_user(database)
    created = await client.post("/api/v1/personas", json={"name": "Private"},
                                headers=owner_headers)
    assert created.status_code == 201, created.text
    persona_id = created.json()["id"]
    stranger_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, stranger_id)
    for path in (f"/console/personas/{persona_id}", "/console/personas/not-an-id"):
        answer = await page.goto(path)
        assert answer is not None and answer.status == 404, path
        await page.get_by_role("heading", name="Not found").wait_for()
    await page.goto("/console/personas")
    await page.get_by_text("No personas yet").wait_for()

    await page.context.clear_cookies()
    await sign_in_as(page.context, console, database, test_keys, owner_id)
    await page.set_viewport_size({"width": 390, "height": 844})  # a phone
    await page.goto(f"/console/personas/{persona_id}")
    await expect(page.get_by_role("heading", level=1)).to_have_text("Private")
    await screenshot(page, "persona-phone")
    await assert_accessible(page)
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Delete persona").click()
    await page.wait_for_url(re.compile(r"/console/personas$"))
    await page.get_by_text("No personas yet").wait_for()
    gone = await client.get(f"/api/v1/personas/{persona_id}", headers=owner_headers)
    assert gone.status_code == 404


async def test_persona_secret_refused_name_says_which_field(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """A refused secret name: the notice names the field and its rule (the 422's field
    errors), not the API's bare "see errors"."""
    user_id, headers = await make_user(database)
    created = await client.post("/api/v1/personas", json={"name": "Helper"}, headers=headers)
    assert created.status_code == 201, created.text
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto(f"/console/personas/{created.json()['id']}")
    await page.locator("#secret-name").fill("my token")
    await page.locator("#secret-value").fill("s3cret")
    await page.locator("#secret-form button[type=submit]").click()
    notice = page.locator("#notice")
    await notice.wait_for()
    message = await notice.inner_text()
    assert "key_name" in message and "pattern" in message, message
    assert "see errors" not in message, message
