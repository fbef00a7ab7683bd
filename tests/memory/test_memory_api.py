"""The memory API: scopes, listing now and then, history, forgetting one scope only."""

from __future__ import annotations

import json
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.http.routing import MAX_JSON_DEPTH
from roost.memory import service
from roost.memory.models import Memory
from tests.agents.conftest import make_agent
from tests.support.identity import make_user

API = "/api/v1/memories"


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    # The hashing embedder: no local model to load (a first add took 14 s).
    return Settings(data_dir=tmp_path / "data", log_json=True, max_request_bytes=64 * 1024,
                    llm_local_model=False, knowledge_embedding_provider="hash")


async def _add(client: httpx.AsyncClient, headers: dict[str, str], content: str, **extra: Any) -> Any:
    answer = await client.post(API, headers=headers, json={"content": content, **extra})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def test_add_list_get_update_history_delete(client: httpx.AsyncClient, database: Database) -> None:
    _, headers = await make_user(database)
    fact = await _add(client, headers, "Ada lives in Paris", memory_type="fact", confidence=0.9,
                      entities=[{"name": "Ada", "type": "person"}, {"name": "Paris", "type": "city"}],
                      relationships=[{"source": "Ada", "relation": "lives_in", "target": "Paris"}])
    assert fact["confidence"] == 0.9 and fact["valid_to"] is None
    listed = (await client.get(API, headers=headers)).json()
    assert [m["id"] for m in listed["items"]] == [fact["id"]]
    changed = await client.patch(f"{API}/{fact['id']}", headers=headers,
                                 json={"content": "Ada lives in Lyon", "reason": "moved"})
    assert changed.status_code == 200 and changed.json()["content"] == "Ada lives in Lyon"
    events = (await client.get(f"{API}/{fact['id']}/history", headers=headers)).json()["items"]
    assert [(e["event"], e["new_content"]) for e in events] == [
        ("add", "Ada lives in Paris"), ("update", "Ada lives in Lyon")]
    assert events[1]["old_content"] == "Ada lives in Paris" and events[1]["reason"] == "moved"
    async with database.transaction() as s:
        graph = (await s.execute(text(
            "SELECT s.name, r.relation, t.name FROM memory_relations r "
            "JOIN memory_entities s ON s.id = r.source_entity_id "
            "JOIN memory_entities t ON t.id = r.target_entity_id"))).all()
    assert [tuple(g) for g in graph] == [("Ada", "lives_in", "Paris")]
    assert (await client.delete(f"{API}/{fact['id']}", headers=headers)).status_code == 204
    assert (await client.get(f"{API}/{fact['id']}", headers=headers)).status_code == 404


async def test_what_was_true_then_and_what_is_true_now(client: httpx.AsyncClient, database: Database) -> None:
    user_id, headers = await make_user(database)
    past = utcnow() - timedelta(days=30)
    old = await _add(client, headers, "Ada works at Acme", valid_from=past.isoformat())
    new = await _add(client, headers, "Ada works at Globex")
    async with database.transaction() as s:
        memory = await s.get_one(Memory, uuid.UUID(old["id"]))
        from roost.principal import Principal
        actor = Principal(user_id=user_id, is_admin=False, kind="api_key")
        await service.invalidate(s, actor, memory, by=uuid.UUID(new["id"]), reason="changed jobs")
    now = (await client.get(API, headers=headers)).json()["items"]
    assert [m["content"] for m in now] == ["Ada works at Globex"]
    then = (await client.get(API, headers=headers,
                             params={"as_of": (past + timedelta(days=1)).isoformat()})).json()["items"]
    assert [m["content"] for m in then] == ["Ada works at Acme"]
    every = (await client.get(API, headers=headers, params={"include_invalid": "true"})).json()["items"]
    assert {m["content"] for m in every} == {"Ada works at Acme", "Ada works at Globex"}
    closed = next(m for m in every if m["id"] == old["id"])
    assert closed["valid_to"] is not None and closed["invalidated_by_id"] == new["id"]


async def test_a_memory_archived_later_is_listed_as_of_a_time_before(
        client: httpx.AsyncClient, database: Database) -> None:
    """GET /memories?as_of= reads the status at that time, as search as_of does: a memory
    archived by decay after as_of is listed then (it was left out); ?status=archived lists
    what was archived by then."""
    _, headers = await make_user(database)
    memory = await _add(client, headers, "Ada likes tea", valid_from="2020-01-01T00:00:00Z")
    async with database.transaction() as s:
        await s.execute(text("UPDATE memories SET status = 'archived', archived_at = now() "
                             "WHERE id = :id"), {"id": memory["id"]})
    then = {"as_of": "2021-01-01T00:00:00Z"}
    found = (await client.get(f"{API}/search", headers=headers,
                              params={"q": "tea", **then})).json()["items"]
    assert [i["memory"]["id"] for i in found] == [memory["id"]]
    listed = (await client.get(API, headers=headers, params=then)).json()["items"]
    assert [m["id"] for m in listed] == [memory["id"]]
    archived_then = await client.get(API, headers=headers, params={"status": "archived", **then})
    assert archived_then.json()["items"] == []
    now = (await client.get(API, headers=headers, params={"as_of": utcnow().isoformat()})).json()
    assert now["items"] == []
    archived_now = await client.get(API, headers=headers, params={
        "status": "archived", "as_of": (utcnow() + timedelta(seconds=1)).isoformat()})
    assert [m["id"] for m in archived_now.json()["items"]] == [memory["id"]]


async def test_a_nul_in_a_memory_body_is_a_422_naming_the_field(
        client: httpx.AsyncClient, database: Database) -> None:
    """A NUL in any text of a memory body is a 422 naming the field (PostgreSQL keeps no NUL
    in text or jsonb: it was the database's anonymous 400); nothing is stored or changed."""
    _, headers = await make_user(database)
    fact = await _add(client, headers, "Ada likes tea")
    bad: list[tuple[str, str, dict[str, Any], str]] = [
        ("POST", API, {"content": "Ada \x00 tea"}, "content"),
        ("POST", API, {"content": "x", "entities": [{"name": "A\x00"}]}, "entities"),
        ("POST", API, {"content": "x", "relationships": [
            {"source": "a", "relation": "r\x00", "target": "b"}]}, "relationships"),
        ("POST", API, {"content": "x", "metadata": {"k": "v\x00"}}, "metadata"),
        ("PATCH", f"{API}/{fact['id']}", {"content": "Ada \x00 tea"}, "content"),
        ("PATCH", f"{API}/{fact['id']}", {"reason": "\x00"}, "reason"),
        ("POST", f"{API}/learn", {"text": "I like \x00 tea"}, "text"),
    ]
    for method, url, body, field in bad:
        answer = await client.request(method, url, headers=headers, json=body)
        assert answer.status_code == 422, (body, answer.text)
        assert field in [str(part) for e in answer.json()["errors"] for part in e["loc"]], answer.text
    listed = (await client.get(API, headers=headers)).json()["items"]
    assert [m["content"] for m in listed] == ["Ada likes tea"]


async def test_forget_touches_one_scope_only(client: httpx.AsyncClient, database: Database) -> None:
    alice, alice_h = await make_user(database)
    bob, bob_h = await make_user(database)
    agent = await make_agent(database, alice)
    await _add(client, alice_h, "alice plain")
    await _add(client, alice_h, "alice agent", agent_id=str(agent.id))
    await _add(client, bob_h, "bob plain")
    forgot = await client.post(f"{API}/forget", headers=alice_h, json={"agent_id": str(agent.id)})
    assert forgot.json() == {"deleted": 1}
    async with database.transaction() as s:
        left = (await s.execute(text("SELECT content FROM memories ORDER BY content"))).scalars().all()
    assert list(left) == ["alice plain", "bob plain"]
    forgot = await client.post(f"{API}/forget", headers=alice_h, json={})
    assert forgot.json() == {"deleted": 1}
    async with database.transaction() as s:
        left = (await s.execute(text("SELECT content FROM memories"))).scalars().all()
    assert list(left) == ["bob plain"]  # another user's rows are never touched
    # Naming another user, or another tenant's agent, is a 404.
    theirs = await client.post(f"{API}/forget", headers=bob_h, json={"user_id": str(alice)})
    assert theirs.status_code == 404
    foreign = await client.post(API, headers=bob_h, json={"content": "x", "agent_id": str(agent.id)})
    assert foreign.status_code == 404
    assert bob  # used


async def test_bad_input(client: httpx.AsyncClient, database: Database) -> None:
    _, headers = await make_user(database)
    too_long = await client.post(API, headers=headers, json={"content": "x" * 4001})
    assert too_long.status_code == 422
    wrong = await client.post(API, headers=headers, json={"content": "x", "confidence": 2})
    assert wrong.status_code == 422
    unknown = await client.post(API, headers=headers, json={"content": "x", "persona_id": str(uuid.uuid4())})
    assert unknown.status_code == 404
    assert (await client.get(f"{API}/{uuid.uuid4()}", headers=headers)).status_code == 404
    # Ids are matched as UUIDs (so PATCH /search is a 405, not a bad id): this is no path.
    assert (await client.get(f"{API}/not-an-id", headers=headers)).status_code == 404
    assert (await client.get(API)).status_code == 401


async def test_blank_content_is_invalid_input(client: httpx.AsyncClient, database: Database) -> None:
    """A content of only white space is a 422 naming content, on POST and PATCH (it was a
    409 from the database's check constraint); around real text it is dropped."""
    _, headers = await make_user(database)
    posted = await client.post(API, headers=headers, json={"content": "   \n\t "})
    fact = await _add(client, headers, "  Ada likes tea \n")
    assert fact["content"] == "Ada likes tea"
    patched = await client.patch(f"{API}/{fact['id']}", headers=headers, json={"content": "    "})
    for answer in (posted, patched):
        assert answer.status_code == 422, answer.text
        assert [e["loc"][-1] for e in answer.json()["errors"]] == ["content"]
    assert (await client.get(f"{API}/{fact['id']}", headers=headers)).json()["content"] == \
        "Ada likes tea"


async def test_a_fact_valid_from_the_future_is_not_true_now(
        client: httpx.AsyncClient, database: Database) -> None:
    """A fact is true from valid_from: one valid from 2100 is neither listed nor recalled
    as true now, and is both at a time after 2100 (it was listed and recalled now)."""
    _, headers = await make_user(database)
    later = await _add(client, headers, "Ada will live on Mars", valid_from="2100-01-01T00:00:00Z")
    await _add(client, headers, "Ada lives on Earth and likes Mars bars")

    async def seen(**params: str) -> tuple[list[str], list[str]]:
        listed = (await client.get(API, headers=headers, params=params)).json()["items"]
        found = (await client.get(f"{API}/search", headers=headers,
                                  params={"q": "Mars", **params})).json()["items"]
        return [m["content"] for m in listed], [i["memory"]["content"] for i in found]

    assert await seen() == (["Ada lives on Earth and likes Mars bars"],
                            ["Ada lives on Earth and likes Mars bars"])
    listed, found = await seen(as_of="2100-06-01T00:00:00Z")
    assert "Ada will live on Mars" in listed and "Ada will live on Mars" in found
    every = (await client.get(API, headers=headers, params={"include_invalid": "true"})).json()
    assert later["id"] in [m["id"] for m in every["items"]]


async def test_metadata_nests_as_deep_as_a_body_may(client: httpx.AsyncClient,
                                                    database: Database) -> None:
    """Metadata as deep as a request body may nest is stored and answered; one level more
    is malformed JSON, nothing stored (300 levels was a 500: the answer could not be
    serialized)."""
    _, headers = await make_user(database)
    json_headers = {**headers, "Content-Type": "application/json"}

    def body(levels: int) -> str:  # the body is level 1, metadata 2, then the arrays
        return '{"content": "deep", "metadata": {"d": ' + "[" * (levels - 2) + "1" \
            + "]" * (levels - 2) + "}}"

    stored = await client.post(API, headers=json_headers, content=body(MAX_JSON_DEPTH))
    assert stored.status_code == 201, stored.text
    assert stored.json()["metadata"] == json.loads(body(MAX_JSON_DEPTH))["metadata"]
    listed = await client.get(API, headers=headers)
    assert listed.status_code == 200 and len(listed.json()["items"]) == 1
    for levels in (MAX_JSON_DEPTH + 1, 300):
        refused = await client.post(API, headers=json_headers, content=body(levels))
        assert refused.status_code == 400, refused.text
        assert "nested deeper" in refused.json()["detail"]
    assert len((await client.get(API, headers=headers)).json()["items"]) == 1


async def test_a_patch_that_changes_nothing_records_nothing(
        client: httpx.AsyncClient, database: Database) -> None:
    """A PATCH that changes nothing ({}, only nulls, the same values) adds no 'update'
    history row, no memory.update audit, and leaves updated_at (recency) as it was."""
    _, headers = await make_user(database)
    fact = await _add(client, headers, "Ada likes tea", metadata={"k": 1})
    for body in ({}, {"content": None, "memory_type": None},
                 {"content": " Ada likes tea ", "memory_type": "fact", "confidence": 0.8,
                  "metadata": {"k": 1}, "reason": "same"}):
        answer = await client.patch(f"{API}/{fact['id']}", headers=headers, json=body)
        assert answer.status_code == 200, answer.text
        assert answer.json()["updated_at"] == fact["updated_at"]
    events = (await client.get(f"{API}/{fact['id']}/history", headers=headers)).json()["items"]
    assert [e["event"] for e in events] == ["add"]
    assert await _update_audits(database, fact["id"]) == []
    changed = await client.patch(f"{API}/{fact['id']}", headers=headers,
                                 json={"confidence": 0.9, "content": "Ada likes tea"})
    assert changed.status_code == 200, changed.text
    events = (await client.get(f"{API}/{fact['id']}/history", headers=headers)).json()["items"]
    assert [e["event"] for e in events] == ["add", "update"]
    assert await _update_audits(database, fact["id"]) == [{"confidence": True}]


async def _update_audits(database: Database, memory_id: str) -> list[Any]:
    async with database.transaction() as session:
        return list((await session.scalars(text(
            "SELECT changes FROM audit_logs WHERE action = 'memory.update' "
            "AND resource_id = :id ORDER BY seq"), {"id": memory_id})).all())


async def test_a_memorys_history_is_paged(client: httpx.AsyncClient, database: Database) -> None:
    """A memory's history is a page (default 50, at most 500), oldest first; next_cursor
    walks the rest (each event may carry two texts of 4,000 characters)."""
    _, headers = await make_user(database)
    fact = await _add(client, headers, "Ada is 30")
    for age in range(31, 36):
        answer = await client.patch(f"{API}/{fact['id']}", headers=headers,
                                    json={"content": f"Ada is {age}"})
        assert answer.status_code == 200, answer.text
    url = f"{API}/{fact['id']}/history"
    whole = (await client.get(url, headers=headers)).json()
    assert whole["next_cursor"] is None
    assert [e["new_content"] for e in whole["items"]] == [f"Ada is {a}" for a in range(30, 36)]
    seen: list[str] = []
    cursor: str | None = None
    while True:
        page = (await client.get(url, headers=headers,
                                 params={"limit": 4} | ({"cursor": cursor} if cursor else {}))).json()
        seen += [e["id"] for e in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert seen == [e["id"] for e in whole["items"]]
    for params in ({"limit": 501}, {"cursor": "bm90IGpzb24"}):
        assert (await client.get(url, headers=headers, params=params)).status_code in (400, 422)


@pytest.mark.parametrize("invisible", ["\u200b\u200b", "\u2060\u200b", "\ufeff \u200d"])
async def test_content_of_invisible_characters_only_is_blank(
        client: httpx.AsyncClient, database: Database, invisible: str) -> None:
    """A memory that would show nothing (zero-width spaces, a word joiner) is a 422 naming
    `content`, on create and on edit, as a learned fact of such characters is blank; the
    memory edited keeps its text (both were stored: 201, 200)."""
    _, headers = await make_user(database)
    made = await client.post(API, headers=headers, json={"content": invisible})
    assert made.status_code == 422 and "content" in made.text, made.text
    created = await client.post(API, headers=headers, json={"content": "Ada lives in Paris"})
    edited = await client.patch(f"{API}/{created.json()['id']}", headers=headers,
                                json={"content": invisible})
    assert edited.status_code == 422 and "content" in edited.text, edited.text
    kept = await client.get(f"{API}/{created.json()['id']}", headers=headers)
    assert kept.json()["content"] == "Ada lives in Paris"
