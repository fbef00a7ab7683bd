"""The chat page in a real browser: a streamed answer, a virtualised list of thousands of
sessions, a long conversation read backwards page by page, other users' chats out of
sight, rename and delete, markup shown as text, a title cut whole from the first line, and
a draft that survives an expired sign-in."""

from __future__ import annotations

import re
import uuid
from datetime import timedelta
from typing import Any

import httpx
import pytest
from cryptography.fernet import Fernet
from playwright.async_api import expect
from sqlalchemy import insert, select, text, update

from roost.chat.models import ChatMessage, ChatSession
from roost.db.base import utcnow, uuid7
from roost.db.engine import Database
from roost.identity.accounts import create_user
from roost.keyfiles import KeyMaterial
from roost.principal import SYSTEM
from tests.chat.conftest import add_provider
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.support.identity import make_user
from tests.support.openai_stub import Reply, StubServer

pytestmark = pytest.mark.needs_browser
PASSWORD = "amber-quill-harbor-57!"
CHAT_URL = re.compile(r"/console/chat/[0-9a-f-]{36}$")


async def _add_sessions(database: Database, user_id: uuid.UUID, titles: list[str]) -> list[uuid.UUID]:
    """Sessions of ``user_id`` in one statement, the first title the newest."""
    now = utcnow()
    rows: list[dict[str, Any]] = [{"id": uuid7(), "user_id": user_id, "title": title,
             "created_at": now - timedelta(seconds=i), "updated_at": now}
            for i, title in enumerate(titles)]
    async with database.transaction() as session:
        await session.execute(insert(ChatSession), rows)
    return [row["id"] for row in rows]


async def _add_messages(database: Database, keys: KeyMaterial, user_id: uuid.UUID,
                        session_id: uuid.UUID, contents: list[str]) -> None:
    """Stored messages (encrypted as the chat service does), oldest first."""
    fernet = Fernet(keys.message_keys[0].encode())
    start = utcnow() - timedelta(hours=1)
    rows: list[dict[str, Any]] = [{"id": uuid7(), "session_id": session_id, "user_id": user_id, "seq": i + 1,
             "role": "user" if i % 2 == 0 else "assistant",
             "content": fernet.encrypt(content.encode()), "created_at": start + timedelta(seconds=i)}
            for i, content in enumerate(contents)]
    async with database.transaction() as session:
        await session.execute(insert(ChatMessage), rows)
        await session.execute(update(ChatSession).where(ChatSession.id == session_id)
                              .values(message_count=len(rows)))


async def test_a_new_chat_gets_a_streamed_answer(
    page: Any, console: str, client: httpx.AsyncClient, admin_headers: dict[str, str],
    stub: StubServer, database: Database, test_keys: KeyMaterial,
) -> None:
    await add_provider(client, admin_headers, stub)
    stub.script(Reply(chunk_delay_ms=30))  # word by word, so the bubble fills as it streams
    user_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, user_id)

    await page.goto("/console/chat")
    await page.get_by_text("No chats yet.").wait_for()
    await assert_accessible(page)
    await page.get_by_role("button", name="Start a new chat").click()
    await page.wait_for_url(CHAT_URL)
    await expect(page.get_by_label("Model")).to_have_value("")
    await expect(page.get_by_label("Model").locator("option")).to_have_text(["Default", "stub-model"])

    box = page.get_by_label("Message", exact=True)
    await box.fill("Hello there,\nhow are you?")
    await box.press("Enter")
    answer = page.locator(".message.assistant .content")
    await expect(answer).to_have_text("echo: Hello there,\nhow are you? (model stub-model)")
    await expect(box).to_have_value("")
    await expect(page.locator(".message.user .content")).to_have_text("Hello there,\nhow are you?")
    # The untitled chat is named after its first message, in the list too (and current).
    await expect(page.get_by_role("heading", level=1)).to_have_text("Hello there,")
    current = page.locator('#session-list a[aria-current="page"]')
    await expect(current).to_have_text("Hello there,")
    await screenshot(page, "chat")
    await assert_accessible(page)

    # Shift+Enter is a new line, not a send; the reload shows the stored exchange.
    await box.fill("line one")
    await box.press("Shift+Enter")
    await expect(box).to_have_value("line one\n")
    await page.reload()
    await expect(page.locator(".message")).to_have_count(2)
    await expect(page.locator(".message.assistant")).to_contain_text("stub-model")


async def test_a_chat_is_named_after_a_first_line_with_an_emoji_at_the_cut(
    page: Any, console: str, client: httpx.AsyncClient, admin_headers: dict[str, str],
    stub: StubServer, database: Database, test_keys: KeyMaterial,
) -> None:
    """The title is cut between characters, not UTF-16 units: an emoji straddling the cut
    is kept whole (half of it was refused by the server, and the chat stayed untitled)."""
    await add_provider(client, admin_headers, stub)
    user_id, headers = await make_user(database)
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/chat")
    await page.get_by_role("button", name="Start a new chat").click()
    await page.wait_for_url(CHAT_URL)
    sid = page.url.rsplit("/", 1)[1]
    box = page.get_by_label("Message", exact=True)
    # 58 letters, then an emoji: UTF-16 units 59 and 60, which slice(0, 59) split.
    await box.fill("a" * 58 + "\U0001F600 and the rest of a long first line")
    await box.press("Enter")
    title = "a" * 58 + "\U0001F600…"
    await expect(page.get_by_role("heading", level=1)).to_have_text(title)
    got = (await client.get(f"/api/v1/chat/sessions/{sid}", headers=headers)).json()
    assert got["title"] == title


async def test_the_session_list_stays_small_with_thousands_of_sessions(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    user_id, _ = await make_user(database)
    count = 2500
    await _add_sessions(database, user_id, [f"Session {i:04d}" for i in range(count)])
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/chat")
    scroller = page.locator("#session-list")
    rows = page.locator("#session-rows li")
    await expect(page.get_by_role("link", name="Session 0000", exact=True)).to_be_visible()
    assert await rows.count() < 100

    # Scrolling to the end loads the next page, until the oldest session is there.
    for _ in range(count // 100 + 2):
        loaded = int(await scroller.get_attribute("data-loaded") or 0)
        if loaded >= count:
            break
        # Scrolled to the end again while waiting: a scroll that lands while the previous
        # page is still being added may trigger nothing (seen on a loaded CI machine).
        await page.wait_for_function(
            "n => { const e = document.getElementById('session-list');"
            " if (+e.dataset.loaded > n) return true;"
            " e.scrollTop = e.scrollHeight; return false; }",
            arg=loaded, polling=250, timeout=60_000)
        assert await rows.count() < 300
    await scroller.evaluate("e => { e.scrollTop = e.scrollHeight; }")
    await expect(page.get_by_role("link", name=f"Session {count - 1:04d}", exact=True)).to_be_in_viewport()
    await expect(page.get_by_role("link", name="Session 0000", exact=True)).to_have_count(0)
    assert await rows.count() < 300
    await screenshot(page, "chat-many-sessions")

    # Back at the top, the newest are rendered again.
    await scroller.evaluate("e => { e.scrollTop = 0; }")
    await expect(page.get_by_role("link", name="Session 0000", exact=True)).to_be_visible()
    await assert_accessible(page)


async def test_a_long_chat_opens_at_the_end_and_loads_older_pages_upwards(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    user_id, _ = await make_user(database)
    [sid] = await _add_sessions(database, user_id, ["A long talk"])
    await _add_messages(database, test_keys, user_id, sid,
                        [f"Message {i:04d} " + "words " * (i % 7) for i in range(1, 601)])
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto(f"/console/chat/{sid}")
    newest = page.locator(".message", has_text="Message 0600")
    await expect(newest).to_be_in_viewport()
    messages = page.locator("#message-list .message")
    await expect(messages).to_have_count(50)  # one page, not 600
    current = page.locator('#session-list a[aria-current="page"]')
    await expect(current).to_have_text("A long talk")
    await assert_accessible(page)

    # Scrolling to the top loads the page before it, and the reader stays where they were.
    box = page.locator("#messages")
    await box.evaluate("e => { e.scrollTop = 0; }")
    await expect(messages).to_have_count(100)
    await expect(page.locator(".message", has_text="Message 0551")).to_be_in_viewport()
    await expect(page.locator(".message", has_text="Message 0501")).not_to_be_in_viewport()
    await box.evaluate("e => { e.scrollTop = 0; }")
    await expect(messages).to_have_count(150)
    await expect(page.locator(".message", has_text="Message 0451")).to_be_attached()
    await expect(page.get_by_text("This is the start of the conversation.")).to_be_hidden()

    # The light theme passes axe too (contrast); at phone width the composer is on screen.
    await page.get_by_role("button", name="Switch to light theme").click()
    await expect(page.locator("html")).to_have_attribute("data-theme", "light")
    await assert_accessible(page)
    await page.set_viewport_size({"width": 390, "height": 844})
    await expect(page.get_by_label("Message", exact=True)).to_be_in_viewport()
    await expect(page.get_by_role("button", name="Send")).to_be_in_viewport()
    await screenshot(page, "chat-phone")
    await assert_accessible(page)


async def test_other_users_chats_are_out_of_sight(
    browser: Any, page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    alice, _ = await make_user(database)
    bob, _ = await make_user(database)
    admin, _ = await make_user(database, admin=True)
    [secret] = await _add_sessions(database, alice, ["Alice's secret plans"])
    await _add_sessions(database, admin, ["Admin's own chat"])

    await sign_in_as(page.context, console, database, test_keys, bob)
    await page.goto("/console/chat")
    await page.get_by_text("No chats yet.").wait_for()
    assert await page.get_by_text("Alice's secret plans").count() == 0
    answer = await page.goto(f"/console/chat/{secret}")
    assert answer is not None and answer.status == 404
    await page.get_by_role("heading", name="Not found").wait_for()
    await assert_accessible(page)

    # An administrator may open anyone's chat by id, but the list shows only their own.
    context = await browser.new_context(base_url=console)
    try:
        admin_page = await context.new_page()
        await sign_in_as(context, console, database, test_keys, admin)
        await admin_page.goto("/console/chat")
        await expect(admin_page.get_by_role("link", name="Admin's own chat")).to_be_visible()
        assert await admin_page.get_by_text("Alice's secret plans").count() == 0
    finally:
        await context.close()


async def test_rename_delete_errors_and_markup_shown_as_text(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    user_id, _ = await make_user(database)
    evil_title = '<img src=x onerror="window.pwned=1">Plans'
    evil_message = '<script>window.pwned=2</script><b>bold?</b>'
    other, sid = await _add_sessions(database, user_id, ["Another chat", evil_title])
    await _add_messages(database, test_keys, user_id, sid, [evil_message])
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto(f"/console/chat/{sid}")
    await expect(page.get_by_role("heading", level=1)).to_have_text(evil_title)
    await expect(page.get_by_role("link", name=evil_title)).to_have_attribute("aria-current", "page")
    await expect(page.locator(".message .content")).to_have_text(evil_message)
    assert await page.locator("#main img, .message b, .message script").count() == 0
    assert await page.evaluate("window.pwned") is None

    # No provider is configured: the API's problem is shown and the text stays in the box.
    box = page.get_by_label("Message", exact=True)
    await box.fill("Is anyone there?")
    await page.get_by_role("button", name="Send").click()
    await page.get_by_role("alert").filter(has_text="no LLM provider is configured").wait_for()
    await expect(box).to_have_value("Is anyone there?")
    await expect(page.locator(".message")).to_have_count(1)

    await page.get_by_role("button", name="Rename").click()
    title = page.get_by_label("Title")
    await expect(title).to_have_value(evil_title)
    await title.fill("Holiday <plans>")
    await assert_accessible(page)
    await page.get_by_role("button", name="Save").click()
    await expect(page.get_by_role("heading", level=1)).to_have_text("Holiday <plans>")
    await expect(page.get_by_role("link", name="Holiday <plans>")).to_have_attribute(
        "aria-current", "page")
    await screenshot(page, "chat-renamed")

    page.once("dialog", lambda dialog: dialog.accept())
    await page.get_by_role("button", name="Delete").click()
    await page.wait_for_url(re.compile(r"/console/chat$"))
    await expect(page.get_by_role("link", name="Another chat")).to_be_visible()
    await expect(page.get_by_role("link", name="Holiday <plans>")).to_have_count(0)
    async with database.transaction() as session:
        left = list((await session.scalars(
            select(ChatSession.id).where(ChatSession.user_id == user_id))).all())
    assert left == [other]


async def test_a_draft_survives_an_expired_sign_in(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    async with database.transaction() as session:
        user = await create_user(session, SYSTEM, username="drafty", email="drafty@example.test",
                                 password=PASSWORD, role="user", status="active",
                                 first_becomes_root=False)
    [sid] = await _add_sessions(database, user.id, ["Drafts"])
    await sign_in_as(page.context, console, database, test_keys, user.id)
    await page.goto(f"/console/chat/{sid}")
    await page.locator("main[data-ready]").wait_for()  # nothing else in flight
    draft = "A long thought I do not want to type twice"
    await page.get_by_label("Message", exact=True).fill(draft)
    async with database.transaction() as session:
        await session.execute(text("UPDATE sessions SET revoked_at = now() WHERE user_id = :u"),
                              {"u": user.id})

    await page.get_by_role("button", name="Send").click()
    await page.wait_for_url(re.compile(r"/console/login\?next="))
    await page.get_by_label("Username or email").fill("drafty")
    await page.get_by_label("Password").fill(PASSWORD)
    await page.get_by_role("button", name="Sign in", exact=True).click()
    await page.wait_for_url(re.compile(rf"/console/chat/{sid}$"))
    await expect(page.get_by_label("Message", exact=True)).to_have_value(draft)
    async with database.transaction() as session:
        stored = (await session.execute(text("SELECT count(*) FROM chat_messages"))).scalar()
    assert stored == 0


async def test_use_my_documents_gives_the_model_the_best_passages_and_lists_them(
    page: Any, console: str, client: httpx.AsyncClient, admin_headers: dict[str, str],
    stub: StubServer, database: Database, test_keys: KeyMaterial, test_settings: Any,
) -> None:
    from roost.knowledge.config import KnowledgeConfig
    from tests.knowledge.helpers import make_pdf
    from tests.knowledge.support import drain_jobs

    await add_provider(client, admin_headers, stub)
    user_id, headers = await make_user(database)
    pdf = make_pdf(["The office cat is called Miso and sleeps on the printer."])
    uploaded = await client.post("/api/v1/knowledge/documents", headers=headers,
                                 files={"file": ("handbook.pdf", pdf, "application/pdf")})
    assert uploaded.status_code in (201, 202), uploaded.text
    assert await drain_jobs(database, KnowledgeConfig.from_settings(test_settings)) == 1
    await sign_in_as(page.context, console, database, test_keys, user_id)
    await page.goto("/console/chat")
    await page.get_by_role("button", name="Start a new chat").click()
    await page.wait_for_url(CHAT_URL)
    await page.get_by_label("Use my documents").check()
    await page.get_by_label("Message", exact=True).fill("What is the office cat called?")
    await page.get_by_role("button", name="Send").click()
    sources = page.get_by_role("list", name="Sources")
    await expect(sources).to_contain_text("handbook.pdf, page 1")
    sent = stub.requests(path="/v1/chat/completions")[-1].body["messages"]
    assert sent[-1]["content"] == "What is the office cat called?"
    assert sent[-2]["role"] == "system" and "Miso" in sent[-2]["content"]
    assert "handbook.pdf" in sent[-2]["content"]
    await assert_accessible(page)
    await screenshot(page, "chat-with-documents")
