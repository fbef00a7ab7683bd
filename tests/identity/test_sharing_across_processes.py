"""What a group shares (documents, projects, group prompts) with two ``roost serve``
processes on one database, each remembering callers and caching prompt resolutions: its
members see it through either and change only what they are granted; a member removed,
or the group deleted, through one process sees none of it on the very next request
through the other (the group's prompt no longer in their chat), and the owner keeps
her things."""

from __future__ import annotations

import hashlib
import json
import uuid
from pathlib import Path
from typing import Any

import httpx

from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.knowledge.models import Document, DocumentChunk
from tests.support.identity import join_group, make_user
from tests.support.mcp_client import mcp_session
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.support.pg import PgTestServer
from tests.support.server import roost_server, serve_env

Headers = dict[str, str]


async def _shared_document(database: Database, owner: uuid.UUID, group: uuid.UUID) -> uuid.UUID:
    async with database.transaction() as s:
        doc = Document(user_id=owner, group_id=group, name="heron-plan.md", source="file",
                       path_hash=hashlib.sha256(uuid.uuid4().bytes).hexdigest(), status="ready")
        s.add(doc)
        await s.flush()
        s.add(DocumentChunk(document_id=doc.id, user_id=owner, group_id=group, chunk_index=0,
                            content="the heron roadmap for the whole team",
                            embedding=[1.0] + [0.0] * 383,
                            embedding_model="all-MiniLM-L6-v2", embedding_dim=384))
        return doc.id


async def _sees(http: httpx.AsyncClient, base: str, headers: Headers, doc: uuid.UUID,
                project: str, prompt: str) -> dict[str, Any]:
    """What ``headers`` sees of the group's things through the server at ``base``."""
    got = await http.get(f"{base}/api/v1/knowledge/documents/{doc}", headers=headers)
    listed = (await http.get(f"{base}/api/v1/knowledge/documents", headers=headers)).json()
    found = (await http.post(f"{base}/api/v1/knowledge/search", headers=headers,
                             json={"query": "heron", "mode": "text"})).json()
    proj = await http.get(f"{base}/api/v1/projects/{project}", headers=headers)
    projects = (await http.get(f"{base}/api/v1/projects", headers=headers)).json()
    version = await http.get(f"{base}/api/v1/prompts/{prompt}", headers=headers)
    async with mcp_session(f"{base}/mcp", headers) as session:
        result = await session.call_tool("knowledge_search", {"query": "heron", "mode": "text"})
    mcp_hits = json.loads(result.content[0].text)["results"]
    return {
        "doc": got.status_code,
        "doc_listed": str(doc) in {d["id"] for d in listed["items"]},
        "doc_searched": any(h["document_id"] == str(doc) for h in found["results"]),
        "doc_mcp": any(h["document_id"] == str(doc) for h in mcp_hits),
        "project": proj.status_code,
        "project_listed": project in {p["id"] for p in projects["items"]},
        "prompt": version.status_code,
    }


SEES_ALL = {"doc": 200, "doc_listed": True, "doc_searched": True, "doc_mcp": True,
            "project": 200, "project_listed": True, "prompt": 200}
SEES_NOTHING = {"doc": 404, "doc_listed": False, "doc_searched": False, "doc_mcp": False,
                "project": 404, "project_listed": False, "prompt": 404}


async def test_what_a_group_shares_is_gone_on_the_next_request_through_another_process(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
    test_keys: KeyMaterial, stub: StubServer,
) -> None:
    alice_id, alice = await make_user(database, username=f"alice-{uuid.uuid4().hex[:6]}")
    bob_id, bob = await make_user(database, username=f"bob-{uuid.uuid4().hex[:6]}")
    carol_id, carol = await make_user(database, username=f"carol-{uuid.uuid4().hex[:6]}")
    admin = {"Authorization": f"Bearer {test_keys.admin_token}"}
    with roost_server(serve_env(pg_server, db_name, tmp_path / "a", test_keys)) as a, \
            roost_server(serve_env(pg_server, db_name, tmp_path / "b", test_keys)) as b:
        async with httpx.AsyncClient(timeout=30) as http:
            A, B = a.base_url, b.base_url
            provider = await http.post(f"{A}/api/v1/llm/providers", headers=admin, json={
                "name": "stub", "type": "openai", "base_url": stub.base_url,
                "model": "stub-model"})
            assert provider.status_code == 201, provider.text
            group = (await http.post(f"{A}/api/v1/groups", headers=alice,
                                     json={"name": f"team-{uuid.uuid4().hex[:6]}"})).json()
            gid = group["id"]
            for who, their in ((bob_id, bob), (carol_id, carol)):
                await join_group(http, alice, gid, who, their, base_url=A)
            doc = await _shared_document(database, alice_id, uuid.UUID(gid))
            project = await http.post(f"{A}/api/v1/projects", headers=alice,
                                      json={"name": "Heron", "group_id": gid})
            assert project.status_code == 201, project.text
            pid = project.json()["id"]
            prompt = await http.post(f"{A}/api/v1/prompts", headers=alice, json={
                "prompt_key": "chat.system", "prompt_text": "GROUP-SECRET-PROMPT",
                "scope": "group", "group_id": gid})
            assert prompt.status_code == 201, prompt.text
            vid = prompt.json()["id"]

            # Bob, a member, through B: sees everything, changes nothing he may not.
            assert await _sees(http, B, bob, doc, pid, vid) == SEES_ALL
            assert (await http.patch(f"{B}/api/v1/knowledge/documents/{doc}", headers=bob,
                                     json={"name": "mine"})).status_code == 403
            assert (await http.delete(f"{B}/api/v1/knowledge/documents/{doc}",
                                      headers=bob)).status_code == 403
            assert (await http.patch(f"{B}/api/v1/projects/{pid}", headers=bob,
                                     json={"name": "mine"})).status_code == 403
            assert (await http.patch(f"{B}/api/v1/prompts/{vid}", headers=bob,
                                     json={"is_active": False})).status_code in (403, 404)
            # Bob's chat in B uses the group's prompt (and B caches the resolution).
            sid = (await http.post(f"{B}/api/v1/chat/sessions", headers=bob,
                                   json={})).json()["id"]
            for _ in range(2):
                stub.script(Reply("ok"))
                said = await http.post(f"{B}/api/v1/chat/sessions/{sid}/messages",
                                       headers=bob, json={"content": "hi"})
                assert said.status_code == 201, said.text
                assert "GROUP-SECRET-PROMPT" in json.dumps(
                    stub.requests(path="/v1/chat/completions")[-1].body)

            # Removed through A: Bob's very next requests through B see none of it.
            removed = await http.delete(f"{A}/api/v1/groups/{gid}/members/{bob_id}",
                                        headers=alice)
            assert removed.status_code == 204, removed.text
            stub.script(Reply("ok"))
            said = await http.post(f"{B}/api/v1/chat/sessions/{sid}/messages", headers=bob,
                                   json={"content": "hi again"})
            assert said.status_code == 201, said.text
            assert "GROUP-SECRET-PROMPT" not in json.dumps(
                stub.requests(path="/v1/chat/completions")[-1].body), \
                "a removed member's chat still used the group's prompt"
            assert await _sees(http, B, bob, doc, pid, vid) == SEES_NOTHING
            for method, url in (("PATCH", f"/api/v1/knowledge/documents/{doc}"),
                                ("DELETE", f"/api/v1/knowledge/documents/{doc}"),
                                ("PATCH", f"/api/v1/projects/{pid}")):
                resp = await http.request(method, B + url, headers=bob,
                                          json={"name": "x"} if method == "PATCH" else None)
                assert resp.status_code == 404, (method, url, resp.status_code, resp.text)

            # Carol still sees it through B; the group deleted through A: she no longer does.
            assert await _sees(http, B, carol, doc, pid, vid) == SEES_ALL
            deleted = await http.delete(f"{A}/api/v1/groups/{gid}", headers=alice)
            assert deleted.status_code == 204, deleted.text
            gone = await _sees(http, B, carol, doc, pid, vid)
            assert gone == SEES_NOTHING, gone
            # and the owner keeps her document and project
            assert (await http.get(f"{B}/api/v1/knowledge/documents/{doc}",
                                   headers=alice)).status_code == 200
            assert (await http.get(f"{B}/api/v1/projects/{pid}",
                                   headers=alice)).status_code == 200
    for server in (a, b):
        assert "Traceback" not in server.output, server.output[-4000:]
