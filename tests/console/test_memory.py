"""The memory page in a real browser: add a memory and see it listed (markup as text), a
fact that stopped being true (gone now, there as of a past moment and with the checkbox,
its history naming what replaced it), recall with its score components, an entity's
relations over time, learning from text through the queue, forgetting everything (another
user's memories untouched) and one user never seeing another's."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator
from datetime import datetime, timedelta
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.db.base import utcnow
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.llm import jobs as llm_jobs
from roost.llm.deps import app_gateway
from roost.memory import service
from roost.memory.models import Memory
from roost.principal import Principal
from roost.tasks.worker import Worker, WorkerConfig
from tests.chat.conftest import add_provider
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, StubServer

pytestmark = [pytest.mark.needs_browser, pytest.mark.usefixtures("no_script_errors")]

API = "/api/v1/memories"
EVIL = '<img src=x onerror="window.pwned=1"><b>Ada</b> likes green tea'
Headers = dict[str, str]


async def _add(client: httpx.AsyncClient, headers: Headers, content: str, **extra: Any) -> Any:
    answer = await client.post(API, headers=headers, json={"content": content, **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def _open(page: Any, console: str, database: Database, keys: KeyMaterial,
                user_id: uuid.UUID) -> None:
    await sign_in_as(page.context, console, database, keys, user_id)
    await page.goto("/console/memory")
    await page.get_by_role("heading", name="Memory", exact=True).wait_for()
    await page.locator("#view-summary").filter(has_text="What").wait_for()  # the list loaded


async def _invalidate(database: Database, user_id: uuid.UUID, memory_id: str, by: str,
                      reason: str) -> None:
    async with database.transaction() as session:
        memory = await session.get_one(Memory, uuid.UUID(memory_id))
        actor = Principal(user_id=user_id, is_admin=False, kind="api_key")
        await service.invalidate(session, actor, memory, by=uuid.UUID(by), reason=reason)


async def _local_input(page: Any, moment: datetime) -> str:
    """``moment`` as a datetime-local value in the browser's own time zone."""
    value: str = await page.evaluate(
        "ms => { const d = new Date(ms); d.setMinutes(d.getMinutes() - d.getTimezoneOffset());"
        " return d.toISOString().slice(0, 16); }", int(moment.timestamp() * 1000))
    return value


def _accept(page: Any, seen: list[str]) -> None:
    async def answer(dialog: Any) -> None:
        seen.append(dialog.message)
        await dialog.accept()
    page.once("dialog", lambda dialog: asyncio.ensure_future(answer(dialog)))


async def test_add_a_memory_see_it_as_text_and_delete_it(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    user_id, _ = await make_user(database)
    await _open(page, console, database, test_keys, user_id)
    await page.get_by_text("Nothing remembered yet").wait_for()
    await assert_accessible(page)

    await page.get_by_label("What to remember").fill(EVIL)
    await page.get_by_label("Type").select_option("preference")
    await page.get_by_label("Confidence (0 to 1)").fill("0.9")
    await page.get_by_role("button", name="Remember", exact=True).click()

    item = page.locator("#memories .memory").filter(has_text="likes green tea")
    await expect(item.locator(".memory-content")).to_have_text(EVIL)  # text, not markup
    meta = item.locator(".memory-meta")
    await expect(meta).to_contain_text("preference")
    await expect(meta).to_contain_text("confidence 0.90")
    await expect(meta).to_contain_text("still true")
    assert await page.locator("#memories img, #memories b").count() == 0
    assert await page.evaluate("window.pwned") is None
    await expect(page.get_by_label("What to remember")).to_have_value("")  # the form is reset

    # Its history: the one "add" event; then delete it (after the confirmation).
    await item.get_by_role("button", name="History").click()
    await expect(item.locator(".memory-history")).to_contain_text("Added")
    await expect(item.locator(".memory-history .history-new")).to_have_text(EVIL)
    await expect(item.get_by_role("button", name="History")).to_have_attribute("aria-expanded", "true")
    await assert_accessible(page)
    seen: list[str] = []
    _accept(page, seen)
    await item.get_by_role("button", name="Delete").click()
    await page.get_by_text("Nothing remembered yet").wait_for()
    assert "likes green tea" in seen[0]
    async with database.transaction() as session:
        assert await session.scalar(text("SELECT count(*) FROM memories")) == 0


async def test_a_fact_that_stopped_being_true(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    past = utcnow() - timedelta(days=30)
    old = await _add(client, headers, "Ada works at Acme", valid_from=past.isoformat())
    new = await _add(client, headers, "Ada works at Globex")
    await _invalidate(database, user_id, old["id"], new["id"], "changed jobs")

    await _open(page, console, database, test_keys, user_id)
    memories = page.locator("#memories")
    contents = memories.locator(".memory-content")
    await expect(contents).to_have_text(["Ada works at Globex"])  # only what is true now

    # As of a past moment: what was true then.
    await page.get_by_label("As of (what was true then)").fill(
        await _local_input(page, past + timedelta(days=1)))
    await expect(contents).to_have_text(["Ada works at Acme"])
    await expect(page.locator("#view-summary")).to_contain_text("What was true on")

    # Back to now, then every version with the checkbox.
    await page.get_by_role("button", name="Now", exact=True).click()
    await expect(contents).to_have_text(["Ada works at Globex"])
    await page.get_by_label("Include facts that stopped being true").check()
    await expect(contents).to_have_text(["Ada works at Globex", "Ada works at Acme"])
    acme = memories.locator(".memory").filter(has_text="Acme")
    await expect(acme.locator(".memory-meta")).to_contain_text("no longer true")
    await expect(acme.locator(".memory-meta")).to_contain_text("until")

    await acme.get_by_role("button", name="History").click()
    events = acme.locator(".memory-history li")
    await expect(events).to_have_count(2)
    await expect(events.nth(0)).to_contain_text("Added")
    await expect(events.nth(1)).to_contain_text("No longer true")
    await expect(events.nth(1)).to_contain_text("Replaced by: Ada works at Globex")
    await expect(events.nth(1)).to_contain_text("Reason: changed jobs")
    await screenshot(page, "memory")
    await assert_accessible(page)


async def test_recall_and_entity_history(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    user_id, headers = await make_user(database)
    past = utcnow() - timedelta(days=60)
    paris = await _add(client, headers, "Ada lived in Paris", valid_from=past.isoformat(),
                       entities=[{"name": "Ada", "type": "person"}, {"name": "Paris", "type": "city"}],
                       relationships=[{"source": "Ada", "relation": "lives_in", "target": "Paris"}])
    lyon = await _add(client, headers, "Ada lives in Lyon",
                      entities=[{"name": "Ada", "type": "person"}, {"name": "Lyon", "type": "city"}],
                      relationships=[{"source": "Ada", "relation": "lives_in", "target": "Lyon"}])
    await _invalidate(database, user_id, paris["id"], lyon["id"], "moved")
    await _add(client, headers, "The quince tree by the wall gives fruit for marmalade")
    await _add(client, headers, "Bob plays the cello on Sundays")

    await _open(page, console, database, test_keys, user_id)
    await page.get_by_label("Recall memories about").fill("marmalade")
    await page.get_by_role("button", name="Recall", exact=True).click()
    first = page.locator("#recall-results .memory").first
    await expect(first.locator(".memory-content")).to_have_text(
        "The quince tree by the wall gives fruit for marmalade")
    scores = first.locator(".scores")
    for part in ("score ", "vector ", "text ", "graph "):
        await expect(scores).to_contain_text(part)
    await expect(page.locator("#recall-summary")).to_contain_text("best first")

    await page.get_by_label("Find entities (name contains)").fill("ad")
    await page.get_by_role("button", name="Find", exact=True).click()
    await page.locator("#entity-results").get_by_role("button", name="Ada", exact=True).click()
    await expect(page.locator("#entity-name")).to_have_text("Ada (person)")
    rows = page.locator("#entity-history tbody tr")
    await expect(rows).to_have_count(2)  # oldest first: Paris (past), then Lyon (current)
    await expect(rows.nth(0)).to_contain_text("Ada — lives_in → Paris")
    await expect(rows.nth(0)).to_contain_text("past")
    await expect(rows.nth(0)).to_contain_text("Ada lived in Paris")
    await expect(rows.nth(1)).to_contain_text("Ada — lives_in → Lyon")
    await expect(rows.nth(1)).to_contain_text("current")
    await expect(rows.nth(1)).to_contain_text("still true")
    neighbours = page.locator("#entity-neighbours li")
    await expect(neighbours).to_have_count(1)  # the graph now: Lyon only
    await expect(neighbours).to_contain_text("Lyon")
    await assert_accessible(page)
    # A neighbour is an entity to look at in turn.
    await neighbours.get_by_role("button", name="Lyon").click()
    await expect(page.locator("#entity-name")).to_have_text("Lyon (city)")
    await expect(page.locator("#entity-history tbody tr")).to_have_count(1)


@contextlib.asynccontextmanager
async def running_worker(app: FastAPI, database: Database) -> AsyncIterator[Worker]:
    """A queue worker in this process (the learn job's extraction call goes to the stub)."""
    llm_jobs.gateway_override = app_gateway(app)
    worker = Worker(database, WorkerConfig(concurrency=1, lease_s=5, poll_interval_s=0.2,
                                           schedules=False, shutdown_timeout_s=2))
    task = asyncio.create_task(worker.run())
    await asyncio.wait_for(worker.started.wait(), 15)
    try:
        yield worker
    finally:
        worker.stop(force=True)
        with contextlib.suppress(Exception):
            await asyncio.wait_for(task, 20)
        llm_jobs.gateway_override = None


async def test_learn_from_text_is_polled_until_done(
    page: Any, console: str, app: FastAPI, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial, admin_headers: Headers, stub: StubServer,
) -> None:
    from playwright.async_api import expect

    user_id, _ = await make_user(database)
    await _open(page, console, database, test_keys, user_id)
    # No provider yet: the API's problem detail is the message.
    await page.get_by_label("Text to learn from").fill("I am allergic to peanuts.")
    await page.get_by_role("button", name="Learn", exact=True).click()
    await expect(page.get_by_role("alert")).to_contain_text("provider")
    await expect(page.locator("#learn-status")).to_have_text("")

    await add_provider(client, admin_headers, stub)
    stub.script(Reply(json={"facts": [{"content": "The user is allergic to peanuts",
                                       "memory_type": "fact", "confidence": 0.95}]}))
    await page.get_by_role("button", name="Learn", exact=True).click()
    status = page.locator("#learn-status")
    await expect(status).to_contain_text("Learning from your text")  # queued, no worker yet
    async with running_worker(app, database):
        await expect(status).to_contain_text("Done.", timeout=20_000)
    await expect(status).to_contain_text("1 fact found: 1 added")
    await expect(status.locator("ul li")).to_have_text(["The user is allergic to peanuts"])
    item = page.locator("#memories .memory").filter(has_text="allergic to peanuts")
    await expect(item.locator(".memory-meta")).to_contain_text("confidence 0.95")
    await assert_accessible(page)


async def test_forget_everything_leaves_other_users_alone(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    from playwright.async_api import expect

    alice, alice_h = await make_user(database)
    bob, bob_h = await make_user(database)
    await _add(client, alice_h, "Alice keeps bees")
    secret = await _add(client, alice_h, "Alice hides the key under the mat")
    await _add(client, bob_h, "Bob keeps goats")

    # Bob sees none of Alice's memories: not listed, not recalled, not by id.
    await _open(page, console, database, test_keys, bob)
    await expect(page.locator("#memories .memory-content")).to_have_text(["Bob keeps goats"])
    await page.get_by_label("Recall memories about").fill("key mat bees")
    await page.get_by_role("button", name="Recall", exact=True).click()
    await expect(page.locator("#recall-summary")).to_contain_text("Nothing remembered matches")
    status = await page.evaluate(
        "id => fetch(`/api/v1/memories/${id}/history`).then(r => r.status)", secret["id"])
    assert status == 404
    await page.context.clear_cookies()

    await _open(page, console, database, test_keys, alice)
    await expect(page.locator("#memories .memory")).to_have_count(2)
    seen: list[str] = []
    _accept(page, seen)
    await page.get_by_role("button", name="Forget everything").click()
    await expect(page.locator("#forget-status")).to_have_text("Forgot 2 memories.")
    await page.get_by_text("Nothing remembered yet").wait_for()
    assert "every memory in your own memory" in seen[0] and "cannot be undone" in seen[0]
    async with database.transaction() as session:
        left = (await session.execute(text(
            "SELECT user_id, content FROM memories ORDER BY content"))).all()
    assert [tuple(row) for row in left] == [(bob, "Bob keeps goats")]
    await assert_accessible(page)


async def test_phone_width(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    user_id, headers = await make_user(database)
    await _add(client, headers, "A very long memory " + "without-any-break-" * 20)
    await page.set_viewport_size({"width": 390, "height": 844})
    await _open(page, console, database, test_keys, user_id)
    await page.locator("#memories .memory").first.wait_for()
    width = await page.evaluate("document.documentElement.scrollWidth")
    assert width <= 390  # long content wraps, nothing scrolls sideways
    await screenshot(page, "memory-phone")
    await assert_accessible(page)


async def test_memory_next_double_click_moves_one_page(
    page: Any, console: str, client: httpx.AsyncClient, database: Database,
    test_keys: KeyMaterial,
) -> None:
    """A double click on Next moves one page: it says Page 2, and Previous goes back to the
    first page (the buttons are disabled while a page loads)."""
    user_id, headers = await make_user(database)
    for index in range(45):
        await _add(client, headers, f"fact number {index:03d}")
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/memory")
    await page.locator("#memories .memory").nth(19).wait_for()
    await page.locator("#memories-next").dblclick()
    await page.wait_for_timeout(1500)  # a second Next, if one got through, has landed
    summary = await page.locator("#view-summary").inner_text()
    assert "Page 2." in summary, summary
    await page.locator("#memories-prev").click()
    await page.wait_for_timeout(1000)
    summary = await page.locator("#view-summary").inner_text()
    assert "Page" not in summary, summary
