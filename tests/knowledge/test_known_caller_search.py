"""A caller the process knows searches in one statement with no transaction around it
(``roost_knowledge_search``, migration 1070), in which the database confirms the caller,
scopes itself, sets the HNSW settings and finds the hits with their chunks and
documents.  What must hold: the answer is exactly the usual path's, for every mode and
filter; a credential revoked elsewhere is refused on the very next search; row-level
security filters the function's statement even without the service's own filters."""

from __future__ import annotations

import json
import uuid
from typing import Any

import httpx
import numpy as np
from sqlalchemy import text

from roost.db.engine import Database
from roost.identity import resolver
from roost.identity.tenancy import scope_settings
from roost.knowledge import search as search_mod
from roost.knowledge.config import KnowledgeConfig, get_embedder
from roost.security.tokens import hash_api_key
from tests.knowledge.support import drain_jobs, make_group
from tests.support.identity import make_user
from tests.support.listening import statements

API = "/api/v1/knowledge"
ONE_STATEMENT = "FROM roost_knowledge_search("
Headers = dict[str, str]


def _key(headers: Headers) -> tuple[str, str]:
    return ("api_key", hash_api_key(headers["Authorization"].removeprefix("Bearer ")))


async def _upload(client: httpx.AsyncClient, headers: Headers, name: str, words: str,
                  **form: str) -> str:
    r = await client.post(f"{API}/documents", headers=headers,
                          files={"file": (name, words.encode(), "text/plain")}, data=form)
    assert r.status_code == 202, r.text
    return str(r.json()["document"]["id"])


async def _search(client: httpx.AsyncClient, database: Database, headers: Headers,
                  **body: Any) -> tuple[httpx.Response, list[str]]:
    async with statements(database) as sent:
        response = await client.post(f"{API}/search", headers=headers,
                                     json={"query": "otter", "k": 10, **body})
    return response, sent


async def test_a_known_callers_vector_search_is_one_statement_and_the_same_answer(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    alice_id, alice = await make_user(database)
    bob_id, bob = await make_user(database)
    team = await make_group(database, f"team-{uuid.uuid4().hex[:6]}", alice_id, bob_id)
    notes = await _upload(kclient, alice, "notes.txt", "otter river notes otter swimming",
                          collection="field")
    await _upload(kclient, alice, "plan.txt", "otter habitat plan for the team",
                  group_id=str(team), tags='["plan"]')
    await _upload(kclient, alice, "diary.txt", "otter diary kept private", is_private="true",
                  group_id=str(team))
    await _upload(kclient, bob, "bob.txt", "otter sightings by bob")
    await drain_jobs(database, kcfg)
    assert (await _search(kclient, database, alice, mode="vector"))[0].status_code == 200  # warm

    asks: list[dict[str, Any]] = [
        {}, {"k": 1}, {"collection": "field"}, {"tags": ["plan"]},
        {"document_ids": [notes]}, {"owner_id": str(alice_id)}, {"group_id": str(team)},
        {"collection": "nowhere"}, {"document_ids": []},
    ]
    for mode in ("vector", "hybrid", "text"):
        for ask in asks:
            for headers in (alice, bob):
                fast, _ = await _search(kclient, database, headers, mode=mode, **ask)
                assert fast.status_code == 200, (mode, ask, fast.text)
                resolver._RESOLVED.pop(_key(headers), None)  # as a process new to the key
                usual, sent = await _search(kclient, database, headers, mode=mode, **ask)
                assert len(sent) > 1 and usual.json() == fast.json(), (mode, ask, sent)
                # Known again: one statement.
                again, sent = await _search(kclient, database, headers, mode=mode, **ask)
                assert len(sent) == 1 and ONE_STATEMENT in sent[0], sent
                assert again.json() == fast.json()

    names = {h["document"]["name"] for h in (await _search(
        kclient, database, bob, mode="vector"))[0].json()["results"]}
    assert names == {"plan.txt", "bob.txt"}  # Alice's private diary and notes hidden
    first = (await _search(kclient, database, alice, mode="vector"))[0].json()["results"]
    assert {h["document"]["name"] for h in first} == {"notes.txt", "plan.txt", "diary.txt"}
    scores = [h["score"] for h in first]
    assert scores == sorted(scores, reverse=True)
    assert all(h["vector_similarity"] == h["score"] and h["text_rank"] is None for h in first)
    hit = next(h for h in first if h["document"]["name"] == "notes.txt")
    assert hit["document"]["collection"] == "field" and hit["content"].startswith("otter river")
    # Text and hybrid answers carry their ranks; a text search needs no embedding.
    words = (await _search(kclient, database, alice, mode="text", query="river"))[0].json()
    assert [h["document"]["name"] for h in words["results"]] == ["notes.txt"]
    assert words["results"][0]["text_rank"] > 0 and words["results"][0]["vector_similarity"] is None
    both = (await _search(kclient, database, alice, mode="hybrid", query="river"))[0].json()
    assert both["results"][0]["document"]["name"] == "notes.txt"
    assert both["results"][0]["text_rank"] > 0 and both["results"][0]["vector_similarity"] is not None


async def test_a_key_revoked_elsewhere_is_refused_on_the_next_search(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    user_id, headers = await make_user(database)
    await _upload(kclient, headers, "a.txt", "otter notes")
    await drain_jobs(database, kcfg)
    assert (await _search(kclient, database, headers, mode="vector"))[0].status_code == 200
    # Another process makes the user an administrator: the database does not confirm
    # what this process remembers, and the search is served by the caller looked up afresh.
    async with database.transaction() as s:
        await s.execute(text("UPDATE users SET role = 'admin' WHERE id = :u"), {"u": user_id})
    served, sent = await _search(kclient, database, headers, mode="vector")
    assert served.status_code == 200 and ONE_STATEMENT in sent[0] and len(sent) > 1, sent
    assert resolver._RESOLVED[_key(headers)].principal.is_admin
    # Another process revokes the key: refused at once.
    async with database.transaction() as s:
        await s.execute(text("UPDATE api_keys SET revoked_at = now() WHERE key_hash = :h"),
                        {"h": _key(headers)[1]})
    refused, sent = await _search(kclient, database, headers, mode="vector")
    assert refused.status_code == 401 and ONE_STATEMENT in sent[0], (refused.text, sent)
    assert _key(headers) not in resolver._RESOLVED


async def test_row_level_security_filters_the_functions_statement(
    kclient: httpx.AsyncClient, database: Database, kcfg: KnowledgeConfig
) -> None:
    """The function's statement without the service's own filters (as an administrator's
    search would be): Bob's scope alone hides Alice's chunks."""
    _, alice = await make_user(database)
    _, bob = await make_user(database)
    await _upload(kclient, alice, "a.txt", "otter notes of alice")
    await drain_jobs(database, kcfg)
    assert (await _search(kclient, database, bob, mode="vector"))[0].status_code == 200
    known = resolver._RESOLVED[_key(bob)]
    confirmation = resolver._confirmation_json(_key(bob), known)
    spec = kcfg.embedder
    vector = np.asarray((await get_embedder(spec).embed(["otter"]))[0], dtype=np.float32)
    statement = search_mod._statement(search_mod.search_sql("vector", spec.model,
                                                            spec.dimensions, []))
    params = {"qvec": vector, "limit": 10}
    async with database.autocommit() as driver:
        as_bob = await search_mod._run(
            driver, database.url, kcfg, statement, params, ef_search=10,
            confirmation=confirmation, scope=json.dumps(scope_settings(known.principal)))
        as_owner = await search_mod._run(driver, database.url, kcfg, statement, params,
                                         ef_search=10)
    assert as_bob == [] and len(as_owner) >= 1
