"""Web ingestion's document keys, names and content sniffing: a page mentioning the PDF
header is still HTML; `http://host` and `http://host/` are one document; names decoded."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.knowledge.support import ingest, principal
from tests.support.identity import make_user
from tests.support.sql import fetch

API = "/api/v1/knowledge"
PDF_TALK = (b"<html><head><title>PDF internals</title></head><body><h1>PDF internals</h1>"
            b"<p>Every PDF file begins with a header such as %PDF-1.7 and ends with %%EOF. "
            b"Penguins live in Antarctica.</p></body></html>")


class _Pages(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/pdf-internals"):
            body, ctype = PDF_TALK, "text/html; charset=utf-8"
        else:
            body = b"<html><body><p>Penguins live in Antarctica.</p></body></html>"
            ctype = "text/html; charset=utf-8"
        self.send_response(200)
        self.send_header("Content-Type", ctype)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def pages() -> Iterator[str]:
    server = _Pages(("127.0.0.1", 0), _Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


async def test_html_page_that_mentions_the_pdf_header_is_ingested_as_html(
    database: Database, kcfg: KnowledgeConfig, pages: str
) -> None:
    """A page served as ``text/html`` that mentions ``%PDF-1.7`` near its start (a page about
    the format) is HTML: the header found anywhere in the first 1 KiB made it a PDF, and
    the run failed with ``corrupt-document``."""
    uid, _ = await make_user(database)
    cfg = dataclasses.replace(kcfg, allow_private_fetch=True)
    run = await ingest(database, principal(uid), cfg, pages + "/pdf-internals")
    assert run["status"] == "success", run["errors"]


async def test_url_without_path_and_with_slash_are_one_document(
    database: Database, kcfg: KnowledgeConfig, pages: str
) -> None:
    """``http://host:port`` and ``http://host:port/`` are one request (``GET /``): one
    document (keyed on the URL as typed, they were two, duplicate chunks in search)."""
    uid, _ = await make_user(database)
    cfg = dataclasses.replace(kcfg, allow_private_fetch=True)
    for url in (pages, pages + "/"):
        run = await ingest(database, principal(uid), cfg, url)
        assert run["status"] == "success", run
    docs = await fetch(database, "SELECT name, uri FROM documents WHERE user_id = :u", u=uid)
    assert len(docs) == 1, docs


async def test_percent_encoded_url_name_is_decoded(
    database: Database, kcfg: KnowledgeConfig, pages: str
) -> None:
    """``/My%20Notes.html`` makes a document named ``My Notes.html``, as an upload of that
    file is (its name was cut from the raw URL text, escapes and all)."""
    uid, _ = await make_user(database)
    cfg = dataclasses.replace(kcfg, allow_private_fetch=True)
    run = await ingest(database, principal(uid), cfg, pages + "/My%20Notes.html")
    assert run["status"] == "success", run
    docs = await fetch(database, "SELECT name FROM documents WHERE user_id = :u", u=uid)
    assert [d.name for d in docs] == ["My Notes.html"], docs
