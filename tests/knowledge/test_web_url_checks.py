"""Web ingestion's URL checks before a run: a host that is not valid IDNA is the same 400
(API) or one-line exit 2 (CLI) as any bad URL; a fragment, or the root's slash, names no
other document; names are decoded; a page mentioning the PDF header is still HTML."""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.knowledge.support import ingest, principal
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.sql import fetch

API = "/api/v1/knowledge"
PDF_TALK = (b"<html><head><title>PDF internals</title></head><body><h1>PDF internals</h1>"
            b"<p>Every PDF file begins with a header such as %PDF-1.7 and ends with %%EOF. "
            b"Penguins live in Antarctica.</p></body></html>")
BAD_IDNA = ["http://xn--/page", "http://xn--a/page", "http://xn--zz.com/x", "https://xn--ls8h.la/"]


class _Pages(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request: Any, client_address: Any) -> None:
        pass


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        body = b"<html><body><p>Penguins live in Antarctica.</p></body></html>"
        if self.path.startswith("/pdf-internals"):
            body = PDF_TALK
        self.send_response(200)
        self.send_header("Content-Type", "text/html; charset=utf-8")
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


@pytest.mark.parametrize("url", BAD_IDNA)
async def test_api_ingestion_run_with_malformed_idna_host_is_400_not_500(
    kclient: httpx.AsyncClient, database: Database, url: str
) -> None:
    """A run whose URL host is not valid IDNA (``xn--`` with no or bad punycode) is 400
    ``invalid-url`` (as fetch_url and a redirect to such a host answer); it was a 500:
    ``precheck_url`` read ``url.host`` outside its try, and idna's error escaped."""
    user_id, headers = await make_user(database)
    r = await kclient.post(f"{API}/ingestion-runs", headers=headers, json={"target": url})
    assert r.status_code == 400, r.text[:300]
    assert r.json()["type"].endswith("/invalid-url"), r.text[:300]
    assert await fetch(database, "SELECT id FROM ingestion_runs WHERE user_id = :u", u=user_id) == []


async def test_roost_ingest_of_a_malformed_idna_url_is_a_one_line_error(
    database: Database, pg_server: Any, db_name: str, tmp_path: Path
) -> None:
    """``roost ingest http://xn--/page`` is a usage error (exit 2, no traceback, no run
    recorded), as a bad path or option is; it crashed on the same unguarded ``url.host``."""
    await make_user(database, username="olive")
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash", "ROOST_LOG_LEVEL": "warning"}
    out = run_roost("ingest", "http://xn--/page", "--user", "olive", env=env)
    assert "Traceback" not in out.stderr + out.stdout, out.stderr[-2000:]
    assert out.returncode == 2, (out.returncode, out.stdout[-1000:], out.stderr[-1000:])
    assert await fetch(database, "SELECT id FROM ingestion_runs") == []


async def test_url_fragments_do_not_make_separate_documents(
    database: Database, kcfg: KnowledgeConfig, pages: str
) -> None:
    """A fragment is never sent to the server, so ``page.html#intro`` and
    ``page.html#outro`` are one page, one document (re-ingesting replaces it); each made
    its own document named ``page.html#intro``: duplicate chunks in search, each counted
    against ``max_documents``."""
    uid, _ = await make_user(database)
    cfg = dataclasses.replace(kcfg, allow_private_fetch=True)
    for fragment in ("#intro", "#outro"):
        run = await ingest(database, principal(uid), cfg, pages + "/page.html" + fragment)
        assert run["status"] == "success", run
    docs = await fetch(database, "SELECT name, uri FROM documents WHERE user_id = :u", u=uid)
    assert len(docs) == 1, docs
    assert docs[0].name == "page.html", docs


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
