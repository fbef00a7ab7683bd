"""Files whose content or name sets off an edge case of a codec, of PostgreSQL or of the
ingester itself: a charset that names no text encoding, a PDF title holding a NUL, text
mapped to lone surrogates, a file name that is not UTF-8, tags that are not Unicode.
Each is ingested (the text made storable) or is one entry of the run's ``errors``, and
a directory run always goes on to the next files."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from roost.knowledge.chunking import Chunk
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.ingest import run_ingestion
from roost.knowledge.parsing import ParsedDocument
from tests.knowledge.helpers import make_pdf, surrogate_pdf
from tests.knowledge.support import (
    drain_jobs,
    ingest,
    principal,
    start_run,
    upload,
    upload_outcome,
)
from tests.support.identity import make_user
from tests.support.sql import fetch, scalar

API = "/api/v1/knowledge"


async def _outcome(client: httpx.AsyncClient, headers: dict[str, str],
                   answer: httpx.Response) -> tuple[dict[str, Any], dict[str, Any], list[str]]:
    """The uploaded document, its run and its chunks' texts."""
    doc, run, chunks = await upload_outcome(client, headers, answer)
    return doc, run, [c["content"] for c in chunks]


async def _directory_run(client: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
                         headers: dict[str, str], target: str) -> tuple[dict[str, str], dict[str, Any]]:
    """Ingest ``target`` over the API; the documents' statuses by name, and the run."""
    answer = await client.post(f"{API}/ingestion-runs", headers=headers, json={"target": target})
    assert answer.status_code == 202, answer.text
    await drain_jobs(database, kcfg)
    names = {r.name: r.status for r in await fetch(database, "SELECT name, status FROM documents")}
    run = (await client.get(f"{API}/ingestion-runs/{answer.json()['id']}", headers=headers)).json()
    return names, run


# --------------------------------------------------------------------------- charsets

@pytest.mark.parametrize("charset", ["rot13", "base64", "undefined"])
async def test_a_declared_charset_that_is_not_a_text_encoding_is_ignored(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, charset: str,
) -> None:
    """A Content-Type charset naming a codec that is no text encoding (or one that
    decodes nothing) is ignored as an unknown name is, not a crash of the run."""
    _, headers = await make_user(database)
    answer = await upload(kclient, headers, "c.txt", b"herons wade in water",
                           f"text/plain; charset={charset}")
    assert answer.status_code == 202, answer.text
    await drain_jobs(database, kcfg)
    doc, run, chunks = await _outcome(kclient, headers, answer)
    assert (doc["status"], run["status"], chunks) == (
        "ready", "success", ["herons wade in water"]), run["errors"]


async def test_an_html_meta_charset_of_utf16_in_ascii_bytes_is_read_as_utf8(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """A <meta charset=utf-16> readable as ASCII means UTF-8 (WHATWG), not CJK garbage."""
    _, headers = await make_user(database)
    page = (b'<html><head><meta charset="utf-16"></head>'
            b"<body><p>Herons wade in water.</p></body></html>")
    answer = await upload(kclient, headers, "p.html", page, "text/html")
    assert answer.status_code == 202, answer.text
    await drain_jobs(database, kcfg)
    doc, _run, chunks = await _outcome(kclient, headers, answer)
    assert chunks == ["Herons wade in water."], (doc["status"], chunks)


async def test_an_html_meta_charset_naming_no_text_encoding_is_ignored_in_a_directory_run(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    _, headers = await make_user(database)
    folder = ingest_root / "site"
    folder.mkdir()
    (folder / "a.html").write_bytes(b"<html><meta charset=base64><p>page text</p></html>")
    (folder / "b.txt").write_text("herons wade in shallow water")
    names, run = await _directory_run(kclient, database, kcfg, headers, "site")
    assert names == {"a.html": "ready", "b.txt": "ready"}, (names, run["errors"])
    assert run["status"] == "success", run["errors"]


# --------------------------------------------------------------------------- PDF text
# that PostgreSQL cannot store

async def test_a_nul_in_a_pdf_title_is_dropped(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """A NUL in a PDF's /Title is dropped as in its page text: the chunks' metadata
    (jsonb) cannot hold one."""
    _, headers = await make_user(database)
    answer = await upload(kclient, headers, "t.pdf",
                           make_pdf(["herons wade in water"], title="a\x00b"), "application/pdf")
    assert answer.status_code == 202, answer.text
    await drain_jobs(database, kcfg)
    doc, run, chunks = await _outcome(kclient, headers, answer)
    assert (doc["status"], run["status"], chunks) == (
        "ready", "success", ["herons wade in water"]), run["errors"]
    assert await scalar(database, "SELECT metadata->>'title' FROM document_chunks") == "ab"


async def test_a_pdf_with_a_nul_title_in_a_directory_run_is_ingested_with_the_rest(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    _, headers = await make_user(database)
    folder = ingest_root / "pdfs"
    folder.mkdir()
    (folder / "a.pdf").write_bytes(make_pdf(["page words"], title="x\x00y"))
    (folder / "b.txt").write_text("herons wade in shallow water")
    names, run = await _directory_run(kclient, database, kcfg, headers, "pdfs")
    assert names == {"a.pdf": "ready", "b.txt": "ready"}, (names, run["errors"])


async def test_pdf_text_mapped_to_lone_surrogates_is_stored_with_replacement_characters(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """A ToUnicode map giving U+D800 (no character) makes U+FFFD (which the tokenizer
    may leave out of the chunk), not a crash of the tokenizer or of the database."""
    _, headers = await make_user(database)
    answer = await upload(kclient, headers, "s.pdf", surrogate_pdf(), "application/pdf")
    assert answer.status_code == 202, answer.text
    await drain_jobs(database, kcfg)
    doc, run, chunks = await _outcome(kclient, headers, answer)
    assert (doc["status"], run["status"]) == ("ready", "success"), run["errors"]
    assert [c.lstrip("\ufffd ") for c in chunks] == ["hello herons"], chunks


# --------------------------------------------------------------------------- names and tags
# that are not valid Unicode

async def test_tags_with_a_lone_surrogate_escape_are_a_422(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    """Upload tags '["\\ud800"]' (a JSON escape of a lone surrogate) get a 422, not a 500."""
    _, headers = await make_user(database)
    answer = await upload(kclient, headers, "s.txt", b"words", tags='["\\ud800"]')
    assert answer.status_code == 422, (answer.status_code, answer.text[:300])
    assert "valid Unicode" in answer.json()["detail"]
    assert await scalar(database, "SELECT count(*) FROM documents") == 0


def _write_raw_name(folder: Path, name: bytes, data: bytes) -> None:
    Path(os.fsdecode(os.path.join(os.fsencode(folder), name))).write_bytes(data)


async def test_file_names_that_are_not_utf8_are_stored_repaired_and_kept_apart(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """A file name holding bytes that are not UTF-8 is stored with U+FFFD for them; two
    such names that differ only there stay two documents (keyed on the raw bytes), and
    ingesting the directory again finds them unchanged."""
    _, headers = await make_user(database)
    folder = ingest_root / "names"
    folder.mkdir()
    (folder / "a.txt").write_text("first words")
    _write_raw_name(folder, b"bad\xff.txt", b"bad name words")
    _write_raw_name(folder, b"bad\xfe.txt", b"other bad name words")
    (folder / "z.txt").write_text("herons wade in shallow water")
    _, run = await _directory_run(kclient, database, kcfg, headers, "names")
    assert run["status"] == "success", run["errors"]
    rows = await fetch(database, "SELECT name, path, status FROM documents ORDER BY name")
    assert [(r.name, r.status) for r in rows] == [
        ("a.txt", "ready"), ("bad\ufffd.txt", "ready"), ("bad\ufffd.txt", "ready"),
        ("z.txt", "ready")]
    assert all(r.path.endswith("/names/" + r.name) for r in rows), rows
    _, again = await _directory_run(kclient, database, kcfg, headers, "names")
    assert (again["status"], again["totals_files"], again["totals_chunks"]) == ("success", 4, 0)
    assert await scalar(database, "SELECT count(*) FROM documents") == 4


# --------------------------------------------------------------------------- an unexpected
# error in one file

def _exploding_on(monkeypatch: pytest.MonkeyPatch, title: str, exc: Exception | None = None,
                  meta: dict[str, Any] | None = None) -> None:
    """Make writing the chunks of the file titled ``title`` raise ``exc``, or give them
    ``meta`` as metadata (a value the database refuses)."""
    import roost.knowledge.ingest as ingest_mod

    real = ingest_mod._chunk_metadata

    def chunk_metadata(chunk: Chunk, parsed: ParsedDocument) -> dict[str, Any]:
        if parsed.title == title:
            if exc is not None:
                raise exc
            return meta or {}
        return real(chunk, parsed)

    monkeypatch.setattr(ingest_mod, "_chunk_metadata", chunk_metadata)


def _three_files(root: Path) -> None:
    for name in ("a.txt", "bomb.txt", "z.txt"):
        (root / name).write_text(f"herons wade in the water of {name}")


async def test_an_unexpected_error_in_one_file_is_its_error_entry_and_the_run_goes_on(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A bug one file sets off is that file's entry in ``errors`` (its exception class
    and message); the files after it are ingested, on the first attempt."""
    user_id, _ = await make_user(database)
    _three_files(ingest_root)
    _exploding_on(monkeypatch, "bomb.txt", RuntimeError("a bug set off by one file"))
    run_id = await start_run(database, principal(user_id), kcfg, ".")
    summary = await run_ingestion(database, run_id, kcfg, final_attempt=False)
    assert (summary["status"], summary["totals_files"]) == ("partial", 2), summary
    [run] = await fetch(database, "SELECT errors FROM ingestion_runs")
    assert [(Path(e["path"]).name, e["type"], e["error"]) for e in run.errors] == [
        ("bomb.txt", "error", "RuntimeError: a bug set off by one file")]
    assert [r.name for r in await fetch(database, "SELECT name FROM documents ORDER BY name")] \
        == ["a.txt", "z.txt"]


async def test_a_value_the_database_refuses_in_one_file_is_its_error_entry_without_sql(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A data exception (SQLSTATE class 22) rolls back that file's transaction only: the
    entry names the class, never the statement or its parameters."""
    user_id, _ = await make_user(database)
    _three_files(ingest_root)
    _exploding_on(monkeypatch, "bomb.txt", meta={"title": "secret\x00value"})
    run = await ingest(database, principal(user_id), kcfg, ".")
    assert (run["status"], run["totals_files"]) == ("partial", 2), run
    [error] = run["errors"]
    assert Path(error["path"]).name == "bomb.txt", error
    assert "refused this source (SQLSTATE class 22)" in error["error"], error
    assert "secret" not in str(error) and "INSERT" not in str(error), error
    assert await scalar(database, "SELECT count(*) FROM documents") == 2


async def test_a_lost_database_connection_in_one_file_is_the_run_s_failure_not_the_file_s(
    database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Going on is unsafe when the database (or the network to it) fails: raised so the
    queue retries the run, which no error entry of that file then skips."""
    user_id, _ = await make_user(database)
    _three_files(ingest_root)
    _exploding_on(monkeypatch, "bomb.txt", ConnectionResetError("connection lost"))
    run_id = await start_run(database, principal(user_id), kcfg, ".")
    with pytest.raises(ConnectionResetError):
        await run_ingestion(database, run_id, kcfg, final_attempt=False)
    assert await scalar(database, "SELECT errors FROM ingestion_runs") == []
    monkeypatch.undo()
    summary = await run_ingestion(database, run_id, kcfg, final_attempt=True)
    assert (summary["status"], summary["totals_files"]) == ("success", 3), summary
