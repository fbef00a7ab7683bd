"""A memory's scope stays within its user: the persona, agent or chat session named must
be theirs (an administrator naming a user's memory cannot reach another user's persona or
agent; nobody scopes memories to another user's public agent), and graph queries check
the persona they are narrowed to like every other scope id."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.agents.models import Persona, PersonaMember
from roost.config import Settings
from roost.db.engine import Database
from tests.agents.conftest import make_agent
from tests.support.identity import make_user

API = "/api/v1/memories"


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, max_request_bytes=64 * 1024,
                    llm_local_model=False, knowledge_embedding_provider="hash")


async def _persona(database: Database, owner: uuid.UUID,
                   member: uuid.UUID | None = None) -> uuid.UUID:
    async with database.transaction() as session:
        persona = Persona(owner_id=owner, name=f"persona-{uuid.uuid4().hex[:6]}")
        session.add(persona)
        await session.flush()
        if member is not None:
            session.add(PersonaMember(persona_id=persona.id, user_id=member, role="viewer"))
        return persona.id


async def _memories(database: Database) -> list[tuple[Any, ...]]:
    async with database.transaction() as s:
        rows = (await s.execute(text("SELECT user_id, persona_id, agent_id FROM memories"))).all()
    return [tuple(r) for r in rows]


async def test_an_admin_cannot_scope_a_users_memory_to_another_users_agent(
        client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]) -> None:
    """Alice's memory with Bob's agent: 404, nothing stored; with Alice's own agent: stored."""
    alice, _ = await make_user(database)
    bob, _ = await make_user(database)
    agent = await make_agent(database, bob)
    r = await client.post(API, headers=admin_headers,
                          json={"content": "cross", "user_id": str(alice), "agent_id": str(agent.id)})
    assert r.status_code == 404, (r.status_code, r.text)
    assert await _memories(database) == []
    own = await make_agent(database, alice)
    r = await client.post(API, headers=admin_headers,
                          json={"content": "own", "user_id": str(alice), "agent_id": str(own.id)})
    assert r.status_code == 201, r.text
    assert await _memories(database) == [(alice, None, own.id)]


async def test_an_admin_cannot_scope_a_users_memory_to_another_users_persona(
        client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]) -> None:
    """Alice's memory with Bob's persona: 404, nothing stored; once Alice is a member of
    one of Bob's personas, that one is hers to use."""
    alice, _ = await make_user(database)
    bob, _ = await make_user(database)
    persona = await _persona(database, bob)
    r = await client.post(API, headers=admin_headers,
                          json={"content": "cross", "user_id": str(alice), "persona_id": str(persona)})
    assert r.status_code == 404, (r.status_code, r.text)
    assert await _memories(database) == []
    shared = await _persona(database, bob, member=alice)
    r = await client.post(API, headers=admin_headers,
                          json={"content": "shared", "user_id": str(alice), "persona_id": str(shared)})
    assert r.status_code == 201, r.text
    assert await _memories(database) == [(alice, shared, None)]


async def test_a_memory_cannot_be_scoped_to_another_users_public_agent(
        client: httpx.AsyncClient, database: Database) -> None:
    """Bob may run Alice's public agent but not scope his memories to it (deleting the
    agent would delete them): 404, nothing stored, and Alice's delete leaves Bob's own."""
    alice, ah = await make_user(database)
    _, bh = await make_user(database)
    agent = await make_agent(database, alice, is_public=True)
    r = await client.post(API, headers=bh, json={"content": "Bob note", "agent_id": str(agent.id)})
    assert r.status_code == 404, (r.status_code, r.text)
    assert (await client.post(API, headers=bh, json={"content": "Bob note"})).status_code == 201
    assert (await client.delete(f"/api/v1/agents/{agent.id}", headers=ah)).status_code == 204
    left = (await client.get(API, headers=bh)).json()["items"]
    assert [m["content"] for m in left] == ["Bob note"], left


async def test_graph_queries_with_a_foreign_or_unknown_persona_are_404s(
        client: httpx.AsyncClient, database: Database) -> None:
    """graph/entities and graph/paths narrowed to another tenant's (or an unknown) persona
    are 404s, as the docs say of every scope id, not empty answers."""
    _, ah = await make_user(database)
    bob, _ = await make_user(database)
    persona = await _persona(database, bob)
    r = await client.post(API, headers=ah, json={
        "content": "Ada lives in Paris",
        "relationships": [{"source": "Ada", "relation": "lives_in", "target": "Paris"}]})
    assert r.status_code == 201, r.text
    entities = (await client.get(f"{API}/graph/entities", headers=ah)).json()
    ada = next(e["id"] for e in entities if e["name"] == "Ada")
    for pid in (str(persona), str(uuid.uuid4())):
        r = await client.get(f"{API}/graph/entities", headers=ah, params={"persona_id": pid})
        assert r.status_code == 404, (r.status_code, r.text)
        for source in ("Ada", ada):
            r = await client.get(f"{API}/graph/paths", headers=ah,
                                 params={"source": source, "target": "Paris", "persona_id": pid})
            assert r.status_code == 404, (source, r.status_code, r.text)
