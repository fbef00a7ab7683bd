"""Stored XSS: hostile data from users and from an anonymous attacker (sign-in attempts,
registrations, names, personas, agents, chats, groups and their invitations, limits, a
model provider's model ids and errors, failed jobs) shown on an administrator's and
another user's console pages, and a hostile model answer and model error in the chat.
The browser first runs with the page's CSP *bypassed*, so a markup sink would really
execute: the DOM never gets the payload's elements and ``window.__xss`` stays unset (not
merely CSP saving the day), while the payloads are shown as text; then with the CSP on,
where not a single violation is reported (an injected handler that CSP blocked would
still be an injection)."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.identity.models import User
from roost.keyfiles import KeyMaterial
from tests.chat.conftest import add_provider
from tests.console.conftest import sign_in_as
from tests.support.identity import join_persona, make_user
from tests.support.openai_stub import Fail, Models, Reply, StubServer

pytestmark = pytest.mark.needs_browser

P = ('<img id=pwn src=x onerror=window.__xss=1>"><svg id=pwn onload=window.__xss=2>'
     "'><a id=pwn href=javascript:window.__xss=3>x</a>")
SHORT = "<img id=pwn src=x onerror=window.__xss=4>"  # for 64/128-character fields
PASSWORD = "plum-velvet-orbit-93!"

# Records CSP violations (an inline handler/script that CSP had to block was injected).
WATCH = """
window.__csp = [];
document.addEventListener('securitypolicyviolation',
  (e) => window.__csp.push(e.violatedDirective + ' ' + (e.sample || '')));
"""
INJECTED = """() => ({
  xss: window.__xss ?? null,
  csp: window.__csp ?? [],
  nodes: [...document.querySelectorAll('#pwn, [onerror], [onload], iframe, object, embed, '
                                     + 'a[href^="javascript:" i]')].map((n) => n.outerHTML),
})"""


async def _assert_clean(page: Any, where: str) -> bool:
    """Nothing injected on the page; whether the payload is shown there as text."""
    await page.wait_for_timeout(400)  # image errors and onload fire asynchronously
    found = await page.evaluate(INJECTED)
    assert found == {"xss": None, "csp": [], "nodes": []}, (where, found)
    return "onerror" in await page.locator("main").inner_text()


async def _expand_everything(page: Any) -> None:
    await page.evaluate("() => document.querySelectorAll('details').forEach((d) => d.open = true)")


async def _seed(client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
                stub: StubServer) -> dict[str, Any]:
    """Hostile data from everyone who is not the administrator."""
    seeded: dict[str, Any] = {}
    boss, boss_headers = await make_user(database, admin=True, username="boss")
    seeded["boss"] = boss
    # An anonymous attacker: failed sign-ins with a hostile login, device and user agent.
    csrf = "c" * 43
    for _ in range(2):
        await client.post("/console/session", cookies={"roost_csrf": csrf},
                          headers={"X-CSRF-Token": csrf, "User-Agent": P},
                          json={"login": P[:255], "password": "nope-nope-nope", "device_name": P})
    # Someone registering with a hostile name (waits for approval).
    reg = await client.post("/api/v1/auth/register", headers={"User-Agent": P},
                            json={"username": "eve", "email": "eve@example.test",
                                  "password": PASSWORD, "full_name": P})
    assert reg.status_code == 201, reg.text
    # A signed-up user, mallory, with hostile everything.
    mallory, mh = await make_user(database, username="mallory")
    async with database.transaction() as session:
        (await session.get_one(User, mallory)).full_name = P
    seeded["mallory"] = mallory
    mh = {**mh, "User-Agent": P}
    key = await client.post("/api/v1/api-keys", headers=mh, json={"name": SHORT})
    assert key.status_code == 201, key.text
    seeded["key_id"] = key.json()["id"]
    persona = await client.post("/api/v1/personas", headers=mh,
                                json={"name": P, "description": P, "system_prompt": P})
    assert persona.status_code == 201, persona.text
    seeded["persona"] = persona.json()["id"]
    agent = await client.post("/api/v1/agents", headers=mh, json={
        "name": P, "slug": "evil-agent", "description": P, "system_prompt": P,
        "persona_id": seeded["persona"], "preferred_model": P[:200]})
    assert agent.status_code == 201, agent.text
    victim, victim_headers = await make_user(database, username="victim")
    seeded["victim"] = victim
    await join_persona(client, mh, seeded["persona"], "victim", victim_headers, role="viewer")
    # Another persona of hostile name invites the victim: their profile lists it.
    pending = await client.post("/api/v1/personas", headers=mh, json={"name": P})
    assert pending.status_code == 201, pending.text
    invited = await client.post(f"/api/v1/personas/{pending.json()['id']}/members", headers=mh,
                                json={"user": "victim", "role": "viewer"})
    assert invited.status_code == 202, invited.text
    chat = await client.post("/api/v1/chat/sessions", headers=mh, json={"title": P})
    assert chat.status_code == 201, chat.text
    # Admin-side objects that carry their names.
    group = await client.post("/api/v1/groups", headers=boss_headers,
                              json={"name": SHORT, "description": P})
    assert group.status_code == 201, group.text
    added = await client.post(f"/api/v1/groups/{group.json()['id']}/members",
                              headers=boss_headers, json={"user": "mallory"})
    assert added.status_code == 201, added.text
    # Mallory's own group (a hostile name) invites the victim: their profile lists it.
    theirs = await client.post("/api/v1/groups", headers=mh,
                               json={"name": SHORT.replace("=4>", "=5>")})
    assert theirs.status_code == 201, theirs.text
    invited = await client.post(f"/api/v1/groups/{theirs.json()['id']}/members", headers=mh,
                                json={"user": "victim"})
    assert invited.status_code == 202, invited.text
    for path in (f"/api/v1/admin/limits/users/{mallory}",
                 f"/api/v1/admin/limits/api-keys/{seeded['key_id']}"):
        put = await client.put(path, headers=admin_headers, json={"requests_per_minute": 7})
        assert put.status_code == 200, (path, put.text)
    # A hostile model provider: model ids and a health error with markup.
    stub.script(Models(ids=[P[:200], "stub-model"]))
    provider = await add_provider(client, admin_headers, stub, name="evilprov")
    synced = await client.post(f"/api/v1/llm/providers/{provider['id']}/sync-models",
                               headers=admin_headers)
    assert synced.status_code == 200, synced.text
    stub.script(Fail(status=500, message=P), Fail(status=500, message=P),
                Fail(status=500, message=P))
    await client.post(f"/api/v1/llm/providers/{provider['id']}/health", headers=admin_headers)
    # Queue: a failed job and a dead letter with a hostile error (what a handler raised).
    async with database.transaction() as session:
        await session.execute(text(
            "INSERT INTO background_tasks (id, task_type, payload, status, error_message, user_id)"
            " VALUES (:id, 'test.noop', jsonb_build_object('x', CAST(:p AS text)), 'failed', :p, :u)"),
            {"id": uuid.uuid4(), "p": P, "u": mallory})
        await session.execute(text(
            "INSERT INTO dead_letter_queue (id, task_type, payload, error_message, error_stack,"
            " retry_history) VALUES (:id, 'test.noop', jsonb_build_object('x', CAST(:p AS text)),"
            " :p, :p, jsonb_build_array(jsonb_build_object('error', CAST(:p AS text))))"),
            {"id": uuid.uuid4(), "p": P})
    return seeded


async def _new_context(browser: Any, console: str, *, bypass_csp: bool) -> Any:
    ctx = await browser.new_context(base_url=console, bypass_csp=bypass_csp,
                                    viewport={"width": 1280, "height": 800})
    ctx.set_default_timeout(20_000)
    await ctx.add_init_script(WATCH)
    return ctx


@pytest.fixture
async def hostile_context(browser: Any, console: str) -> AsyncIterator[Any]:
    """A browser profile that ignores the pages' CSP (a sink would really run)."""
    ctx = await _new_context(browser, console, bypass_csp=True)
    yield ctx
    await ctx.close()


ADMIN_SECTIONS = (("groups", SHORT), ("limits", "mallory"), ("queue", "test.noop"),
                  ("providers", "evilprov"), ("billing", None), ("usage", None),
                  ("settings", None))
VICTIM_PAGES = ("/console/personas", "/console/personas/{persona}", "/console/agents",
                "/console/chat", "/console/profile", "/console/tools")


async def test_hostile_data_never_runs_on_an_administrator_s_or_another_user_s_pages(
    hostile_context: Any, browser: Any, console: str, client: httpx.AsyncClient,
    database: Database, test_keys: KeyMaterial, admin_headers: dict[str, str], stub: StubServer,
) -> None:
    seeded = await _seed(client, database, admin_headers, stub)
    await sign_in_as(hostile_context, console, database, test_keys, seeded["boss"])
    page = await hostile_context.new_page()
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    shown: dict[str, bool] = {}

    await page.goto("/console/admin/users")
    await page.locator("#users tr").filter(has_text="mallory").wait_for()
    shown["users"] = await _assert_clean(page, "users")
    await page.get_by_label("Status").select_option("pending_approval")
    await page.locator("#users tr").filter(has_text="eve").wait_for()
    shown["users pending"] = await _assert_clean(page, "users pending")

    await page.goto("/console/admin/audit")
    await page.locator("#entries tr").filter(has_text="auth.login_failed").first.wait_for()
    await _expand_everything(page)
    shown["audit"] = await _assert_clean(page, "audit")

    for section, ready in ADMIN_SECTIONS:
        await page.goto(f"/console/admin/{section}")
        if ready:
            await page.get_by_text(ready).first.wait_for()
        await page.wait_for_load_state("networkidle")
        await _expand_everything(page)
        shown[section] = await _assert_clean(page, section)
    await page.goto("/console/admin/groups")
    await page.get_by_text(SHORT).first.click()  # its members: mallory's name there
    await page.wait_for_load_state("networkidle")
    shown["group members"] = await _assert_clean(page, "group members")

    # The victim sees mallory's shared persona, its agent, and the chat's model picker.
    await hostile_context.clear_cookies()
    await sign_in_as(hostile_context, console, database, test_keys, seeded["victim"])
    for path in VICTIM_PAGES:
        path = path.format(persona=seeded["persona"])
        await page.goto(path)
        await page.wait_for_load_state("networkidle")
        await _expand_everything(page)
        shown[path] = await _assert_clean(page, path)
    assert not errors, errors
    # The payloads did reach these pages, shown as text.
    missing = [where for where in ("users", "users pending", "audit", "groups", "limits",
                                   "queue", "providers", "group members", "/console/personas",
                                   "/console/agents", "/console/profile") if not shown[where]]
    assert not missing, missing

    # With the CSP on: not a single violation (nothing injected for it to block).
    strict = await _new_context(browser, console, bypass_csp=False)
    try:
        await sign_in_as(strict, console, database, test_keys, seeded["boss"])
        page = await strict.new_page()
        for section in ("audit", "users", "queue", "providers", "limits", "groups"):
            await page.goto(f"/console/admin/{section}")
            await page.wait_for_load_state("networkidle")
            await _expand_everything(page)
            await _assert_clean(page, f"{section} under the CSP")
    finally:
        await strict.close()


ANSWER = ("Sure! [click me](javascript:window.__xss=5) <img id=pwn src=x onerror=window.__xss=6>"
          " <script>window.__xss=7</script> ![i](x\" onerror=\"window.__xss=8) "
          "<a id=pwn href=\"javascript:window.__xss=9\">link</a>")


async def test_a_hostile_model_answer_and_model_error_stay_text(
    hostile_context: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial, admin_headers: dict[str, str], stub: StubServer,
) -> None:
    await add_provider(client, admin_headers, stub)
    user, _ = await make_user(database)
    await sign_in_as(hostile_context, console, database, test_keys, user)
    page = await hostile_context.new_page()
    stub.script(Reply(text=ANSWER))
    await page.goto("/console/chat")
    await page.get_by_role("button", name="Start a new chat").click()
    await page.wait_for_url("**/console/chat/*")
    box = page.get_by_label("Message", exact=True)
    await box.fill(P)
    await box.press("Enter")
    answer = page.locator(".message.assistant .content")
    await answer.filter(has_text="click me").wait_for()
    assert await answer.inner_text() == ANSWER
    await _assert_clean(page, "chat answer")
    # A provider failing with markup in its error message: the error shown is text too.
    stub.script(Fail(status=400, message=P), Fail(status=400, message=P))
    await box.fill("again")
    await box.press("Enter")
    await page.locator("#notice[data-kind='error']").wait_for()
    await _assert_clean(page, "chat error")
    await page.reload()
    await page.locator(".message.assistant").first.wait_for()
    await _assert_clean(page, "chat reload")
