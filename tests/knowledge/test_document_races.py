"""Changes of one document at once: each PATCH or DELETE locks the document's row
(service._owned_document), so the second waits and then sees the first's committed
result: the chunks' scope copies follow the document as it ends, a PATCH of a document
deleted meanwhile is a 404 (not a 500), and two DELETEs delete (and audit) it once."""

from __future__ import annotations

import asyncio
import uuid

import httpx

from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.knowledge.support import drain_jobs, make_group, upload
from tests.support.identity import make_user
from tests.support.sql import fetch, scalar

API = "/api/v1/knowledge"
Headers = dict[str, str]
ROUNDS = 6  # the races are timing-dependent: several rounds make each outcome likely


async def _doc(client: httpx.AsyncClient, headers: Headers, words: str, **form: str) -> str:
    r = await upload(client, headers, f"{uuid.uuid4().hex}.txt", words.encode(), **form)
    assert r.status_code == 202, r.text
    return str(r.json()["document"]["id"])


async def test_concurrent_patches_leave_the_chunks_scope_as_the_documents(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """Made private and moved to a collection at once: the chunks end unshared and in
    the new collection (as the document), not as one request's stale view left them."""
    alice_id, alice = await make_user(database)
    bob_id, _ = await make_user(database)
    team = await make_group(database, f"t-{uuid.uuid4().hex[:6]}", alice_id, bob_id)
    for i in range(ROUNDS):
        doc = await _doc(kclient, alice, "otter secret river notes", group_id=str(team))
        await drain_jobs(database, kcfg)
        answers = await asyncio.gather(
            kclient.patch(f"{API}/documents/{doc}", headers=alice, json={"is_private": True}),
            kclient.patch(f"{API}/documents/{doc}", headers=alice,
                          json={"collection": f"c{i}"}))
        assert [a.status_code for a in answers] == [200, 200], [a.text for a in answers]
        got = (await kclient.get(f"{API}/documents/{doc}", headers=alice)).json()
        assert got["is_private"] is True and got["collection"] == f"c{i}", got
        copies = await fetch(database, "SELECT DISTINCT group_id, collection FROM "
                                       "document_chunks WHERE document_id = :d", d=doc)
        assert [tuple(r) for r in copies] == [(None, f"c{i}")], (i, copies)
        mine = await kclient.post(f"{API}/search", headers=alice,
                                  json={"query": "otter secret", "mode": "text",
                                        "collection": f"c{i}"})
        assert len(mine.json()["results"]) == 1, (i, mine.text[:300])


async def test_patching_a_document_deleted_meanwhile_is_404_not_500(
    kclient: httpx.AsyncClient, database: Database
) -> None:
    """A PATCH racing a DELETE of the same document answers 200 or 404, never a 500."""
    _, alice = await make_user(database)
    for _ in range(ROUNDS):
        doc = await _doc(kclient, alice, "otter notes")
        deleted, *patched = await asyncio.gather(
            kclient.delete(f"{API}/documents/{doc}", headers=alice),
            kclient.patch(f"{API}/documents/{doc}", headers=alice, json={"collection": "x"}),
            kclient.patch(f"{API}/documents/{doc}", headers=alice, json={"name": "zz.txt"}))
        assert deleted.status_code == 204, deleted.text
        for answer in patched:
            assert answer.status_code in (200, 404), (answer.status_code, answer.text[:400])
        assert await scalar(database, "SELECT count(*) FROM documents WHERE id = :d", d=doc) == 0


async def test_deleting_a_document_twice_at_once_deletes_it_once(
    kclient: httpx.AsyncClient, database: Database
) -> None:
    """Two DELETEs of one document at once: one 204, one 404, one deletion audited."""
    _, alice = await make_user(database)
    for _ in range(ROUNDS):
        doc = await _doc(kclient, alice, "otter notes")
        answers = await asyncio.gather(
            kclient.delete(f"{API}/documents/{doc}", headers=alice),
            kclient.delete(f"{API}/documents/{doc}", headers=alice))
        assert sorted(a.status_code for a in answers) == [204, 404], [a.text for a in answers]
        assert await scalar(database, "SELECT count(*) FROM audit_logs WHERE action = "
                                      "'knowledge.document.deleted' AND resource_id = :d",
                            d=doc) == 1
