"""Uploads of ordinary files whose declared type or first bytes misled the parser."""

from __future__ import annotations

import httpx

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.knowledge.support import drain_jobs, upload, upload_outcome
from tests.support.identity import make_user

API = "/api/v1/knowledge"


async def test_a_csv_sent_as_ms_excel_by_a_windows_browser_is_ingested(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """A `.csv` is ingested whatever Content-Type the browser adds: Windows browsers with
    Office send `application/vnd.ms-excel` for every .csv (it was a 415 error)."""
    _, headers = await make_user(database)
    answer = await upload(kclient, headers, "seats.csv", b"city,seats\nParis,12\nLyon,7\n",
                          "application/vnd.ms-excel")
    assert answer.status_code == 202, answer.text
    await drain_jobs(database, kcfg)
    doc, run, chunks = await upload_outcome(kclient, headers, answer)
    assert (doc["status"], [c["content"] for c in chunks]) == (
        "ready", ["city,seats\nParis,12\nLyon,7"]), (doc["error_message"], run["errors"])


async def test_a_text_plain_note_mentioning_the_pdf_header_is_not_read_as_a_pdf(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """Past the file's start, `%PDF-` makes a PDF only when nothing says text: a `README`
    sent as `text/plain` mentioning `%PDF-1.7` was read as a broken PDF."""
    _, headers = await make_user(database)
    note = (b"Notes on the portable document format and its history.\n"
            b"Every file starts with the header %PDF-1.7 followed by objects.\n")
    answer = await upload(kclient, headers, "README", note, "text/plain")
    assert answer.status_code == 202, answer.text
    await drain_jobs(database, kcfg)
    doc, run, chunks = await upload_outcome(kclient, headers, answer)
    assert doc["status"] == "ready", (doc["error_message"], run["errors"])
    assert "%PDF-1.7" in chunks[0]["content"]


async def test_an_html_page_with_a_utf8_bom_and_no_extension_is_read_as_html(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """A saved page without an extension, with a UTF-8 BOM (as many editors save it), is
    sniffed as HTML and its scripts dropped (it was indexed as text, tags included)."""
    _, headers = await make_user(database)
    page = (b"\xef\xbb\xbf<!doctype html><html><body><p>Herons wade in water.</p>"
            b"<script>trackVisitor()</script></body></html>")
    answer = await upload(kclient, headers, "page", page, "application/octet-stream")
    assert answer.status_code == 202, answer.text
    await drain_jobs(database, kcfg)
    doc, run, chunks = await upload_outcome(kclient, headers, answer)
    assert (doc["status"], [c["content"] for c in chunks]) == (
        "ready", ["Herons wade in water."]), (doc["mime"], run["errors"])


async def test_a_heading_of_zero_width_characters_is_no_title(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """A Markdown `# ` heading of zero-width spaces only is no title: hits are titled with
    the file name (they were titled with the invisible string)."""
    _, headers = await make_user(database)
    answer = await upload(kclient, headers, "herons.md",
                          "# \u200b\u200b\n\nHerons wade in water.\n".encode(), "text/markdown")
    assert answer.status_code == 202, answer.text
    await drain_jobs(database, kcfg)
    doc, run, chunks = await upload_outcome(kclient, headers, answer)
    assert doc["status"] == "ready", run["errors"]
    title = chunks[0]["metadata"].get("title")
    assert title and title.strip("\u200b\u200c\u200d\u2060\ufeff"), repr(title)
