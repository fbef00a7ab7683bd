"""Signing in and out of the console in a real browser: the first account, password with
TOTP, CSRF, logout ending the server session, redirects, the 404 page."""

from __future__ import annotations

import re
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select, update

from roost.config import Settings
from roost.db.engine import Database
from roost.identity import twofactor
from roost.identity.accounts import create_user
from roost.identity.common import principal_for
from roost.identity.config import IdentityConfig
from roost.identity.models import Session, User
from roost.keyfiles import KeyMaterial
from roost.principal import SYSTEM
from roost.security.totp import current_totp_step, totp_code_at
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.identity.conftest import wait_for_fresh_totp_step

pytestmark = pytest.mark.needs_browser
PASSWORD = "plum-velvet-orbit-93!"


async def _password_user(database: Database, name: str, *, admin: bool = False) -> uuid.UUID:
    async with database.transaction() as session:
        user = await create_user(session, SYSTEM, username=name, email=f"{name}@example.test",
                                 password=PASSWORD, role="admin" if admin else "user",
                                 status="active", first_becomes_root=False)
    return user.id


async def test_first_account_is_created_in_the_browser_and_signed_in(page: Any, database: Database) -> None:
    await page.goto("/")
    await page.wait_for_url(re.compile(r"/console/login"))
    await assert_accessible(page)
    await page.get_by_role("link", name="Create one").click()
    await page.get_by_label("Username").fill("founder")
    await page.get_by_label("Email").fill("founder@example.test")
    await page.get_by_label("Password").fill(PASSWORD)
    await assert_accessible(page)
    await page.get_by_role("button", name="Create account").click()
    await page.wait_for_url(re.compile(r"/console/chat"))
    await page.get_by_role("link", name="Admin").wait_for()  # the first account is root
    await screenshot(page, "first-account")
    async with database.transaction() as session:
        founder = await session.scalar(select(User).where(User.username == "founder"))
    assert founder is not None and founder.is_root


async def test_password_and_totp_sign_in_then_sign_out_ends_the_session(
    page: Any, database: Database, test_settings: Settings, test_keys: KeyMaterial,
) -> None:
    user_id = await _password_user(database, "tina")
    cfg = IdentityConfig.build(test_settings, test_keys)
    async with database.transaction() as session:
        user = await session.get_one(User, user_id)
        enrolment = await twofactor.setup(session, cfg, principal_for(user))
    wait_for_fresh_totp_step(8)
    step = current_totp_step()
    async with database.transaction() as session:
        user = await session.get_one(User, user_id)
        await twofactor.confirm(session, cfg, principal_for(user), totp_code_at(enrolment.secret, step - 1))

    await page.goto("/console/agents")
    await page.wait_for_url(re.compile(r"/console/login\?next="))
    await page.get_by_label("Username or email").fill("tina")
    await page.get_by_label("Password").fill("wrong password!")
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.get_by_role("alert").filter(has_text="incorrect").wait_for()
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.get_by_label("Code").fill(totp_code_at(enrolment.secret, step))
    await assert_accessible(page)
    await page.get_by_role("button", name="Verify").click()
    await page.wait_for_url(re.compile(r"/console/agents$"))  # back where she was going
    await screenshot(page, "signed-in-with-totp")
    cookies = {c["name"]: c for c in await page.context.cookies()}
    assert cookies["roost_session"]["httpOnly"] and cookies["roost_session"]["sameSite"] == "Strict"

    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(re.compile(r"/console/login"))
    async with database.transaction() as session:
        rows = (await session.scalars(select(Session).where(Session.user_id == user_id))).all()
    assert rows and all(r.revoked_at is not None for r in rows)
    # The old cookie is worthless now, even if someone kept a copy.
    stolen = cookies["roost_session"]["value"]
    async with httpx.AsyncClient(base_url=page.url.split("/console")[0]) as raw:
        answer = await raw.get("/api/v1/auth/me", cookies={"roost_session": stolen})
    assert answer.status_code == 401


async def test_state_changes_with_the_cookie_need_the_csrf_token(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    user_id = await _password_user(database, "carl")
    await sign_in_as(page.context, console, database, test_keys, user_id)
    cookies = {c["name"]: c["value"] for c in await page.context.cookies()}
    async with httpx.AsyncClient(base_url=console, cookies=cookies) as raw:
        assert (await raw.get("/api/v1/auth/me")).status_code == 200  # reads need none
        missing = await raw.post("/api/v1/chat/sessions", json={"title": "x"})
        assert missing.status_code == 403 and "CSRF" in missing.json()["detail"]
        wrong = await raw.post("/api/v1/chat/sessions", json={"title": "x"},
                               headers={"X-CSRF-Token": "not-the-token-at-all-000000"})
        assert wrong.status_code == 403
        right = await raw.post("/api/v1/chat/sessions", json={"title": "x"},
                               headers={"X-CSRF-Token": cookies["roost_csrf"]})
        assert right.status_code == 201
        # Signing in needs it too (no login CSRF), and so does signing out.
        sign_in = await raw.post("/console/session", json={"login": "carl", "password": PASSWORD})
        assert sign_in.status_code == 403
        assert (await raw.post("/console/logout")).status_code == 403


async def test_next_only_goes_to_console_pages(page: Any, database: Database) -> None:
    await _password_user(database, "nina")
    await page.goto("/console/login?next=https://evil.example/steal")
    await page.get_by_label("Username or email").fill("nina")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url(re.compile(r"/console/chat"))


async def test_unknown_pages_and_html_in_names(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    user_id = await _password_user(database, "mallory")
    async with database.transaction() as session:
        user = await session.get_one(User, user_id)
        user.full_name = '<img src=x onerror="window.pwned=1">Mallory'
    await sign_in_as(page.context, console, database, test_keys, user_id)
    answer = await page.goto("/console/no/such/page")
    assert answer is not None and answer.status == 404
    await page.get_by_role("heading", name="Not found").wait_for()
    assert await page.get_by_text('<img src=x onerror="window.pwned=1">Mallory').count() == 1
    assert await page.evaluate("window.pwned") is None
    headers = answer.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "unsafe-inline" not in headers["content-security-policy"]
    await assert_accessible(page)
    # Administration is not for users.
    admin = await page.goto("/console/admin/users")
    assert admin is not None and admin.status == 404


async def test_signing_in_and_moving_around_with_the_keyboard_alone(page: Any, database: Database) -> None:
    await _password_user(database, "kai")
    await page.goto("/console/login")
    await page.keyboard.press("Tab")  # the first stop is the skip link
    assert await page.evaluate("document.activeElement.textContent") == "Skip to content"
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.id") == "login"
    await page.keyboard.type("kai")
    await page.keyboard.press("Tab")
    await page.keyboard.type(PASSWORD)
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/console/chat"))
    # Skip link, brand, then the main navigation, in order; Enter follows a link.
    for _ in range(3):
        await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Chat"
    await page.keyboard.press("Tab")
    assert await page.evaluate("document.activeElement.textContent") == "Agents"
    await page.keyboard.press("Enter")
    await page.wait_for_url(re.compile(r"/console/agents$"))
    # The focused control is visibly marked (the focus ring is not the browser's default).
    await page.keyboard.press("Tab")
    outline = await page.evaluate("getComputedStyle(document.activeElement).outlineStyle")
    assert outline == "solid"


# --- signing out on a shared computer, with several tabs ----------------------------------


async def _sign_in_with_the_form(page: Any, login: str) -> None:
    await page.get_by_label("Username or email").fill(login)
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()


async def _drafts(page: Any) -> list[str]:
    return list(await page.evaluate(
        "Object.keys(sessionStorage).filter(k => k.startsWith('roost-draft:'))"))


async def test_signing_out_does_not_hand_drafts_to_the_next_user(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """After A signs out, B signing in in the same tab does not see what A was typing."""
    alice = await _password_user(database, "alice")
    await _password_user(database, "bobby")
    await sign_in_as(page.context, console, database, test_keys, alice)
    await page.goto("/console/memory")
    await page.locator("#add-content").fill("alice's private note: my bank PIN is 4321")
    assert len(await _drafts(page)) == 1
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(re.compile(r"/console/login"))
    assert await _drafts(page) == []
    await _sign_in_with_the_form(page, "bobby")
    await page.wait_for_url(re.compile(r"/console/chat"))
    await page.goto("/console/memory")
    await page.get_by_role("heading", name="Memory", exact=True).wait_for()
    await page.wait_for_timeout(300)  # the module has run (keepDraft fills the field at once)
    assert await page.locator("#add-content").input_value() == ""


async def test_a_draft_is_not_shown_to_another_user_after_an_expired_sign_in(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """The session ends without a sign-out; whoever signs in next at ``?next=`` finds the
    field empty, and the other user's draft is gone from the tab."""
    alice = await _password_user(database, "alice")
    await _password_user(database, "bobby")
    await sign_in_as(page.context, console, database, test_keys, alice)
    await page.goto("/console/memory")
    await page.locator("#add-content").fill("alice's half-typed secret")
    async with database.transaction() as session:
        await session.execute(update(Session).where(Session.user_id == alice)
                              .values(revoked_at=func.now()))
    await page.reload()
    await page.wait_for_url(re.compile(r"/console/login\?next="))
    await _sign_in_with_the_form(page, "bobby")
    await page.wait_for_url(re.compile(r"/console/memory$"))
    await page.get_by_role("heading", name="Memory", exact=True).wait_for()
    await page.wait_for_timeout(300)  # the module has run (keepDraft fills the field at once)
    assert await page.locator("#add-content").input_value() == ""
    assert await _drafts(page) == []


async def test_sign_out_in_an_older_tab_really_signs_out(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """Clicking Sign out in a tab opened before the last sign-in (whose CSRF token is no
    longer the cookie's) ends the session."""
    alice = await _password_user(database, "alice")
    await sign_in_as(page.context, console, database, test_keys, alice)
    await page.goto("/console/memory")
    await page.get_by_role("heading", name="Memory", exact=True).wait_for()
    # In a second tab: sign out and back in (a new CSRF token comes with the new session).
    other = await page.context.new_page()
    await other.goto("/console/memory")
    await other.get_by_role("button", name="Sign out").click()
    await other.wait_for_url(re.compile(r"/console/login"))
    await _sign_in_with_the_form(other, "alice")
    await other.wait_for_url(re.compile(r"/console/chat"))
    # Back in the first tab, open all along: sign out there.
    await page.get_by_role("button", name="Sign out").click()
    await page.wait_for_url(re.compile(r"/console/login$"))
    me = await page.context.request.get(f"{console}/api/v1/auth/me")
    assert me.status == 401, "still signed in after Sign out"


async def test_a_failed_sign_out_says_so_and_stays(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    """A sign-out the server refuses is not dressed up as one that worked."""
    alice = await _password_user(database, "alice")
    await sign_in_as(page.context, console, database, test_keys, alice)
    await page.goto("/console/memory")
    await page.get_by_role("heading", name="Memory", exact=True).wait_for()
    await page.route("**/console/logout", lambda route: route.fulfill(
        status=403, content_type="application/problem+json", body='{"status": 403}'))
    await page.get_by_role("button", name="Sign out").click()
    await page.get_by_role("alert").filter(
        has_text="Sign-out failed: reload the page and sign out again").wait_for()
    assert page.url.endswith("/console/memory")
