"""A document renamed by PATCH is cleaned as an uploaded file's name is (the length limit
was on the name as sent: a path, a long or a decomposed name was a 422), and the same
bytes uploaded again are counted unchanged, not parsed and embedded again."""

from __future__ import annotations

import asyncio

import httpx

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.service import sha256_hex, upload_identity
from tests.knowledge.support import drain_jobs, upload
from tests.support.identity import make_user
from tests.support.races import answer_behind
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


async def test_a_rename_onto_a_name_taken_meanwhile_is_the_409_naming_name(
    kclient: httpx.AsyncClient, database: Database
) -> None:
    """Two uploads renamed to one name at once: the one behind gets the 409 a rename onto
    a taken name gets, naming the field `name` (it was the generic conflict naming
    user_id and path_hash, the table's columns)."""
    _, h = await make_user(database)
    first = (await upload(kclient, h, "a.txt", b"first words")).json()["document"]
    second = (await upload(kclient, h, "b.txt", b"second words")).json()["document"]
    answer = await asyncio.wait_for(answer_behind(
        database, "UPDATE documents SET name = 'c.txt', path_hash = :hash WHERE id = :id",
        {"hash": sha256_hex(upload_identity("c.txt")), "id": first["id"]}, "documents",
        kclient.patch(f"{API}/documents/{second['id']}", headers=h, json={"name": "c.txt"})),
        60)
    assert answer.status_code == 409, answer.text
    assert answer.json()["field"] == "name"
    kept = await kclient.get(f"{API}/documents/{second['id']}", headers=h)
    assert kept.json()["name"] == "b.txt"
