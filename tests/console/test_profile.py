"""The profile page: API keys shown once, TOTP turned on in the browser, passkeys added and
used to sign in (Chromium's virtual authenticator over CDP), theme, group and persona
invitations."""

from __future__ import annotations

import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import select

from roost.config import Settings
from roost.db.engine import Database
from roost.identity.models import User, UserTwoFactorAuth
from roost.keyfiles import KeyMaterial
from roost.security.totp import current_totp_step, totp_code_at
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.console.test_auth import PASSWORD, _password_user
from tests.identity.conftest import wait_for_fresh_totp_step
from tests.support.identity import make_user
from tests.support.server import free_port, in_process

pytestmark = pytest.mark.needs_browser


async def test_api_key_is_shown_once_and_works(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    user_id = await _password_user(database, "kim")
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/profile")
    await page.get_by_label("Name", exact=True).fill('<b>deploy</b> key')
    await page.get_by_role("button", name="Create key").click()
    shown = page.locator("#new-key-value")
    await shown.wait_for()
    key = (await shown.text_content() or "").strip()
    assert key.startswith("rst_")
    await page.get_by_role("cell", name="<b>deploy</b> key", exact=True).wait_for()  # a name is text
    await assert_accessible(page)
    await screenshot(page, "profile-api-key")
    async with httpx.AsyncClient(base_url=console) as raw:
        me = await raw.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 200 and me.json()["username"] == "kim"
    await page.reload()
    assert key not in await page.content()  # never shown again
    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Revoke key <b>deploy</b> key").click()
    await page.get_by_text("No keys yet.").wait_for()
    async with httpx.AsyncClient(base_url=console) as raw:
        me = await raw.get("/api/v1/auth/me", headers={"Authorization": f"Bearer {key}"})
    assert me.status_code == 401


async def test_totp_is_turned_on_from_the_profile(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    user_id = await _password_user(database, "tom")
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/profile")
    await page.get_by_text("Off.").wait_for()
    await page.get_by_role("button", name="Turn on").click()
    await page.get_by_label("Code from the app").wait_for()
    secret = (await page.locator("#tfa-secret").text_content() or "").strip()
    assert len(secret) >= 16
    wait_for_fresh_totp_step()
    await page.get_by_label("Code from the app").fill(totp_code_at(secret, current_totp_step()))
    await page.get_by_role("button", name="Confirm").click()
    await page.get_by_text("On. 10 backup codes left.").wait_for()
    codes = (await page.locator("#tfa-codes-list").text_content() or "").split()
    assert len(codes) == 10
    await assert_accessible(page)
    async with database.transaction() as session:
        row = await session.scalar(select(UserTwoFactorAuth).where(UserTwoFactorAuth.user_id == user_id))
    assert row is not None and row.is_enabled


async def test_theme_choice_is_kept(page: Any, console: str, database: Database,
                                    test_keys: KeyMaterial) -> None:
    user_id = await _password_user(database, "lee")
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/profile")
    assert await page.locator("html").get_attribute("data-theme") == "dark"
    await page.get_by_role("button", name="Switch to light theme").click()
    await page.locator("html[data-theme='light']").wait_for(state="attached")
    await page.get_by_role("button", name="Switch to dark theme").wait_for()
    await assert_accessible(page)  # contrast holds in the light theme too
    await page.reload()
    assert await page.locator("html").get_attribute("data-theme") == "light"
    async with database.transaction() as session:
        assert (await session.get_one(User, user_id)).theme == "light"


async def test_group_invitations_are_accepted_or_declined_on_the_profile(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """A group admin's invitations wait on the invitee's profile (docs/identity.md,
    "Groups"): Accept joins the group with the invited role, Decline drops it."""
    _, alice = await make_user(database, username="inviting-alice")
    bob_id, bob = await make_user(database, username="invited-bob")
    for name, role in (("Herons", "admin"), ("<b>Gulls</b>", "member")):
        group = await client.post("/api/v1/groups", headers=alice, json={"name": name})
        assert group.status_code == 201, group.text
        invited = await client.post(f"/api/v1/groups/{group.json()['id']}/members",
                                    headers=alice, json={"user": str(bob_id), "role": role})
        assert invited.status_code == 202, invited.text
    await sign_in_as(page.context, console, database, test_keys, bob_id)
    await page.goto("/console/profile")
    herons = page.locator("#invitations li").filter(has_text="Herons")
    await herons.get_by_text("as a group admin, invited by inviting-alice").wait_for()
    await page.locator("#invitations li").filter(has_text="<b>Gulls</b>").wait_for()  # text
    await assert_accessible(page)
    await screenshot(page, "profile-group-invitations")
    await page.get_by_role("button", name="Accept the invitation to Herons").click()
    await page.get_by_text("You joined Herons.").wait_for()
    await herons.wait_for(state="detached")
    mine = (await client.get("/api/v1/groups", headers=bob)).json()["items"]
    assert [(g["name"], g["my_role"]) for g in mine] == [("Herons", "admin")]
    await page.get_by_role("button", name="Decline the invitation to <b>Gulls</b>").click()
    await page.get_by_text("No invitations.").wait_for()
    left = (await client.get("/api/v1/groups/invitations", headers=bob)).json()
    assert left["items"] == []
    assert [g["name"] for g in (await client.get("/api/v1/groups", headers=bob)).json()["items"]] == [
        "Herons"]


async def test_persona_invitations_are_accepted_or_declined_on_the_profile(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """A persona owner's invitations wait on the invitee's profile (docs/agents.md,
    "Personas and members"), apart from group invitations: Accept joins the persona with
    the invited role, Decline drops it."""
    _, olga = await make_user(database, username="owning-olga")
    bob_id, bob = await make_user(database, username="invited-bob")
    for name, role in (("Night desk", "editor"), ("<b>Concierge</b>", "viewer")):
        persona = await client.post("/api/v1/personas", headers=olga, json={"name": name})
        assert persona.status_code == 201, persona.text
        invited = await client.post(f"/api/v1/personas/{persona.json()['id']}/members",
                                    headers=olga, json={"user": str(bob_id), "role": role})
        assert invited.status_code == 202, invited.text
    await sign_in_as(page.context, console, database, test_keys, bob_id)
    await page.goto("/console/profile")
    await page.locator("#invitations").get_by_text("No invitations.").wait_for()  # no group's
    desk = page.locator("#persona-invitations li").filter(has_text="Night desk")
    await desk.get_by_text("as an editor, invited by owning-olga").wait_for()
    await page.locator("#persona-invitations li").filter(has_text="<b>Concierge</b>").wait_for()
    await assert_accessible(page)
    await screenshot(page, "profile-persona-invitations")
    await page.get_by_role("button", name="Accept the invitation to Night desk").click()
    await page.get_by_text("You joined Night desk.").wait_for()
    await desk.wait_for(state="detached")
    mine = (await client.get("/api/v1/personas", headers=bob)).json()["items"]
    assert [(p["name"], p["my_role"]) for p in mine] == [("Night desk", "editor")]
    await page.get_by_role("button", name="Decline the invitation to <b>Concierge</b>").click()
    await page.get_by_text("No persona invitations.").wait_for()
    left = (await client.get("/api/v1/personas/invitations", headers=bob)).json()
    assert left["items"] == []
    mine = (await client.get("/api/v1/personas", headers=bob)).json()["items"]
    assert [p["name"] for p in mine] == ["Night desk"]


@pytest.fixture
def passkey_port() -> int:
    return free_port()


@pytest.fixture
def test_settings(tmp_path: Path, passkey_port: int) -> Settings:
    # Passkeys need a real relying-party domain: the page is served as localhost.
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_local_model=False,
                    knowledge_embedding_provider="hash", max_request_bytes=256 * 1024,
                    webauthn_rp_id="localhost",
                    webauthn_origins=f"http://localhost:{passkey_port}")


@pytest.fixture
async def localhost_console(app: FastAPI, passkey_port: int) -> AsyncIterator[str]:
    async with in_process(app, port=passkey_port):
        yield f"http://localhost:{passkey_port}"


async def test_passkey_added_on_the_profile_then_used_to_sign_in(
    browser: Any, localhost_console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    user_id = await _password_user(database, "pat")
    context = await browser.new_context(base_url=localhost_console)
    try:
        page = await context.new_page()
        cdp = await context.new_cdp_session(page)
        await cdp.send("WebAuthn.enable")
        await cdp.send("WebAuthn.addVirtualAuthenticator", {"options": {
            "protocol": "ctap2", "transport": "internal", "hasResidentKey": True,
            "hasUserVerification": True, "isUserVerified": True}})
        await sign_in_as(context, localhost_console, database, test_keys, user_id)
        await page.goto("/console/profile")
        await page.get_by_label("Name for a new passkey").fill("laptop")
        await page.get_by_role("button", name="Add a passkey").click()
        await page.get_by_role("button", name="Delete passkey laptop").wait_for()
        await assert_accessible(page)
        await context.clear_cookies()
        await page.goto("/console/login")
        await page.get_by_role("button", name="Sign in with a passkey").click()
        await page.wait_for_url(re.compile(r"/console/chat"))
        await screenshot(page, "passkey-sign-in")
    finally:
        await context.close()
    assert PASSWORD  # the password was never typed
