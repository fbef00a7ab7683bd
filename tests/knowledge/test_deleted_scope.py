"""A deleted group or persona stops being named by the documents filed under it, by their
chunks' copies of the scope and by their ingestion runs (migration 1190's triggers)."""

from __future__ import annotations

import asyncio
import dataclasses
import uuid
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.db.migrate import downgrade, upgrade
from roost.knowledge.config import EmbedderSpec, KnowledgeConfig, get_embedder, set_embedder
from roost.knowledge.ingest import run_ingestion
from tests.knowledge.support import PARAGRAPH, drain_jobs, principal, start_run
from tests.support.identity import join_group, join_persona, make_user
from tests.support.sql import fetch

API = "/api/v1/knowledge"


async def test_deleting_a_group_unshares_the_chunks_of_its_documents_too(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """A group deleted: its documents' chunks lose the group as the documents do, so a
    search filtered by the gone group finds nothing."""
    _, a = await make_user(database)
    b_id, b = await make_user(database)
    g = await kclient.post("/api/v1/groups", json={"name": f"g-{uuid.uuid4().hex[:6]}"},
                           headers=a)
    assert g.status_code == 201, g.text
    gid = g.json()["id"]
    await join_group(kclient, a, gid, b_id, b)
    r = await kclient.post(f"{API}/documents", headers=a,
                           files={"file": ("plan.txt", b"zebra roadmap zebra", "text/plain")},
                           data={"group_id": gid})
    assert r.status_code == 202, r.text
    doc = r.json()["document"]["id"]
    await drain_jobs(database, kcfg)
    assert (await kclient.delete(f"/api/v1/groups/{gid}", headers=a)).status_code == 204
    got = await kclient.get(f"{API}/documents/{doc}", headers=a)
    assert got.status_code == 200 and got.json()["group_id"] is None, got.text
    chunks = await fetch(database, "SELECT group_id FROM document_chunks WHERE document_id = :d",
                         d=uuid.UUID(doc))
    found = await kclient.post(f"{API}/search", headers=a, json={
        "query": "zebra", "k": 5, "mode": "text", "group_id": gid})
    assert found.status_code == 200, found.text
    assert [c[0] for c in chunks] == [None] and found.json()["results"] == [], (
        chunks, found.text)


async def _filed_under_a_persona(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
    owner: dict[str, str], member: tuple[uuid.UUID, dict[str, str]], *, role: str,
    text: bytes,
) -> tuple[str, str, str]:
    """A persona of ``owner`` that ``member`` joins with ``role`` and files a document
    under, ingested: the persona's, the document's and the ingestion run's ids."""
    made = await kclient.post("/api/v1/personas", json={"name": "pp"}, headers=owner)
    assert made.status_code == 201, made.text
    per = made.json()["id"]
    member_id, member_headers = member
    await join_persona(kclient, owner, per, member_id, member_headers, role=role)
    r = await kclient.post(f"{API}/documents", headers=member_headers,
                           files={"file": ("p.txt", text, "text/plain")},
                           data={"persona_id": per})
    assert r.status_code == 202, r.text
    await drain_jobs(database, kcfg)
    return per, r.json()["document"]["id"], r.json()["ingestion_run"]["id"]


async def test_deleting_a_persona_detaches_the_documents_filed_under_it(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """A persona deleted by its owner: a document a member filed under it no longer names
    it (as a deleted project or group is cleared), nor do its chunks or its ingestion run;
    listing or searching by the persona finds nothing."""
    _, a = await make_user(database)
    b_id, b = await make_user(database)
    per, doc, run = await _filed_under_a_persona(kclient, database, kcfg, a, (b_id, b),
                                                 role="editor", text=b"quokka notes quokka")
    # The owner deletes it: row-level security hides b's document from a, yet it is cleared.
    assert (await kclient.delete(f"/api/v1/personas/{per}", headers=a)).status_code == 204
    got = await kclient.get(f"{API}/documents/{doc}", headers=b)
    assert got.status_code == 200, got.text
    listed = await kclient.get(f"{API}/documents?persona_id={per}", headers=b)
    found = await kclient.post(f"{API}/search", headers=b, json={
        "query": "quokka", "k": 5, "mode": "text", "persona_id": per})
    assert found.status_code == 200, found.text
    chunks = await fetch(database, "SELECT persona_id FROM document_chunks WHERE document_id = :d",
                         d=uuid.UUID(doc))
    runs = await fetch(database, "SELECT persona_id FROM ingestion_runs WHERE id = :r",
                       r=uuid.UUID(run))
    assert (got.json()["persona_id"], listed.json()["items"], found.json()["results"],
            [c[0] for c in chunks], [x[0] for x in runs]) == (None, [], [], [None], [None])


async def test_an_account_deletion_that_deletes_a_persona_clears_its_members_documents(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """An account deleted by an administrator takes the persona it alone owned with it; a
    viewer's document filed under that persona no longer names it, nor do its chunks."""
    a_id, a = await make_user(database)
    b_id, b = await make_user(database)
    _, admin = await make_user(database, admin=True)
    _, doc, _ = await _filed_under_a_persona(kclient, database, kcfg, a, (b_id, b),
                                             role="viewer", text=b"wombat notes")
    gone = await kclient.delete(f"/api/v1/users/{a_id}", headers=admin)
    assert gone.status_code == 204, gone.text
    got = await kclient.get(f"{API}/documents/{doc}", headers=b)
    chunks = await fetch(database, "SELECT persona_id FROM document_chunks WHERE document_id = :d",
                         d=uuid.UUID(doc))
    assert got.status_code == 200, got.text
    assert (got.json()["persona_id"], [c[0] for c in chunks]) == (None, [None])


async def test_the_migration_clears_what_already_named_a_deleted_group_or_persona(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig,
) -> None:
    """Before 1190 a deleted group stayed on chunks and a deleted persona everywhere;
    upgrading clears those ids and leaves the triggers in place."""
    _, a = await make_user(database)
    g = await kclient.post("/api/v1/groups", json={"name": f"g-{uuid.uuid4().hex[:6]}"},
                           headers=a)
    per = await kclient.post("/api/v1/personas", json={"name": "old"}, headers=a)
    assert g.status_code == 201 and per.status_code == 201, (g.text, per.text)
    r = await kclient.post(f"{API}/documents", headers=a,
                           files={"file": ("o.txt", b"otter notes", "text/plain")},
                           data={"group_id": g.json()["id"], "persona_id": per.json()["id"]})
    assert r.status_code == 202, r.text
    doc = uuid.UUID(r.json()["document"]["id"])
    await drain_jobs(database, kcfg)
    await downgrade(database.engine, "1180")
    async with database.transaction() as session:  # as the schema owner: no triggers yet
        await session.execute(text("DELETE FROM groups WHERE id = :g"),
                              {"g": uuid.UUID(g.json()["id"])})
        await session.execute(text("DELETE FROM personas WHERE id = :p"),
                              {"p": uuid.UUID(per.json()["id"])})
    stale = await fetch(database, "SELECT group_id IS NULL, persona_id IS NULL "
                                  "FROM document_chunks WHERE document_id = :d", d=doc)
    assert [tuple(c) for c in stale] == [(False, False)], stale
    await upgrade(database.engine)
    rows = await fetch(database, """
        SELECT d.persona_id, c.group_id, c.persona_id, r.persona_id
          FROM documents d JOIN document_chunks c ON c.document_id = d.id
          JOIN ingestion_runs r ON r.id = d.ingestion_run_id WHERE d.id = :d""", d=doc)
    assert [tuple(x) for x in rows] == [(None, None, None, None)], rows


class GatedEmbedder:
    """Sets ``entered``, then waits for ``release`` before embedding: the test acts while
    a run is between its reads and the transaction that writes its document."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.model_name = inner.model_name
        self.dimensions = inner.dimensions
        self.entered = asyncio.Event()
        self.release = asyncio.Event()

    async def embed(self, texts: list[str]) -> list[list[float]]:
        self.entered.set()
        await self.release.wait()
        result: list[list[float]] = await self.inner.embed(texts)
        return result


def _gated(kcfg: KnowledgeConfig) -> tuple[KnowledgeConfig, GatedEmbedder]:
    spec = EmbedderSpec("hash", f"gate-{uuid.uuid4().hex[:6]}", 384)
    gate = GatedEmbedder(get_embedder(spec))
    set_embedder(spec, gate)
    return dataclasses.replace(kcfg, embedder=spec), gate


async def test_a_persona_deleted_while_a_file_run_embeds_is_not_written_back(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """A persona deleted while a file run filed under it embeds: the document and chunks
    the run writes afterwards take the run's options as they are then (cleared by the
    trigger), not as they were when the run began."""
    a_id, a = await make_user(database)
    made = await kclient.post("/api/v1/personas", json={"name": "pf"}, headers=a)
    assert made.status_code == 201, made.text
    per = made.json()["id"]
    (ingest_root / "f.txt").write_text("capybara facts " + PARAGRAPH)
    cfg, gate = _gated(kcfg)
    made = await kclient.post(f"{API}/ingestion-runs", headers=a,
                              json={"target": "f.txt", "persona_id": per})
    assert made.status_code == 202, made.text
    run_id = uuid.UUID(made.json()["id"])
    async with database.transaction() as s:  # run here, with the gated model
        await s.execute(text("UPDATE ingestion_runs SET embedding_model = :m WHERE id = :r"),
                        {"m": cfg.embedder.model, "r": run_id})
    task = asyncio.create_task(run_ingestion(database, run_id, cfg))
    await asyncio.wait_for(gate.entered.wait(), 20)
    assert (await kclient.delete(f"/api/v1/personas/{per}", headers=a)).status_code == 204
    gate.release.set()
    summary = await asyncio.wait_for(task, 30)
    docs = await fetch(database, "SELECT persona_id FROM documents WHERE user_id = :u", u=a_id)
    chunks = await fetch(database, "SELECT persona_id FROM document_chunks WHERE user_id = :u",
                         u=a_id)
    assert summary["status"] == "success" and docs and chunks, summary
    assert {r[0] for r in docs} | {r[0] for r in chunks} == {None}, (docs, chunks)


async def test_a_group_deleted_while_a_file_run_embeds_leaves_the_file_shared_with_nobody(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """A group deleted while a file run sharing with it embeds: the file is still ingested,
    shared with nobody, instead of the run failing on the documents' foreign key."""
    a_id, a = await make_user(database)
    g = await kclient.post("/api/v1/groups", json={"name": f"g-{uuid.uuid4().hex[:8]}"},
                           headers=a)
    assert g.status_code == 201, g.text
    gid = uuid.UUID(g.json()["id"])
    (ingest_root / "g.txt").write_text("okapi facts " + PARAGRAPH)
    cfg, gate = _gated(kcfg)
    run_id = await start_run(database, principal(a_id, gid), cfg, "g.txt", group_id=gid)
    task = asyncio.create_task(run_ingestion(database, run_id, cfg))
    await asyncio.wait_for(gate.entered.wait(), 20)
    assert (await kclient.delete(f"/api/v1/groups/{gid}", headers=a)).status_code == 204
    gate.release.set()
    summary = await asyncio.wait_for(task, 30)
    [run] = await fetch(database, "SELECT status, errors FROM ingestion_runs WHERE id = :r",
                        r=run_id)
    docs = await fetch(database, "SELECT group_id FROM documents WHERE user_id = :u", u=a_id)
    chunks = await fetch(database, "SELECT group_id FROM document_chunks WHERE user_id = :u",
                         u=a_id)
    assert run.status == "success", (summary, run.errors)
    assert docs and chunks and {r[0] for r in docs} | {c[0] for c in chunks} == {None}, (
        docs, chunks)
