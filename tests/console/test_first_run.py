"""The console's promise, end to end on a real `roost serve` (its own queue worker, the
local model and local embeddings): a person opens the server's root, creates the first
account in the browser, chats with the local model, uploads a PDF and asks about it, and as
administrator sees the day's usage chart.  The screenshots of this flow are the README's."""

from __future__ import annotations

import asyncio
import re
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest
from playwright.async_api import expect

from roost.keyfiles import KeyMaterial
from tests.console.conftest import assert_accessible, screenshot
from tests.knowledge.helpers import make_pdf
from tests.support.pg import PgTestServer
from tests.support.server import RunningServer, roost_server

pytestmark = [pytest.mark.needs_browser, pytest.mark.needs_local]
SLOW_MS = 120_000  # the local model on 2 cores


@pytest.fixture
async def served(pg_server: PgTestServer, db_name: str, tmp_path: Path,
                 test_keys: KeyMaterial) -> AsyncIterator[RunningServer]:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_ADMIN_TOKEN": test_keys.admin_token, "ROOST_LLM_LOCAL_THREADS": "2",
           "ROOST_SERVE_WORKER": "true", "ROOST_WORKER_SCHEDULES": "false"}
    manager = roost_server(env, timeout_s=120)
    server = await asyncio.to_thread(manager.__enter__)
    try:
        yield server
    finally:
        await asyncio.to_thread(manager.__exit__, None, None, None)
        print(server.output[-8000:])  # pytest shows it when the test failed


async def test_first_account_chat_pdf_question_and_usage(browser: Any, served: RunningServer) -> None:
    context = await browser.new_context(base_url=served.base_url, viewport={"width": 1280, "height": 800})
    context.set_default_timeout(20_000)
    page = await context.new_page()
    try:
        await page.goto("/")
        await page.get_by_role("link", name="Create one").click()
        await page.get_by_label("Username").fill("ada")
        await page.get_by_label("Email").fill("ada@example.com")
        await page.get_by_label("Password").fill("plum-velvet-orbit-93!")
        await page.get_by_role("button", name="Create account").click()
        await page.wait_for_url(re.compile(r"/console/chat"))

        # Chat with the local model, streamed.
        await page.get_by_role("button", name="Start a new chat").click()
        await page.wait_for_url(re.compile(r"/console/chat/"))
        box = page.get_by_label("Message", exact=True)
        await box.fill("Write one sentence about the sea.")
        await box.press("Enter")
        answer = page.locator(".message.assistant .content").first
        await expect(answer).not_to_have_text("", timeout=SLOW_MS)
        await expect(box).to_have_value("")
        await expect(page.locator(".message.assistant .role").first).to_contain_text(
            "SmolLM2", timeout=SLOW_MS)
        await screenshot(page, "first-run-chat")

        # Upload a PDF; the server's own worker ingests it with the local embedder.
        await page.get_by_role("link", name="Documents").click()
        await page.locator("#upload-file").set_input_files({
            "name": "handbook.pdf", "mimeType": "application/pdf",
            "buffer": make_pdf(["Office handbook.",
                                "The office cat is called Miso and sleeps on the printer."])})
        await page.get_by_role("button", name="Upload", exact=True).click()
        await page.locator("#documents tr", has_text="handbook.pdf").locator(".badge.ready").wait_for(
            timeout=SLOW_MS)
        await screenshot(page, "first-run-documents")

        # Ask about it: the best passages go with the question; the answer lists them.
        await page.get_by_role("link", name="Chat").click()
        await page.get_by_role("button", name="New chat", exact=True).click()
        await page.wait_for_url(re.compile(r"/console/chat/"))
        await page.get_by_label("Use my documents").check()
        await page.get_by_label("Message", exact=True).fill("What is the office cat called?")
        await page.get_by_role("button", name="Send").click()
        await expect(page.get_by_role("list", name="Sources")).to_contain_text(
            "handbook.pdf", timeout=SLOW_MS)
        await screenshot(page, "first-run-ask-pdf")

        # The administrator's usage chart shows today's calls.
        await page.get_by_role("link", name="Admin").click()
        await page.get_by_role("link", name="Usage").click()
        chart = page.get_by_role("img", name=re.compile("Bar chart of .* per day"))
        await chart.wait_for()
        assert await chart.locator("rect.bar, .bar").count() >= 1
        await screenshot(page, "first-run-usage")
        await assert_accessible(page)
    finally:
        await context.close()
