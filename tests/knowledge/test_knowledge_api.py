"""The knowledge HTTP API: upload, list, get, update, delete, runs, and bad input."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.agents.models import Persona
from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.knowledge.config import KnowledgeConfig
from roost.pagination import encode_cursor
from tests.knowledge.helpers import make_pdf, pdf_file
from tests.knowledge.support import drain_jobs, make_group, principal, upload
from tests.support.identity import make_user
from tests.support.sql import fetch, scalar

API = "/api/v1/knowledge"


async def test_upload_is_ingested_in_the_background_then_listed_fetched_and_deleted(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    _, headers = await make_user(database)
    pdf = make_pdf(["Chapter one talks about rivers.", "Chapter two is about mountains."])
    r = await upload(kclient, headers, "atlas.pdf", pdf, "application/pdf",
                      collection="geo", tags='["maps", "nature"]')
    assert r.status_code == 202, r.text
    body = r.json()
    doc, run = body["document"], body["ingestion_run"]
    assert doc["status"] == "pending" and doc["source"] == "upload" and doc["tags"] == ["maps", "nature"]
    assert run["status"] == "pending" and run["task_id"]

    assert await drain_jobs(database, kcfg) == 1
    got = (await kclient.get(f"{API}/documents/{doc['id']}", headers=headers)).json()
    assert got["status"] == "ready" and got["chunk_count"] == 2 and got["mime"] == "application/pdf"
    assert got["last_ingested_at"] is not None
    run_now = (await kclient.get(f"{API}/ingestion-runs/{run['id']}", headers=headers)).json()
    assert (run_now["status"], run_now["totals_files"], run_now["totals_chunks"]) == ("success", 1, 2)
    assert await scalar(database, "SELECT count(*) FROM document_uploads") == 0

    chunks = (await kclient.get(f"{API}/documents/{doc['id']}/chunks", headers=headers)).json()
    assert [c["metadata"]["page"] for c in chunks] == [1, 2]
    listed = (await kclient.get(f"{API}/documents?collection=geo", headers=headers)).json()
    assert [d["id"] for d in listed["items"]] == [doc["id"]]

    # Same file name again: the same document, chunks replaced, never duplicated.
    r2 = await upload(kclient, headers, "atlas.pdf", make_pdf(["Only one page now."]),
                       "application/pdf")
    assert r2.json()["document"]["id"] == doc["id"]
    await drain_jobs(database, kcfg)
    assert await scalar(database, "SELECT count(*) FROM document_chunks") == 1
    assert await scalar(database, "SELECT count(*) FROM documents") == 1

    assert (await kclient.delete(f"{API}/documents/{doc['id']}", headers=headers)).status_code == 204
    assert (await kclient.get(f"{API}/documents/{doc['id']}", headers=headers)).status_code == 404
    assert await scalar(database, "SELECT count(*) FROM document_chunks") == 0
    actions = {r[0] for r in await fetch(database, "SELECT action FROM audit_logs")}
    assert {"knowledge.document.uploaded", "knowledge.document.ingested",
            "knowledge.document.deleted", "knowledge.ingestion_run.finished"} <= actions


async def test_bad_uploads(kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig) -> None:
    _, headers = await make_user(database)
    too_big = await upload(kclient, headers, "big.txt", b"a " * (40 * 1024))
    assert too_big.status_code == 413
    assert too_big.headers["content-type"].startswith("application/problem+json")
    assert (await upload(kclient, headers, "empty.txt", b"")).status_code == 422
    many = [f"{i:03d}" + "t" * 87 for i in range(60)]
    bad_tags = await upload(kclient, headers, "t.txt", b"x", tags=json.dumps(many))
    assert bad_tags.status_code == 422 and "5120" in bad_tags.json()["detail"]

    # An unsupported or corrupt file is accepted, then recorded as the document's error.
    r = await upload(kclient, headers, "photo.png", b"\x89PNG\r\n\x1a\n" + bytes(300), "image/png")
    assert r.status_code == 202
    bad_pdf = await upload(kclient, headers, "bad.pdf", b"%PDF-1.7 not really", "application/pdf")
    await drain_jobs(database, kcfg)
    for resp, kind in ((r, "unsupported-document"), (bad_pdf, "corrupt-document")):
        doc = (await kclient.get(f"{API}/documents/{resp.json()['document']['id']}",
                                 headers=headers)).json()
        assert doc["status"] == "error" and doc["error_message"]
        run = (await kclient.get(f"{API}/ingestion-runs/{resp.json()['ingestion_run']['id']}",
                                 headers=headers)).json()
        assert run["status"] == "failed" and run["errors"][0]["type"] == kind


TYPOGRAPHIC = "It\u2019s the team\u2019s plan \u2014 \u201ctwelve dollars\u201d per seat, billed monthly."


@pytest.mark.parametrize(("name", "content_type", "data", "needle"), [
    # A UTF-8 page served with the common default header charset=iso-8859-1.
    ("pricing.html", "text/html; charset=iso-8859-1",
     f"<html><body><p>{TYPOGRAPHIC}</p></body></html>".encode(), "\u201ctwelve dollars\u201d"),
    ("prices.txt", "text/plain; charset=iso-8859-1", TYPOGRAPHIC.encode(), "It\u2019s the team"),
    # Plain ASCII declared UTF-16 (no BOM, no NULs: it cannot be UTF-16).
    ("table.csv", "text/csv; charset=utf-16", b"city,seats\nParis,12\n", "Paris"),
])
async def test_text_whose_declared_charset_does_not_fit_its_bytes_is_still_read(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
    name: str, content_type: str, data: bytes, needle: str,
) -> None:
    """A text file whose declared charset does not fit its bytes (a server's default
    latin-1 on UTF-8, UTF-16 on ASCII) is ingested as the text it is, not refused as
    binary nor read as garbage."""
    _, h = await make_user(database)
    r = await upload(kclient, h, name, data, content_type)
    assert r.status_code == 202, r.text
    await drain_jobs(database, kcfg)
    doc = (await kclient.get(f"{API}/documents/{r.json()['document']['id']}", headers=h)).json()
    assert doc["status"] == "ready", doc["error_message"]
    chunks = (await kclient.get(f"{API}/documents/{doc['id']}/chunks", headers=h)).json()
    assert needle in " ".join(c["content"] for c in chunks)


@pytest.mark.parametrize(("name", "content_type", "data", "reason"), [
    # A scan: one page, no text layer.
    ("scan.pdf", "application/pdf",
     pdf_file([b"<< /Type /Catalog /Pages 2 0 R >>",
               b"<< /Type /Pages /Kids [3 0 R] /Count 1 >>",
               b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] >>"]), "OCR"),
    ("app.html", "text/html",
     b"<html><head><script>var x = 1;</script><style>p {}</style></head><body></body></html>",
     "no text was found"),
    ("draft.md", "text/markdown", b"---\ntitle: Draft\n---\n", "no text was found"),
])
async def test_a_document_without_text_ends_in_error_saying_so(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
    name: str, content_type: str, data: bytes, reason: str,
) -> None:
    """A document with no text to search (a scanned PDF, a page of scripts, front matter
    only) is not a silent ``ready`` with 0 chunks: it ends ``error`` with the reason, as
    its run's ``no-text`` entry, and the run ``failed``; a version with text that was
    ingested before keeps its chunks."""
    _, h = await make_user(database)
    earlier = name.endswith(".md")  # this one had a version with text before
    if earlier:
        await upload(kclient, h, name, b"hello herons", content_type)
        await drain_jobs(database, kcfg)
    r = await upload(kclient, h, name, data, content_type)
    assert r.status_code == 202, r.text
    await drain_jobs(database, kcfg)
    doc = (await kclient.get(f"{API}/documents/{r.json()['document']['id']}", headers=h)).json()
    run = (await kclient.get(f"{API}/ingestion-runs/{r.json()['ingestion_run']['id']}",
                             headers=h)).json()
    assert doc["status"] == "error" and reason in doc["error_message"], doc
    assert run["status"] == "failed" and run["totals_files"] == 0
    assert [e["type"] for e in run["errors"]] == ["no-text"]
    assert run["errors"][0]["error"] == doc["error_message"]
    if earlier:  # its chunks are still searchable
        chunks = (await kclient.get(f"{API}/documents/{doc['id']}/chunks", headers=h)).json()
        assert [c["content"] for c in chunks] == ["hello herons"]


async def test_documents_and_runs_page_newest_first(
    kclient: httpx.AsyncClient, database: Database
) -> None:
    _, headers = await make_user(database)
    uploads = [(await upload(kclient, headers, f"{i}.txt", b"some text")).json() for i in range(3)]
    for path, key in (("documents", "document"), ("ingestion-runs", "ingestion_run")):
        first = (await kclient.get(f"{API}/{path}", params={"limit": 2}, headers=headers)).json()
        rest = (await kclient.get(f"{API}/{path}", headers=headers,
                                  params={"limit": 2, "cursor": first["next_cursor"]})).json()
        assert [item["id"] for item in first["items"] + rest["items"]] == [
            u[key]["id"] for u in reversed(uploads)
        ]
        assert rest["next_cursor"] is None


@pytest.mark.parametrize(("path", "cursor"), [
    ("documents", "!!"),
    ("documents", encode_cursor({"t": "2026-01-01T00:00:00Z", "id": "not-a-uuid"})),
    # a naive time (a fixed id: parallel workers must collect the same test ids)
    ("documents", encode_cursor({"t": "2026-01-01T00:00:00",
                                 "id": "0190a1b2-0000-7000-8000-000000000001"})),
    ("ingestion-runs", "!!"),
    ("ingestion-runs", encode_cursor({"id": "not-a-uuid"})),
])
async def test_a_malformed_cursor_is_a_bad_request(
    kclient: httpx.AsyncClient, database: Database, path: str, cursor: str
) -> None:
    _, headers = await make_user(database)
    r = await kclient.get(f"{API}/{path}", params={"cursor": cursor}, headers=headers)
    assert r.status_code == 400 and "cursor" in r.json()["detail"]


async def test_other_users_documents_and_runs_are_404(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    _, alice = await make_user(database)
    _, bob = await make_user(database)
    doc = (await upload(kclient, alice, "a.txt", b"alice's text")).json()
    doc_id, run_id = doc["document"]["id"], doc["ingestion_run"]["id"]
    assert (await kclient.get(f"{API}/documents/{doc_id}", headers=bob)).status_code == 404
    assert (await kclient.delete(f"{API}/documents/{doc_id}", headers=bob)).status_code == 404
    assert (await kclient.get(f"{API}/documents/{doc_id}/chunks", headers=bob)).status_code == 404
    assert (await kclient.patch(f"{API}/documents/{doc_id}", headers=bob,
                                json={"name": "x"})).status_code == 404
    assert (await kclient.get(f"{API}/ingestion-runs/{run_id}", headers=bob)).status_code == 404
    assert (await kclient.get(f"{API}/documents", headers=bob)).json()["items"] == []
    assert (await kclient.get(f"{API}/ingestion-runs", headers=bob)).json()["items"] == []
    assert (await kclient.get(f"{API}/documents/{doc_id}", headers=alice)).status_code == 200


async def test_an_administrator_reads_changes_and_deletes_another_users_document(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """Documents are visible to administrators, who may change or delete any (signed in
    as a user of their own, not only with the operator token); search stays scoped."""
    _, alice = await make_user(database)
    _, admin = await make_user(database, admin=True)
    r = await upload(kclient, alice, "adm.txt", b"aardwolf notes for the administrator")
    doc_id = r.json()["document"]["id"]
    await drain_jobs(database, kcfg)
    got = await kclient.get(f"{API}/documents/{doc_id}", headers=admin)
    assert got.status_code == 200, got.text
    chunks = await kclient.get(f"{API}/documents/{doc_id}/chunks", headers=admin)
    assert chunks.status_code == 200, chunks.text
    listed = await kclient.get(f"{API}/documents", headers=admin)
    assert doc_id in [d["id"] for d in listed.json()["items"]], listed.text
    found = await kclient.post(f"{API}/search", headers=admin,
                               json={"query": "aardwolf", "k": 5, "mode": "text"})
    assert found.status_code == 200 and found.json()["results"] == [], found.text
    p = await kclient.patch(f"{API}/documents/{doc_id}", headers=admin, json={"collection": "x"})
    assert p.status_code == 200 and p.json()["collection"] == "x", p.text
    assert (await kclient.delete(f"{API}/documents/{doc_id}", headers=admin)).status_code == 204
    assert (await kclient.get(f"{API}/documents/{doc_id}", headers=alice)).status_code == 404


async def test_file_ingestion_is_confined_to_the_allowed_roots(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
    tmp_path: Path,
) -> None:
    _, headers = await make_user(database)
    (tmp_path / "secret.txt").write_text("top secret")
    (ingest_root / "escape").symlink_to(tmp_path)
    (ingest_root / "ok.txt").write_text("fine to ingest")
    for target in ("/etc/passwd", "../secret.txt", str(tmp_path / "secret.txt"),
                   "escape/secret.txt", str(ingest_root / "escape" / "secret.txt")):
        r = await kclient.post(f"{API}/ingestion-runs", headers=headers, json={"target": target})
        assert r.status_code == 403, (target, r.text)
    missing = await kclient.post(f"{API}/ingestion-runs", headers=headers, json={"target": "nope.txt"})
    assert missing.status_code == 404
    ok = await kclient.post(f"{API}/ingestion-runs", headers=headers, json={"target": "ok.txt"})
    assert ok.status_code == 202 and ok.json()["target"] == str((ingest_root / "ok.txt").resolve())
    await drain_jobs(database, kcfg)
    assert await scalar(database, "SELECT count(*) FROM documents WHERE path LIKE '%ok.txt'") == 1
    assert await scalar(database, "SELECT count(*) FROM document_chunks WHERE content LIKE '%secret%'") == 0


async def test_web_ingestion_refuses_private_addresses(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    _, headers = await make_user(database)
    for url in ("http://127.0.0.1:9/x", "http://localhost/", "http://169.254.169.254/latest",
                "http://10.0.0.8/", "http://[::1]/"):
        r = await kclient.post(f"{API}/ingestion-runs", headers=headers, json={"target": url})
        assert r.status_code == 403, (url, r.text)
    bad = await kclient.post(f"{API}/ingestion-runs", headers=headers,
                             json={"target": "http://user:pw@example.com/"})
    assert bad.status_code == 400


async def test_sharing_needs_group_membership_and_the_operator_owns_nothing(
    kclient: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    _, alice = await make_user(database)
    bob_id, _ = await make_user(database)
    theirs = await make_group(database, "bobs-team", bob_id)
    r = await upload(kclient, alice, "a.txt", b"text", group_id=str(theirs))
    assert r.status_code == 403
    assert (await upload(kclient, admin_headers, "a.txt", b"text")).status_code == 403


async def test_an_administrator_sharing_with_a_group_that_does_not_exist_gets_a_404(
    kclient: httpx.AsyncClient, database: Database
) -> None:
    """On upload and on PATCH: the field named, not the foreign key's 409."""
    _, root = await make_user(database, admin=True)
    missing = "0190b5e0-0000-7000-8000-000000000000"
    refused = await upload(kclient, root, "x.txt", b"x", group_id=missing)
    assert refused.status_code == 404 and "group_id" in refused.text, refused.text
    doc = (await upload(kclient, root, "mine.txt", b"x")).json()["document"]["id"]
    patched = await kclient.patch(f"{API}/documents/{doc}", headers=root,
                                  json={"group_id": missing})
    assert patched.status_code == 404 and "group_id" in patched.text, patched.text


async def test_an_administrator_naming_a_persona_that_does_not_exist_is_refused(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    """persona_id must name an existing persona (docs: else 422), for an administrator
    too (any persona that exists, member or not), on upload and for a run."""
    _, root = await make_user(database, admin=True)
    owner_id, _ = await make_user(database)
    missing = "0190a1b2-0000-7000-8000-000000000001"
    uploaded = await upload(kclient, root, "a.txt", b"words", persona_id=missing)
    assert uploaded.status_code == 422 and "persona_id" in uploaded.text, uploaded.text
    run = await kclient.post(f"{API}/ingestion-runs", headers=root,
                             json={"target": "https://example.com/", "persona_id": missing})
    assert run.status_code == 422 and "persona_id" in run.text, run.text
    assert await fetch(database, "SELECT id FROM documents") == []
    async with database.transaction() as s:
        persona = Persona(owner_id=owner_id, name="someone else's")
        s.add(persona)
        await s.flush()
        persona_id = persona.id
    ok = await upload(kclient, root, "a.txt", b"words", persona_id=str(persona_id))
    assert ok.status_code == 202 and ok.json()["document"]["persona_id"] == str(persona_id)


@pytest.mark.parametrize("edit", [{"group_id": None}, {"is_private": True}])
async def test_unsharing_an_upload_while_its_ingestion_waits_sticks(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, edit: dict[str, object],
) -> None:
    """The owner unshares a document uploaded for a group before its job ran: the job
    keeps the edit (document and chunks), the group's member never sees it."""
    alice_id, alice = await make_user(database)
    bob_id, bob = await make_user(database)
    group = await make_group(database, "team", alice_id, bob_id)
    up = await upload(kclient, alice, "later.txt", b"quarterly numbers " * 20,
                       group_id=str(group))
    doc = up.json()["document"]["id"]
    assert (await kclient.patch(f"{API}/documents/{doc}", headers=alice,
                                json=edit)).status_code == 200
    await drain_jobs(database, kcfg)
    assert (await kclient.get(f"{API}/documents/{doc}", headers=alice)).json()["status"] == "ready"
    assert (await kclient.get(f"{API}/documents/{doc}", headers=bob)).status_code == 404
    assert await scalar(database, "SELECT count(*) FROM document_chunks WHERE document_id = :d "
                                  "AND group_id IS NOT NULL", d=doc) == 0


HERONS = b"Herons wade in shallow water and hunt fish with their sharp beaks. " * 5


async def test_the_latest_upload_of_a_name_decides_its_sharing_even_before_the_first_job(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """x.txt shared with a group, then uploaded again without one before the first job
    ran: the first run finds its upload superseded and writes nothing, so the second
    upload's bytes are never shared with the group."""
    alice_id, alice = await make_user(database)
    bob_id, bob = await make_user(database)
    group = await make_group(database, "team", alice_id, bob_id)
    first = await upload(kclient, alice, "x.txt", HERONS, group_id=str(group))
    assert first.status_code == 202, first.text
    second = await upload(kclient, alice, "x.txt", b"secret salary numbers " * 10)
    assert second.status_code == 202, second.text
    doc_id = second.json()["document"]["id"]
    assert second.json()["document"]["group_id"] is None
    await drain_jobs(database, kcfg)
    doc = (await kclient.get(f"{API}/documents/{doc_id}", headers=alice)).json()
    assert (doc["status"], doc["group_id"]) == ("ready", None), doc
    assert doc["ingestion_run_id"] == second.json()["ingestion_run"]["id"]
    assert (await kclient.get(f"{API}/documents/{doc_id}", headers=bob)).status_code == 404
    found = (await kclient.post(f"{API}/search", headers=bob,
                                json={"query": "salary", "mode": "text"})).json()
    assert found["results"] == [], found
    assert await scalar(database, "SELECT count(*) FROM document_chunks "
                                  "WHERE group_id IS NOT NULL") == 0


async def test_reuploading_without_the_group_unshares_the_old_chunks_too(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """Re-uploading a group-shared file without the group unshares the document, and its
    chunks with it (as PATCH does): row-level security must not leave the old chunks
    readable by the group, neither while the new upload waits nor after its ingestion
    failed (the document then keeps its old chunks)."""
    alice_id, alice = await make_user(database)
    bob_id, _ = await make_user(database)
    team = await make_group(database, "team", alice_id, bob_id)
    first = await upload(kclient, alice, "plan.txt", b"confidential merger herons " * 20,
                          group_id=str(team))
    assert first.status_code == 202, first.text
    await drain_jobs(database, kcfg)
    again = await upload(kclient, alice, "plan.txt", b"%PDF-1.4 broken", "application/pdf")
    assert again.status_code == 202 and again.json()["document"]["group_id"] is None

    async def bob_sees() -> tuple[int, int]:
        async with database.transaction() as s:
            await apply_principal(s, principal(bob_id, team), app_role="roost_app")
            chunks = (await s.execute(text("SELECT count(*) FROM document_chunks"))).scalar()
            docs = (await s.execute(text("SELECT count(*) FROM documents"))).scalar()
        return int(chunks or 0), int(docs or 0)

    assert await bob_sees() == (0, 0), "unshared document, yet its chunks reach the group"
    await drain_jobs(database, kcfg)
    doc = (await kclient.get(f"{API}/documents/{first.json()['document']['id']}",
                             headers=alice)).json()
    assert (doc["status"], doc["group_id"], doc["chunk_count"]) == ("error", None, 2), doc
    assert await bob_sees() == (0, 0), "after the failed re-upload the chunks stay shared"


async def test_a_failed_reupload_into_another_collection_moves_the_old_chunks_with_it(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """The document's collection and its chunks' agree: after a re-upload into collection
    "new" whose ingestion fails (the old chunks are kept), a search in "new" finds the
    document's chunks and a search in "old" (where it no longer is) finds nothing."""
    _, alice = await make_user(database)
    first = await upload(kclient, alice, "n.txt", b"notes about herons " * 20,
                          collection="old")
    await drain_jobs(database, kcfg)
    doc_id = first.json()["document"]["id"]
    again = await upload(kclient, alice, "n.txt", b"\x89PNG\r\n\x1a\n" + bytes(100),
                          "image/png", collection="new")
    assert again.status_code == 202, again.text
    await drain_jobs(database, kcfg)
    doc = (await kclient.get(f"{API}/documents/{doc_id}", headers=alice)).json()
    assert (doc["status"], doc["collection"]) == ("error", "new"), doc

    async def hits(collection: str) -> set[str]:
        r = await kclient.post(f"{API}/search", headers=alice, json={
            "query": "herons", "mode": "text", "collection": collection})
        assert r.status_code == 200, r.text
        return {h["document"]["collection"] or "" for h in r.json()["results"]}

    assert (await hits("old"), await hits("new")) == (set(), {"new"})
    rows = await fetch(database, "SELECT DISTINCT collection FROM document_chunks")
    assert [r.collection for r in rows] == ["new"]


async def test_a_document_deleted_while_its_upload_is_ingested_stays_deleted(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import roost.knowledge.ingest as ingest_mod

    _, headers = await make_user(database)
    up = (await upload(kclient, headers, "d.txt", HERONS)).json()
    doc_id = up["document"]["id"]
    real = ingest_mod.cpu_bound

    async def deleting(fn: Any, *args: Any) -> Any:  # the owner deletes it mid-parse
        r = await kclient.delete(f"{API}/documents/{doc_id}", headers=headers)
        assert r.status_code == 204, r.text
        return await real(fn, *args)

    monkeypatch.setattr(ingest_mod, "cpu_bound", deleting)
    await drain_jobs(database, kcfg)
    assert await fetch(database, "SELECT name, status FROM documents") == []
    assert await scalar(database, "SELECT count(*) FROM document_chunks") == 0
    run = (await kclient.get(f"{API}/ingestion-runs/{up['ingestion_run']['id']}",
                             headers=headers)).json()
    assert (run["status"], run["totals_files"]) == ("success", 0), run


async def test_a_renamed_upload_is_not_overwritten_by_an_upload_of_its_old_name(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    _, headers = await make_user(database)
    first = (await upload(kclient, headers, "draft.txt", b"the original final text " * 5)).json()
    await drain_jobs(database, kcfg)
    doc_id = first["document"]["id"]
    r = await kclient.patch(f"{API}/documents/{doc_id}", headers=headers,
                            json={"name": "final.txt"})
    assert r.status_code == 200, r.text
    new = (await upload(kclient, headers, "draft.txt", b"a brand new draft " * 5)).json()
    assert new["document"]["id"] != doc_id
    await drain_jobs(database, kcfg)
    kept = (await kclient.get(f"{API}/documents/{doc_id}", headers=headers)).json()
    assert (kept["name"], kept["status"]) == ("final.txt", "ready"), kept
    chunks = (await kclient.get(f"{API}/documents/{doc_id}/chunks", headers=headers)).json()
    assert "original" in chunks[0]["content"], chunks

    # Uploading final.txt again replaces the renamed document, as for any upload.
    again = (await upload(kclient, headers, "final.txt", b"the final text, revised " * 5)).json()
    assert again["document"]["id"] == doc_id
    # Renaming onto the name of another upload is refused; both stay as they were.
    clash = await kclient.patch(f"{API}/documents/{doc_id}", headers=headers,
                                json={"name": "draft.txt"})
    assert clash.status_code == 409, clash.text
    assert "draft.txt" in clash.json()["detail"]
    names = await fetch(database, "SELECT name FROM documents ORDER BY name")
    assert [n.name for n in names] == ["draft.txt", "final.txt"]


@pytest.mark.parametrize(("name", "stored"), [
    ("dir/notes.txt", "notes.txt"), ("bad\nname", "badname"), ("\u202etxt.exe", "txt.exe"),
    ("\u202e ", None), (" ", None),
])
async def test_renaming_follows_the_upload_name_rules(
    kclient: httpx.AsyncClient, database: Database, name: str, stored: str | None,
) -> None:
    """A PATCHed name is cleaned as an uploaded one (last path segment, printable, trimmed),
    a 422 when nothing is left: so an upload of the new name replaces the renamed
    document, as the docs say, and no name carries newlines, RTL overrides or nothing."""
    _, headers = await make_user(database)
    doc = (await upload(kclient, headers, "p.txt", b"words")).json()["document"]
    r = await kclient.patch(f"{API}/documents/{doc['id']}", headers=headers, json={"name": name})
    if stored is None:
        assert r.status_code == 422 and "name" in r.json()["detail"], r.text
        assert (await kclient.get(f"{API}/documents/{doc['id']}",
                                  headers=headers)).json()["name"] == "p.txt"
        return
    assert (r.status_code, r.json()["name"]) == (200, stored), r.text
    again = (await upload(kclient, headers, stored, b"new words")).json()
    assert again["document"]["id"] == doc["id"], "uploading the new name made a new document"


async def test_patching_collection_to_empty_means_no_collection(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """As on upload, an empty collection means none (not a collection named "")."""
    _, headers = await make_user(database)
    doc = (await upload(kclient, headers, "a.txt", b"words", collection="")).json()["document"]
    assert doc["collection"] is None
    await drain_jobs(database, kcfg)
    r = await kclient.patch(f"{API}/documents/{doc['id']}", headers=headers,
                            json={"collection": "notes"})
    assert (r.status_code, r.json()["collection"]) == (200, "notes"), r.text
    r = await kclient.patch(f"{API}/documents/{doc['id']}", headers=headers,
                            json={"collection": ""})
    assert (r.status_code, r.json()["collection"]) == (200, None), r.text
    assert [c.collection for c in await fetch(database,
                                              "SELECT collection FROM document_chunks")] == [None]


async def test_an_upload_with_a_long_content_type_is_accepted(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """A part's Content-Type with long (valid) parameters is kept as far as the columns
    hold it (the document's ``mime``: 128 characters, the upload's: 255), not a bare 400
    naming no field."""
    _, headers = await make_user(database)
    content_type = "text/plain; charset=utf-8; comment=" + "a" * 300
    r = await upload(kclient, headers, "notes.txt", b"Herons wade in shallow rivers.",
                     content_type=content_type)
    assert r.status_code == 202, r.text
    await drain_jobs(database, kcfg)
    got = await kclient.get(f"{API}/documents/{r.json()['document']['id']}", headers=headers)
    assert got.json()["status"] == "ready", got.text


async def test_a_long_markdown_file_name_keeps_its_extension_and_its_type(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """``<long title>.md`` sent as application/octet-stream (as browsers do) is named
    and parsed as the Markdown it is, as ``notes.md`` is: a name over 255 characters is
    shortened before its extension, and a re-upload of it replaces the same document."""
    _, headers = await make_user(database)
    body = b"# Install\n\nRun the installer.\n\n## Linux\n\nUse apt to install the package.\n"
    long_name = "a-very-long-title-" * 16 + "notes.md"  # 296 characters
    short = await upload(kclient, headers, "notes.md", body, content_type="application/octet-stream")
    long = await upload(kclient, headers, long_name, body, content_type="application/octet-stream")
    assert short.status_code == 202 and long.status_code == 202, long.text
    await drain_jobs(database, kcfg)
    rows = {r.id: r for r in await fetch(database, "SELECT id::text, name, mime FROM documents")}
    short_doc = rows[short.json()["document"]["id"]]
    long_doc = rows[long.json()["document"]["id"]]
    assert short_doc.mime == "text/markdown", short_doc
    assert long_doc.name.endswith(".md") and len(long_doc.name) == 255, long_doc.name[-20:]
    assert long_doc.mime == short_doc.mime, (long_doc.mime, short_doc.mime)
    again = await upload(kclient, headers, long_name, body, content_type="application/octet-stream")
    assert again.json()["document"]["id"] == long_doc.id, again.text


async def test_tags_are_composed_so_both_spellings_of_a_letter_match(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """A tag typed with a decomposed "é" (macOS keyboards) is the tag with the composed
    one: stored composed, and ``?tag=`` finds it whichever way it is spelled."""
    _, headers = await make_user(database)
    composed, decomposed = "caf\u00e9", "cafe\u0301"
    first = (await upload(kclient, headers, "a.txt", b"words", tags=decomposed)).json()["document"]
    second = (await upload(kclient, headers, "b.txt", b"more", tags=json.dumps([composed]))
              ).json()["document"]
    assert first["tags"] == [composed], first["tags"]
    for spelled in (composed, decomposed):
        r = await kclient.get(f"{API}/documents", headers=headers, params={"tag": spelled})
        assert {d["id"] for d in r.json()["items"]} == {first["id"], second["id"]}, r.text


async def test_the_tags_an_upload_stored_are_accepted_back_by_a_patch(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """Tags are limited by their size (5 KB as JSON), on every path: a document uploaded
    with 250 short tags is re-tagged with them plus one, and 300 copies of one tag are
    one tag (a PATCH or an ingestion run refused more than 200 items, before dropping
    duplicates, where an upload took them)."""
    _, headers = await make_user(database)
    tags = [f"t{i}" for i in range(250)]
    doc = (await upload(kclient, headers, "many.txt", b"plenty of tags",
                        tags=json.dumps(tags))).json()["document"]
    assert doc["tags"] == tags
    r = await kclient.patch(f"{API}/documents/{doc['id']}", headers=headers,
                            json={"tags": [*tags, "one-more"]})
    assert r.status_code == 200, r.text[:300]
    assert r.json()["tags"] == [*tags, "one-more"]
    r = await kclient.patch(f"{API}/documents/{doc['id']}", headers=headers,
                            json={"tags": ["same"] * 300})
    assert r.status_code == 200 and r.json()["tags"] == ["same"], r.text[:300]
    too_big = [f"tag-{i:05d}" for i in range(1000)]
    r = await kclient.patch(f"{API}/documents/{doc['id']}", headers=headers,
                            json={"tags": too_big})
    assert r.status_code == 422 and "5120 bytes" in r.text, r.text[:300]
    r = await kclient.post(f"{API}/ingestion-runs", headers=headers,
                           json={"target": "https://example.com/", "tags": too_big})
    assert r.status_code == 422 and "5120 bytes" in r.text, r.text[:300]


async def test_a_collection_is_trimmed_and_composed_and_refuses_hidden_characters(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """A collection is stored composed and trimmed; a blank one means none (as an empty
    one does); one holding control characters (an ANSI escape) or invisible formatting
    ones is a 422 naming the field, on upload, on PATCH and for an ingestion run."""
    _, headers = await make_user(database)
    blank = (await upload(kclient, headers, "a.txt", b"words", collection="   ")).json()
    assert blank["document"]["collection"] is None, blank
    doc = (await upload(kclient, headers, "b.txt", b"words", collection=" cafe\u0301 ")).json()
    assert doc["document"]["collection"] == "caf\u00e9", doc
    r = await kclient.get(f"{API}/documents", headers=headers, params={"collection": "cafe\u0301"})
    assert [d["id"] for d in r.json()["items"]] == [doc["document"]["id"]], r.text
    for bad in ("\x1b[31mred", "left\u202eright"):
        r = await upload(kclient, headers, "c.txt", b"words", collection=bad)
        assert r.status_code == 422 and r.json().get("field") == "collection", r.text
        r = await kclient.patch(f"{API}/documents/{doc['document']['id']}", headers=headers,
                                json={"collection": bad})
        assert r.status_code == 422 and "collection" in r.text, r.text
        r = await kclient.post(f"{API}/ingestion-runs", headers=headers,
                               json={"target": "https://example.com/", "collection": bad})
        assert r.status_code == 422 and "collection" in r.text, r.text
    r = await kclient.patch(f"{API}/documents/{doc['document']['id']}", headers=headers,
                            json={"collection": "  "})
    assert (r.status_code, r.json()["collection"]) == (200, None), r.text
    assert await fetch(database, "SELECT id FROM documents WHERE name = 'c.txt'") == []


# A collection's (and a tag's) length counts its characters once composed: 100 letters typed
# decomposed are 200 code points, accepted by every endpoint that stores or matches them.


async def test_the_collection_filter_finds_a_decomposed_collection_of_100_letters(
    kclient: httpx.AsyncClient, database: Database
) -> None:
    """`?collection=` typed decomposed finds the collection PATCH stored composed (the
    128 limit was checked on the raw query, 200 code points: a 422)."""
    _, h = await make_user(database)
    nfd = "e\u0301" * 100  # 200 code points; 100 once composed, as stored
    r = await upload(kclient, h, "p.txt", b"patched")
    doc = r.json()["document"]["id"]
    r = await kclient.patch(f"{API}/documents/{doc}", headers=h, json={"collection": nfd})
    assert r.status_code == 200, r.text
    r = await kclient.get(f"{API}/documents", headers=h, params={"collection": nfd})
    assert r.status_code == 200, r.text
    assert [d["id"] for d in r.json()["items"]] == [doc]


async def test_an_upload_into_a_decomposed_collection_of_100_letters_is_accepted(
    kclient: httpx.AsyncClient, database: Database
) -> None:
    """An upload takes the collection PATCH and ingestion runs take, stored composed (its
    form field's 128 limit was checked on the raw text: a 422)."""
    _, h = await make_user(database)
    nfd = "e\u0301" * 100
    r = await upload(kclient, h, "u.txt", b"uploaded", collection=nfd)
    assert r.status_code == 202, r.text
    assert r.json()["document"]["collection"] == "\u00e9" * 100


async def test_the_tag_filter_finds_a_decomposed_tag_of_100_letters(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """`?tag=` typed decomposed finds the tag an upload stored composed (the 100 limit was
    checked on the raw query: a 422)."""
    _, h = await make_user(database)
    nfd = "e\u0301" * 100
    r = await upload(kclient, h, "s.txt", b"searchable river words", tags=nfd)
    assert r.status_code == 202, r.text
    doc = r.json()["document"]["id"]
    await drain_jobs(database, kcfg)
    r = await kclient.get(f"{API}/documents", headers=h, params={"tag": nfd})
    assert r.status_code == 200, r.text
    assert [d["id"] for d in r.json()["items"]] == [doc]


async def test_search_finds_a_decomposed_collection_of_100_letters(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """Search's `collection` typed decomposed matches the collection stored composed (its
    128 limit was checked before composing: a 422)."""
    _, h = await make_user(database)
    nfd = "e\u0301" * 100
    r = await upload(kclient, h, "s.txt", b"searchable river words")
    doc = r.json()["document"]["id"]
    r = await kclient.patch(f"{API}/documents/{doc}", headers=h, json={"collection": nfd})
    assert r.status_code == 200, r.text
    await drain_jobs(database, kcfg)
    r = await kclient.post(f"{API}/search", headers=h,
                           json={"query": "river", "mode": "text", "collection": nfd})
    assert r.status_code == 200, r.text
    assert [hit["document_id"] for hit in r.json()["results"]] == [doc]
