"""A document renamed by PATCH is cleaned as an uploaded file's name is (the length limit
was on the name as sent: a path, a long or a decomposed name was a 422), and the same
bytes uploaded again are counted unchanged, not parsed and embedded again."""

from __future__ import annotations

import httpx

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.knowledge.support import drain_jobs, upload
from tests.support.identity import make_user
from tests.support.sql import fetch

API = "/api/v1/knowledge"


async def test_rename_with_long_directory_prefix_keeps_last_segment(
    kclient: httpx.AsyncClient, database: Database
) -> None:
    """docs/knowledge.md: a PATCH name is cleaned as an upload's is, "only what follows
    the last / or \\" is kept. A user expects `dir/dir/.../report.md` (over 255 characters
    with its path) to rename the document to `report.md` (was a 422 before cleaning)."""
    _, h = await make_user(database)
    doc = (await upload(kclient, h, "a.txt", b"hello herons")).json()["document"]
    name = "dir/" * 100 + "report.md"
    p = await kclient.patch(f"{API}/documents/{doc['id']}", headers=h, json={"name": name})
    assert p.status_code == 200, p.text
    assert p.json()["name"] == "report.md"


async def test_rename_long_name_is_shortened_like_upload(
    kclient: httpx.AsyncClient, database: Database
) -> None:
    """An uploaded file's name over 255 characters is shortened before its extension, and
    a PATCH name "is cleaned as an uploaded file's is". A user renaming to a 10,000-char
    `x…x.md` gets a 255-char name ending `.md`, as the upload gives (was a 422)."""
    _, h = await make_user(database)
    doc = (await upload(kclient, h, "a.txt", b"hello herons")).json()["document"]
    p = await kclient.patch(f"{API}/documents/{doc['id']}", headers=h,
                            json={"name": "x" * 10_000 + ".md"})
    assert p.status_code == 200, p.text
    assert len(p.json()["name"]) == 255 and p.json()["name"].endswith(".md")


async def test_rename_decomposed_name_counts_composed_chars(
    kclient: httpx.AsyncClient, database: Database
) -> None:
    """Names are composed (NFC) so a Mac's decomposed name is the same document. A
    204-character name typed decomposed (`e` + U+0301, 404 code points) should rename to
    the 204-character composed name (code points were counted before composing: 422)."""
    _, h = await make_user(database)
    doc = (await upload(kclient, h, "a.txt", b"hello herons")).json()["document"]
    p = await kclient.patch(f"{API}/documents/{doc['id']}", headers=h,
                            json={"name": "e\u0301" * 200 + ".txt"})
    assert p.status_code == 200, p.text
    assert p.json()["name"] == "\u00e9" * 200 + ".txt"


async def test_reupload_identical_content_is_deduped(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """docs/knowledge.md (Ingestion): per source, "unchanged (same bytes, same model,
    ready)? count it and stop". Re-uploading the very same bytes under the same name
    is counted unchanged (audit `knowledge.document.reingested`, chunks kept); the upload
    set the document `pending`, so the file was parsed and embedded again, its chunks
    replaced."""
    _, h = await make_user(database)
    data = b"the same herons text, word for word"
    doc = (await upload(kclient, h, "same.txt", data)).json()["document"]
    await drain_jobs(database, kcfg)
    before = [r.id for r in await fetch(database, "SELECT id FROM document_chunks ORDER BY id")]
    again = (await upload(kclient, h, "same.txt", data)).json()
    assert again["document"]["id"] == doc["id"]
    await drain_jobs(database, kcfg)
    after = [r.id for r in await fetch(database, "SELECT id FROM document_chunks ORDER BY id")]
    got = (await kclient.get(f"{API}/documents/{doc['id']}", headers=h)).json()
    assert got["status"] == "ready"
    actions = [r[0] for r in await fetch(
        database, "SELECT action FROM audit_logs WHERE action LIKE 'knowledge.document.%ingested' "
                  "ORDER BY created_at")]
    assert actions == ["knowledge.document.ingested", "knowledge.document.reingested"], actions
    assert before == after
