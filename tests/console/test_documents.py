"""The documents page in a real browser: upload with a progress bar, the ingestion run
polled until it finishes, search with scores and sources, delete, a too-large upload's
413 shown as a message, HTML in a file name shown as text."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.knowledge.config import KnowledgeConfig
from tests.console.conftest import assert_accessible, screenshot, sign_in_as
from tests.knowledge.support import drain_jobs
from tests.support.identity import make_user

pytestmark = pytest.mark.needs_browser

NOTES = (
    "# Garden notes\n\nThe quince tree by the south wall gives enough fruit for marmalade "
    "every autumn. Prune it in late winter and mulch the roots with compost.\n\n"
    "## Tomatoes\n\nSow tomatoes indoors in March and plant them out after the last frost.\n"
)


def _file(name: str, text: str, mime: str = "text/markdown") -> dict[str, Any]:
    return {"name": name, "mimeType": mime, "buffer": text.encode()}


async def _open(page: Any, console: str, database: Database, keys: KeyMaterial) -> None:
    user_id, _ = await make_user(database)
    await sign_in_as(page.context, console, database, keys, user_id)
    await page.goto("/console/documents")
    await page.get_by_role("heading", name="Documents", exact=True).wait_for()


async def _upload(page: Any, file: dict[str, Any]) -> None:
    await page.locator("#upload-file").set_input_files(file)
    await page.get_by_role("button", name="Upload", exact=True).click()


async def test_upload_is_ingested_then_found_by_search_and_deleted(
    page: Any, console: str, database: Database, test_keys: KeyMaterial, test_settings: Settings,
) -> None:
    await _open(page, console, database, test_keys)
    await page.get_by_text("No documents yet").wait_for()
    await assert_accessible(page)

    await _upload(page, _file("garden-notes.md", NOTES))
    status = page.locator("#upload-status")
    await status.filter(has_text="Done: garden-notes.md was uploaded").wait_for()
    assert await page.locator("#upload-progress").evaluate("bar => bar.value") == 100
    runs = page.locator("#runs")
    await runs.locator("tr", has_text="garden-notes.md").locator(".badge.pending").wait_for()
    await page.locator("#runs-summary").filter(has_text="1 run is in progress").wait_for()

    # The queue's job runs here, as a worker would; the page polls until it sees the end.
    assert await drain_jobs(database, KnowledgeConfig.from_settings(test_settings)) == 1
    await runs.locator("tr", has_text="garden-notes.md").locator(".badge.success").wait_for()
    doc_row = page.locator("#documents tr", has_text="garden-notes.md")
    await doc_row.locator(".badge.ready").wait_for()
    await page.locator("#runs-summary").filter(has_text="most recent runs").wait_for()

    await page.get_by_label("Search your documents").fill("marmalade quince")
    await page.get_by_role("button", name="Search", exact=True).click()
    result = page.locator(".result").first
    await result.get_by_role("heading", name="garden-notes.md").wait_for()
    assert "chunk 1" in await result.locator(".result-source").inner_text()
    scores = await result.locator(".scores").inner_text()
    assert "score" in scores and "vector similarity" in scores and "text rank" in scores
    assert "marmalade" in await result.locator(".snippet").inner_text()
    await screenshot(page, "documents")
    await assert_accessible(page)

    page.once("dialog", lambda dialog: asyncio.ensure_future(dialog.accept()))
    await page.get_by_role("button", name="Delete garden-notes.md").click()
    await page.get_by_text("No documents yet").wait_for()


async def test_a_too_large_upload_shows_the_413_message(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    await _open(page, console, database, test_keys)
    await _upload(page, _file("huge.txt", "x" * (300 * 1024), "text/plain"))
    await page.locator("#upload-status").filter(has_text="Upload failed").wait_for()
    alert = page.get_by_role("alert")
    await alert.filter(has_text="larger than the limit").wait_for()
    assert await page.locator("#upload-progress").get_attribute("data-state") == "failed"
    # Nothing broke: the page still works, nothing was stored.
    await page.get_by_text("No documents yet").wait_for()
    await _upload(page, _file("small.txt", "a small file"))
    await page.locator("#upload-status").filter(has_text="Done: small.txt").wait_for()
    await assert_accessible(page)


async def test_html_in_a_file_name_is_shown_as_text_at_phone_width(
    page: Any, console: str, database: Database, test_keys: KeyMaterial,
) -> None:
    await page.set_viewport_size({"width": 390, "height": 844})
    await _open(page, console, database, test_keys)
    # No quotes: browsers percent-encode them in a multipart file name.
    name = "<img src=x onerror=window.pwned=1>notes.md"
    await _upload(page, _file(name, NOTES))
    await page.locator("#upload-status").filter(has_text="was uploaded").wait_for()
    await page.locator("#documents .doc-name").filter(has_text=name).wait_for()
    await page.locator("#runs td", has_text=name).first.wait_for()
    assert await page.locator("#documents img, #runs img").count() == 0
    assert await page.evaluate("window.pwned") is None
    await screenshot(page, "documents-phone")
    await assert_accessible(page)
