"""Sharing a document with a group requires membership (docs/knowledge.md, "Visibility"):
checked for what is newly shared, by a PATCH and by an ingestion run, which may run long
after its owner started it."""

from __future__ import annotations

import hashlib
import uuid
from pathlib import Path

import httpx

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from roost.knowledge.ingest import run_ingestion
from roost.knowledge.models import Document, DocumentChunk
from tests.knowledge.support import PARAGRAPH, make_group, principal, start_run
from tests.support.identity import join_group, make_user
from tests.support.sql import fetch

API = "/api/v1/knowledge"
Headers = dict[str, str]


async def _doc(database: Database, owner: uuid.UUID, group: uuid.UUID | None, *,
               is_private: bool = False) -> uuid.UUID:
    """A ready document of ``owner`` with one chunk, shared with ``group``."""
    async with database.transaction() as s:
        doc = Document(user_id=owner, group_id=group, is_private=is_private,
                       name=f"d-{uuid.uuid4().hex[:6]}.md", source="file",
                       path_hash=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), status="ready")
        s.add(doc)
        await s.flush()
        s.add(DocumentChunk(document_id=doc.id, user_id=owner,
                            group_id=None if is_private else group, chunk_index=0,
                            content="the heron roadmap for the whole team",
                            embedding=[1.0] + [0.0] * 383,
                            embedding_model="all-MiniLM-L6-v2", embedding_dim=384))
        return doc.id


async def _team(kclient: httpx.AsyncClient, database: Database
                ) -> tuple[uuid.UUID, tuple[uuid.UUID, Headers], tuple[uuid.UUID, Headers]]:
    """A group Alice made, with Bob joined as a member."""
    (alice_id, alice), (bob_id, bob) = await make_user(database), await make_user(database)
    made = await kclient.post("/api/v1/groups", headers=alice,
                              json={"name": f"team-{uuid.uuid4().hex[:8]}"})
    assert made.status_code == 201, made.text
    gid = uuid.UUID(made.json()["id"])
    await join_group(kclient, alice, gid, bob_id, bob)
    return gid, (alice_id, alice), (bob_id, bob)


async def test_a_run_started_before_its_user_left_the_group_shares_nothing_with_it(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """A member removed from a group while their ingestion run waits no longer adds
    documents to the group's searches: the run writes them shared with nobody and its
    own group is cleared, as a deleted group's is."""
    (ingest_root / "plan.md").write_text("the heron roadmap, planted after removal " * 20)
    gid, (_, alice), (bob_id, _) = await _team(kclient, database)
    run_id = await start_run(database, principal(bob_id, gid), kcfg, "plan.md", group_id=gid)
    removed = await kclient.delete(f"/api/v1/groups/{gid}/members/{bob_id}", headers=alice)
    assert removed.status_code == 204, removed.text
    await run_ingestion(database, run_id, kcfg)  # the worker picks the job up afterwards
    docs = await fetch(database, "SELECT group_id, status FROM documents WHERE user_id = :u",
                       u=bob_id)
    chunks = await fetch(database, "SELECT group_id FROM document_chunks WHERE user_id = :u",
                         u=bob_id)
    [run] = await fetch(database, "SELECT group_id, status FROM ingestion_runs WHERE id = :r",
                        r=run_id)
    assert [r.status for r in docs] == ["ready"] and chunks, (docs, chunks)
    assert {r.group_id for r in docs} | {c.group_id for c in chunks} == {None}, (docs, chunks)
    assert run.status == "success" and run.group_id is None, run
    found = await kclient.post(f"{API}/search", headers=alice,
                               json={"query": "heron", "mode": "text"})
    assert found.status_code == 200 and found.json()["results"] == [], found.text


async def test_a_run_of_a_member_or_an_administrator_still_shares_with_the_group(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig, ingest_root: Path,
) -> None:
    """The membership check keeps what may be shared: a member's run, and an
    administrator's with a group they are not in (the API lets them share with any)."""
    (ingest_root / "a.md").write_text("okapi facts " + PARAGRAPH)
    (ingest_root / "b.md").write_text("tapir facts " + PARAGRAPH)
    gid, (_, alice), (bob_id, _) = await _team(kclient, database)
    admin_id, _ = await make_user(database, admin=True)
    member_run = await start_run(database, principal(bob_id, gid), kcfg, "a.md", group_id=gid)
    admin_run = await start_run(database, principal(admin_id, admin=True), kcfg, "b.md",
                                group_id=gid)
    for run_id in (member_run, admin_run):
        await run_ingestion(database, run_id, kcfg)
    docs = await fetch(database, "SELECT group_id FROM documents WHERE user_id IN (:b, :a)",
                       b=bob_id, a=admin_id)
    assert [r.group_id for r in docs] == [gid, gid], docs
    found = await kclient.post(f"{API}/search", headers=alice,
                               json={"query": "okapi tapir", "mode": "text"})
    assert found.status_code == 200 and len(found.json()["results"]) >= 2, found.text


async def test_restating_a_document_s_unchanged_group_after_leaving_it_is_no_403(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    """A PATCH that sends the document's current group_id back unchanged (with a new
    description) shares nothing new: it succeeds, as the same PATCH of a project does."""
    gid, _, (bob_id, bob) = await _team(kclient, database)
    doc = await _doc(database, bob_id, gid)
    left = await kclient.delete(f"/api/v1/groups/{gid}/members/{bob_id}", headers=bob)
    assert left.status_code == 204, left.text
    got = await kclient.get(f"{API}/documents/{doc}", headers=bob)
    assert got.status_code == 200 and got.json()["group_id"] == str(gid), got.text
    resp = await kclient.patch(f"{API}/documents/{doc}", headers=bob,
                               json={"group_id": str(gid), "description": "notes"})
    assert resp.status_code == 200, resp.text
    assert resp.json()["group_id"] == str(gid) and resp.json()["description"] == "notes"


async def test_making_a_private_document_public_after_leaving_its_group_is_a_403(
    kclient: httpx.AsyncClient, database: Database,
) -> None:
    """Unmarking ``is_private`` shares the document with its group anew: refused to an
    owner who is no longer a member, with nothing changed (chunks stay unshared)."""
    gid, (_, alice), (bob_id, bob) = await _team(kclient, database)
    doc = await _doc(database, bob_id, gid, is_private=True)
    left = await kclient.delete(f"/api/v1/groups/{gid}/members/{bob_id}", headers=bob)
    assert left.status_code == 204, left.text
    resp = await kclient.patch(f"{API}/documents/{doc}", headers=bob,
                               json={"is_private": False})
    assert resp.status_code == 403, resp.text
    chunks = await fetch(database, "SELECT group_id FROM document_chunks WHERE document_id = :d",
                         d=doc)
    assert [c.group_id for c in chunks] == [None], chunks
    assert (await kclient.get(f"{API}/documents/{doc}", headers=alice)).status_code == 404
    # A member of the group may: their private document filed under it becomes public.
    other = await make_group(database, f"g-{uuid.uuid4().hex[:6]}", bob_id)
    mine = await _doc(database, bob_id, other, is_private=True)
    resp = await kclient.patch(f"{API}/documents/{mine}", headers=bob, json={"is_private": False})
    assert resp.status_code == 200 and resp.json()["is_private"] is False, resp.text
