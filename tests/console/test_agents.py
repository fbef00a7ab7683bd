"""The agents, agent and run pages in a real browser: create an agent, run it and watch its
steps and streamed answer arrive live; cancel a waiting run; edit and delete an agent;
another user's agent and run are the 404 page; names are text, never markup."""

from __future__ import annotations

import asyncio
import re
import uuid
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from tests.agents.conftest import make_agent, running_worker
from tests.chat.conftest import add_provider
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]
EVIL = '<img src=x onerror="window.pwned=1">Clock'


async def test_create_an_agent_run_it_and_watch_the_steps_live(
    page: Any, console: str, app: FastAPI, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial, test_settings: Settings, admin_headers: dict[str, str],
    stub: StubServer,
) -> None:
    from playwright.async_api import expect

    await add_provider(client, admin_headers, stub)
    user_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/agents")
    await page.get_by_text("No agents yet").wait_for()
    await page.get_by_label("Name").fill(EVIL)
    await expect(page.get_by_label("Slug")).to_have_value("img-src-x-onerror-window-pwned-1-clock")
    await page.get_by_label("Slug").fill("clock")
    await page.get_by_label("System prompt").fill("Tell the time.")
    await page.get_by_label("current_time").check()
    await assert_accessible(page)
    await page.get_by_role("button", name="Create agent").click()

    await page.wait_for_url(re.compile(r"/console/agents/[0-9a-f-]{36}$"))
    await expect(page.get_by_role("heading", level=1)).to_have_text(EVIL)  # text, not markup
    await expect(page.locator("#agent-details")).to_contain_text("current_time")
    await assert_accessible(page)
    # The model asks for the time, then streams its answer a word at a time.
    stub.script(ToolCalls(Call("current_time", {"timezone": "Europe/Paris"})),
                Reply("It is noon in Paris, said the clock.", chunk_delay_ms=400))
    await page.get_by_label("Input").fill("What time is it in Paris?")
    await page.get_by_role("button", name="Run", exact=True).click()

    await page.wait_for_url(re.compile(r"/console/runs/[0-9a-f-]{36}$"))
    await expect(page.locator("#run-status")).to_contain_text("pending")
    await expect(page.locator("#live")).to_have_attribute("data-state", "open")
    await expect(page.get_by_role("link", name=EVIL)).to_be_visible()
    await assert_accessible(page)
    async with running_worker(app, database, test_settings):
        streaming = page.locator('li[data-step="3"] .streaming')
        await expect(streaming).to_contain_text("noon")  # part of the answer, still running
        await expect(page.locator("#run-status")).to_contain_text("completed", timeout=20_000)
    steps = page.locator("#timeline > li")
    await expect(steps).to_have_count(3)
    await expect(steps.nth(0)).to_contain_text("Model call")
    await expect(steps.nth(1)).to_contain_text("Tool call: current_time")
    await expect(steps.nth(2)).to_contain_text("It is noon in Paris, said the clock.")
    await expect(page.locator("#run-output-text")).to_have_text("It is noon in Paris, said the clock.")
    await expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    await expect(page.locator("#live")).to_have_attribute("data-state", "closed")
    await steps.nth(1).get_by_text("Result").click()
    await expect(steps.nth(1)).to_contain_text("Europe/Paris")
    await screenshot(page, "agent-run")
    await assert_accessible(page)
    assert await page.evaluate("window.pwned") is None

    await page.goto("/console/agents")  # the list and the recent runs
    await expect(page.locator("#agents-body")).to_contain_text(EVIL)
    await expect(page.locator("#runs-body")).to_contain_text("completed")
    await screenshot(page, "agents")
    await assert_accessible(page)
    assert await page.evaluate("window.pwned") is None


async def test_cancel_a_waiting_run_then_edit_and_delete_the_agent(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    user_id, _ = await make_user(database)
    agent = await make_agent(database, user_id, name="Slowpoke")
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto(f"/console/agents/{agent.id}")
    await page.get_by_label("Input").fill("Take your time.")
    await page.get_by_role("button", name="Run", exact=True).click()
    await page.wait_for_url(re.compile(r"/console/runs/"))
    await expect(page.locator("#run-status")).to_contain_text("pending")  # no worker runs
    await page.get_by_role("button", name="Cancel run").click()
    await expect(page.locator("#run-status")).to_contain_text("cancelled")
    await expect(page.get_by_role("button", name="Cancel run")).to_be_hidden()
    await expect(page.locator("#live")).to_have_attribute("data-state", "closed")
    await assert_accessible(page)

    await page.set_viewport_size({"width": 390, "height": 844})  # a phone
    await page.goto(f"/console/agents/{agent.id}")
    await page.get_by_label("Name", exact=True).fill("Quickstep")
    await page.get_by_label("Public (every user may run it)").check()
    await page.get_by_role("button", name="Save changes").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Quickstep")
    await expect(page.locator("#agent-details")).to_contain_text("public")
    await expect(page.locator("#runs-body")).to_contain_text("cancelled")
    await screenshot(page, "agent-phone")
    await assert_accessible(page)
    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Delete agent").click()
    await page.wait_for_url(re.compile(r"/console/agents$"))
    await page.get_by_text("No agents yet").wait_for()


async def test_another_users_agent_and_run_are_not_found(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    owner_id, owner_headers = await make_user(database)
    agent = await make_agent(database, owner_id)
    started = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
                                headers=owner_headers)
    assert started.status_code == 202, started.text
    intruder_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, intruder_id)
    for path in (f"/console/agents/{agent.id}", f"/console/runs/{started.json()['id']}",
                 f"/console/runs/{uuid.uuid4()}", "/console/agents/not-an-id"):
        answer = await page.goto(path)
        assert answer is not None and answer.status == 404, path
        await page.get_by_role("heading", name="Not found").wait_for()
    await assert_accessible(page)


async def test_an_agent_answers_in_the_chat_when_picked_as_the_model(
    page: Any, console: str, app: FastAPI, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial, test_settings: Settings, admin_headers: dict[str, str],
    stub: StubServer,
) -> None:
    from playwright.async_api import expect

    await add_provider(client, admin_headers, stub)
    user_id, _ = await make_user(database)
    await make_agent(database, user_id, name="Clock keeper", slug="clock",
                     tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time")), Reply("It is noon, says the clock."))
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/chat")
    await page.get_by_role("button", name="Start a new chat").click()
    await page.wait_for_url(re.compile(r"/console/chat/"))
    await page.get_by_label("Model").select_option("agent:clock")
    async with running_worker(app, database, test_settings):
        await page.get_by_label("Message", exact=True).fill("What time is it?")
        await page.get_by_role("button", name="Send").click()
        await expect(page.locator(".message.assistant .content")).to_have_text(
            "It is noon, says the clock.", timeout=20_000)
        # The streamed text can show before the answer's row is committed: reload only
        # once the session holds both messages.
        session_id = page.url.rstrip("/").rsplit("/", 1)[-1]
        for _ in range(200):
            async with database.transaction() as s:
                stored = await s.scalar(text(
                    "SELECT count(*) FROM chat_messages WHERE session_id = :id"),
                    {"id": session_id})
            if stored == 2:
                break
            await asyncio.sleep(0.1)
    await page.reload()  # both messages are the session's
    await expect(page.locator(".message")).to_have_count(2)
    await screenshot(page, "chat-with-agent")
    await assert_accessible(page)


async def _scrolls_sideways(page: Any) -> bool:
    wider: bool = await page.evaluate(
        "document.documentElement.scrollWidth > document.documentElement.clientWidth")
    return wider


async def test_long_unbroken_names_in_headings_wrap(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """Long names without spaces in page headings (agent, persona, the event being edited)
    wrap: no page scrolls sideways."""
    user_id, headers = await make_user(database)
    persona = await client.post("/api/v1/personas", json={"name": "P" * 100}, headers=headers)
    assert persona.status_code == 201, persona.text
    agent = await make_agent(database, user_id, name="A" * 100)
    cal = await client.post("/api/v1/calendars", json={"name": "Cal"}, headers=headers)
    assert cal.status_code == 201, cal.text
    ev = await client.post(f"/api/v1/calendars/{cal.json()['id']}/events", headers=headers, json={
        "summary": "S" * 200, "start_time": "2020-01-06T12:00:00Z",
        "end_time": "2020-01-06T12:15:00Z", "recurrence_rule": "FREQ=DAILY"})
    assert ev.status_code == 201, ev.text
    await sign_in_as(page.context, console, database, test_keys, user_id)
    overflowing: list[str] = []
    for url, title, name in ((f"/console/personas/{persona.json()['id']}", "#persona-title", "P"),
                             (f"/console/agents/{agent.id}", "#agent-title", "A")):
        await page.goto(url)
        await page.locator(title).filter(has_text=name * 10).wait_for()
        if await _scrolls_sideways(page):
            overflowing.append(url)
    await page.goto("/console/calendar")
    await page.locator("#agenda-body tr[data-event-id] button").first.click()
    await page.locator("#event-title").filter(has_text="S" * 10).wait_for()
    if await _scrolls_sideways(page):
        overflowing.append("/console/calendar (editing)")
    assert not overflowing, overflowing


async def test_a_run_preview_never_cuts_a_flag_emoji_in_half(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """The agent page lists its runs by their input cut to 80 characters, never inside an
    emoji (docs/console.md, Usability): an input whose 80th character is a flag (two
    regional-indicator code points) shows none of it, not a lone regional indicator."""
    user_id, headers = await make_user(database)
    agent = await make_agent(database, user_id)
    text = "a" * 79 + "\U0001F1EB\U0001F1F7 and more"  # 79 letters, then the French flag
    started = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": text},
                                headers=headers)
    assert started.status_code == 202, started.text
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto(f"/console/agents/{agent.id}")
    link = page.locator(f'#runs-body a[href="/console/runs/{started.json()["id"]}"]')
    await link.wait_for()
    shown = await link.text_content()
    assert shown is not None
    assert shown == "a" * 79, f"the preview ends in half a flag: {shown[-3:]!r}"
