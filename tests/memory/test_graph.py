"""Graph queries: neighbours and paths by recursive CTE (cycles included), the temporal
graph (now and as_of), an entity's history, isolation, and ``roost memory graph``; the
entities deleted memories alone named leave with them (cascades and migration 1210); names
as sent (decomposed, padded with what shows nothing) are the names stored."""

from __future__ import annotations

import asyncio
import itertools
import json
import unicodedata
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
from roost.db.migrate import downgrade, upgrade
from roost.memory import graphq, recall, service
from roost.memory.models import Memory
from roost.pagination import encode_cursor
from roost.principal import Principal
from tests.agents.conftest import make_agent
from tests.chat.conftest import new_session
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer

API = "/api/v1/memories"
GRAPH = f"{API}/graph"
Headers = dict[str, str]


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_local_model=False,
                    knowledge_embedding_provider="hash")


async def _add(client: httpx.AsyncClient, headers: Headers, content: str,
               relations: list[tuple[str, str, str]], **extra: Any) -> Any:
    answer = await client.post(API, headers=headers, json={
        "content": content, **extra,
        "relationships": [{"source": s, "relation": r, "target": t} for s, r, t in relations]})
    assert answer.status_code == 201, answer.text
    return answer.json()


async def _entity_id(client: httpx.AsyncClient, headers: Headers, name: str) -> str:
    found = await client.get(f"{GRAPH}/entities", headers=headers, params={"q": name})
    assert found.status_code == 200, found.text
    [entity] = [e for e in found.json() if e["name"] == name]
    return str(entity["id"])


async def test_neighbours_and_paths(client: httpx.AsyncClient, database: Database) -> None:
    _, headers = await make_user(database)
    await _add(client, headers, "Ada lives in Paris; Paris is in France; Ada works at Acme",
               [("Ada", "lives_in", "Paris"), ("Paris", "in", "France"), ("Ada", "works_at", "Acme"),
                ("Acme", "based_in", "Berlin"), ("Berlin", "in", "Germany")])
    ada = await _entity_id(client, headers, "Ada")
    one = (await client.get(f"{GRAPH}/entities/{ada}/neighbours", headers=headers)).json()
    assert one["entity"]["name"] == "Ada"
    assert {(n["entity"]["name"], n["depth"]) for n in one["items"]} == {("Paris", 1), ("Acme", 1)}
    paris = next(n for n in one["items"] if n["entity"]["name"] == "Paris")
    assert [(e["source_name"], e["relation"], e["target_name"], e["current"])
            for e in paris["edges"]] == [("Ada", "lives_in", "Paris", True)]
    two = (await client.get(f"{GRAPH}/entities/{ada}/neighbours", headers=headers,
                            params={"depth": 2})).json()
    assert {(n["entity"]["name"], n["depth"]) for n in two["items"]} == {
        ("Paris", 1), ("Acme", 1), ("France", 2), ("Berlin", 2)}
    # Relations are followed in both directions: France reaches Ada.
    paths = (await client.get(f"{GRAPH}/paths", headers=headers,
                              params={"source": "france", "target": "GERMANY", "max_hops": 6})).json()
    assert [[e["name"] for e in p["entities"]] for p in paths] == [
        ["France", "Paris", "Ada", "Acme", "Berlin", "Germany"]]
    assert paths[0]["hops"] == 5 and [e["relation"] for e in paths[0]["edges"]] == [
        "in", "lives_in", "works_at", "based_in", "in"]
    too_short = await client.get(f"{GRAPH}/paths", headers=headers,
                                 params={"source": "France", "target": "Germany", "max_hops": 4})
    assert too_short.status_code == 200 and too_short.json() == []
    for params in ({"source": "France", "target": "Germany", "max_hops": 7},
                   {"source": "France", "target": "Germany", "max_hops": 0}):
        assert (await client.get(f"{GRAPH}/paths", headers=headers, params=params)).status_code == 422
    unknown = await client.get(f"{GRAPH}/paths", headers=headers,
                               params={"source": "France", "target": "Atlantis"})
    assert unknown.status_code == 404


async def test_cyclic_graphs_terminate(client: httpx.AsyncClient, database: Database) -> None:
    _, headers = await make_user(database)
    ring = ["A", "B", "C", "D"]
    await _add(client, headers, "a ring", [(a, "next", b) for a, b in itertools.pairwise([*ring, "A"])])
    clique = [f"K{i}" for i in range(8)]
    await _add(client, headers, "a clique", [(a, "knows", b) for a, b in itertools.combinations(clique, 2)])
    await _add(client, headers, "a self loop and the bridge", [("A", "likes", "A"), ("D", "met", "K0")])
    a = await _entity_id(client, headers, "A")
    far = (await client.get(f"{GRAPH}/entities/{a}/neighbours", headers=headers,
                            params={"depth": 6})).json()["items"]
    depths = {n["entity"]["name"]: n["depth"] for n in far}
    assert depths == {"B": 1, "D": 1, "C": 2, "K0": 2, **{k: 3 for k in clique[1:]}}
    # Exactly the two simple paths around the ring.
    ring_paths = (await client.get(f"{GRAPH}/paths", headers=headers,
                                   params={"source": "A", "target": "C", "max_hops": 6})).json()
    assert sorted("".join(e["name"] for e in p["entities"]) for p in ring_paths) == ["ABC", "ADC"]
    # The clique has 1,237 simple paths of up to 6 hops between two members: the limit
    # stops the walk, shortest first, and no path visits an entity twice.
    many = (await client.get(f"{GRAPH}/paths", headers=headers,
                             params={"source": "K0", "target": "K1", "max_hops": 6,
                                     "limit": 200})).json()
    assert len(many) == 200
    hops = [p["hops"] for p in many]
    assert hops == sorted(hops) and hops[:7] == [1, 2, 2, 2, 2, 2, 2]
    for p in many:
        names = [e["name"] for e in p["entities"]]
        assert len(names) == len(set(names)) and names[0] == "K0" and names[-1] == "K1"


async def test_a_path_walk_past_its_time_limit_is_a_422_and_nothing_lingers(
    client: httpx.AsyncClient, database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Layers of entities each linked to all of the next: the simple paths of six hops
    number 12 ** 5 (a quarter of a million partial walks before the first path ends;
    layers of 20 took the whole 30 s statement timeout, a connection held each time).
    The walk stops at its own time limit with a 422; shorter walks are unaffected."""
    user_id, headers = await make_user(database)
    layers = [["src"], *([f"L{k}_{i}" for i in range(12)] for k in range(5)), ["dst"]]
    links = [(a, "to", b) for left, right in itertools.pairwise(layers)
             for a, b in itertools.product(left, right)]
    for start in range(0, len(links), 50):
        await _add(client, headers, f"layer links {start}", links[start:start + 50])
    monkeypatch.setattr(graphq, "PATHS_TIME_LIMIT_MS", 100)
    dense = await client.get(f"{GRAPH}/paths", headers=headers,
                             params={"source": "src", "target": "dst", "max_hops": 6})
    assert dense.status_code == 422, dense.text
    assert "fewer hops" in dense.json()["detail"] and dense.json()["field"] == "max_hops"
    # Fewer hops than the layers need: no path, found at once.
    short = await client.get(f"{GRAPH}/paths", headers=headers,
                             params={"source": "src", "target": "dst", "max_hops": 3})
    assert short.status_code == 200 and short.json() == []
    # The limit applied to the walk alone: the transaction's own timeout is back after it.
    async with database.transaction() as session:
        before = await session.scalar(text("SELECT current_setting('statement_timeout')"))
        found = await graphq.paths(session, Principal(user_id=None, is_admin=True,
                                                     kind="operator"),
                                   "L0_0", "L1_0", max_hops=1, user_id=user_id)
        after = await session.scalar(text("SELECT current_setting('statement_timeout')"))
    assert after == before and len(found) == 1


async def test_the_graph_now_and_then(client: httpx.AsyncClient, database: Database) -> None:
    user_id, headers = await make_user(database)
    start = utcnow() - timedelta(days=60)
    acme = await _add(client, headers, "Ada works at Acme", [("Ada", "works_at", "Acme")],
                      valid_from=start.isoformat())
    changed = utcnow() - timedelta(days=30)
    globex = await _add(client, headers, "Ada works at Globex", [("Ada", "works_at", "Globex")],
                        valid_from=changed.isoformat())
    async with database.transaction() as s:
        actor = Principal(user_id=user_id, is_admin=False, kind="api_key")
        memory = await s.get_one(Memory, uuid.UUID(acme["id"]))
        await service.invalidate(s, actor, memory, at=changed, by=uuid.UUID(globex["id"]))
    ada = await _entity_id(client, headers, "Ada")
    now = (await client.get(f"{GRAPH}/entities/{ada}/neighbours", headers=headers)).json()
    assert [n["entity"]["name"] for n in now["items"]] == ["Globex"]
    then = (await client.get(f"{GRAPH}/entities/{ada}/neighbours", headers=headers, params={
        "as_of": (utcnow() - timedelta(days=45)).isoformat()})).json()
    assert [n["entity"]["name"] for n in then["items"]] == ["Acme"]
    assert then["items"][0]["edges"][0]["current"] is True  # current at that time
    before = (await client.get(f"{GRAPH}/entities/{ada}/neighbours", headers=headers, params={
        "as_of": (utcnow() - timedelta(days=90)).isoformat()})).json()
    assert before["items"] == []
    old_path = await client.get(f"{GRAPH}/paths", headers=headers, params={
        "source": "Acme", "target": "Ada", "as_of": (utcnow() - timedelta(days=45)).isoformat()})
    assert len(old_path.json()) == 1
    assert (await client.get(f"{GRAPH}/paths", headers=headers,
                             params={"source": "Acme", "target": "Ada"})).json() == []
    history = (await client.get(f"{GRAPH}/entities/{ada}/history", headers=headers)).json()
    rows = [(h["target_name"], h["current"], h["valid_to"] is None, h["memory_content"])
            for h in history["items"]]
    assert rows == [("Acme", False, False, "Ada works at Acme"),
                    ("Globex", True, True, "Ada works at Globex")]


async def test_graphs_are_isolated(client: httpx.AsyncClient, database: Database) -> None:
    alice, alice_h = await make_user(database)
    bob, bob_h = await make_user(database)
    work = (await client.post("/api/v1/personas", headers=alice_h, json={"name": "Work"})).json()["id"]
    await _add(client, alice_h, "Ada knows Cy", [("Ada", "knows", "Cy")])
    await _add(client, alice_h, "At work Ada knows Dee", [("Ada", "knows", "Dee")], persona_id=work)
    await _add(client, bob_h, "Ada knows Eve", [("Ada", "knows", "Eve")])
    entities = (await client.get(f"{GRAPH}/entities", headers=alice_h, params={"q": "ada"})).json()
    assert sorted(str(e["persona_id"]) for e in entities) == sorted(["None", work])
    mine = (await client.get(f"{GRAPH}/entities", headers=alice_h,
                             params={"q": "ada", "persona_id": work})).json()
    assert [e["persona_id"] for e in mine] == [work] and mine[0]["current_relations"] == 1
    ada_work = mine[0]["id"]
    near = (await client.get(f"{GRAPH}/entities/{ada_work}/neighbours", headers=alice_h)).json()
    assert [n["entity"]["name"] for n in near["items"]] == ["Dee"]
    # By name without a persona: every "Ada" of alice's (both scopes), never bob's.
    async with database.transaction() as s:
        actor = Principal(user_id=alice, is_admin=False, kind="system")
        found = await graphq.neighbours(s, actor, "ada")
        assert sorted(n.entity.name for n in found) == ["Cy", "Dee"]
        with pytest.raises(Exception, match="no user"):
            await graphq.neighbours(s, actor, "ada", user_id=bob)
    # Another tenant's entity is a 404 on every graph route; so is an unknown one.
    for path in (f"{GRAPH}/entities/{ada_work}/neighbours", f"{GRAPH}/entities/{ada_work}/history",
                 f"{GRAPH}/entities/{uuid.uuid4()}/history"):
        assert (await client.get(path, headers=bob_h)).status_code == 404
    assert (await client.get(f"{GRAPH}/paths", headers=bob_h,
                             params={"source": ada_work, "target": "Eve"})).status_code == 404
    bobs = (await client.get(f"{GRAPH}/paths", headers=bob_h,
                             params={"source": "Ada", "target": "Eve"})).json()
    assert [[e["name"] for e in p["entities"]] for p in bobs] == [["Ada", "Eve"]]
    assert (await client.get(f"{GRAPH}/entities")).status_code == 401


async def test_roost_memory_graph_shows_an_entitys_history(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    client: httpx.AsyncClient,
) -> None:
    user_id, headers = await make_user(database, username="gina")
    acme = await _add(client, headers, "Gina works at Acme", [("Gina", "works_at", "Acme")],
                      valid_from=(utcnow() - timedelta(days=400)).isoformat())
    globex = await _add(client, headers, "Gina works at Globex", [("Gina", "works_at", "Globex")])
    async with database.transaction() as s:
        actor = Principal(user_id=user_id, is_admin=False, kind="api_key")
        await service.invalidate(s, actor, await s.get_one(Memory, uuid.UUID(acme["id"])),
                                 by=uuid.UUID(globex["id"]))
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "cli-data"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash"}
    shown = await asyncio.to_thread(run_roost, "memory", "graph", "Gina", "--user", "gina",
                                    "--depth", "1", env=env)
    assert shown.returncode == 0, shown.stderr
    out = shown.stdout
    assert "Gina (thing): 1 current, 1 past relation" in out
    acme_line = next(line for line in out.splitlines() if "--works_at--> Acme" in line)
    globex_line = next(line for line in out.splitlines() if "--works_at--> Globex" in line)
    assert "past" in acme_line and "current" in globex_line
    assert (utcnow() - timedelta(days=400)).strftime("%Y-%m-%d") in acme_line
    missing = await asyncio.to_thread(run_roost, "memory", "graph", "Nobody", "--user", "gina", env=env)
    assert missing.returncode == 1 and "no entity named 'Nobody'" in missing.stderr


async def _names(client: httpx.AsyncClient, headers: Headers) -> list[str]:
    found = await client.get(f"{GRAPH}/entities", headers=headers)
    assert found.status_code == 200, found.text
    return sorted(e["name"] for e in found.json())


async def test_deleting_memories_removes_the_entities_nothing_uses(
        client: httpx.AsyncClient, database: Database) -> None:
    """Deleting or forgetting memories removes the entities no relation references and no
    memory of the user names any more, and no other (they stayed listed with 0 relations,
    and no API removed them)."""
    _, alice = await make_user(database)
    _, bob = await make_user(database)
    secret = await _add(client, alice, "Ada has a secret diagnosis", [("Ada", "has", "Diagnosis")],
                        entities=[{"name": "Ada", "type": "person"}])
    await _add(client, alice, "Ada knows Bob", [("Ada", "knows", "Bob")])
    await _add(client, alice, "Zed is a name", [], entities=[{"name": " Zed "}])
    tea = await _add(client, alice, "Zed likes tea", [("zed", "likes", "Tea")])
    await _add(client, bob, "Bob's Ada has a diagnosis too", [("Ada", "has", "Diagnosis")])
    assert (await client.delete(f"{API}/{secret['id']}", headers=alice)).status_code == 204
    assert await _names(client, alice) == ["Ada", "Bob", "Tea", "Zed"]  # Ada: still related
    assert (await client.delete(f"{API}/{tea['id']}", headers=alice)).status_code == 204
    assert await _names(client, alice) == ["Ada", "Bob", "Zed"]  # still named (any case)
    forgot = await client.post(f"{API}/forget", headers=alice, json={})
    assert forgot.json() == {"deleted": 2}
    assert await _names(client, alice) == []
    assert await _names(client, bob) == ["Ada", "Diagnosis"]  # another user's: untouched


async def test_entities_named_with_a_sharp_s_or_a_no_break_space_go_with_their_only_memory(
        client: httpx.AsyncClient, database: Database) -> None:
    """Names are compared as graph.normalize writes them (case folded, Unicode white space):
    the clean-up compared them in SQL (lower, regexp \\s, btrim), and Straße (strasse),
    Ada<U+00A0>Lovelace and a 255-character name of ß (folded to 510, cut) stayed listed."""
    _, headers = await make_user(database)
    names = ["Straße", "Ada\u00a0Lovelace", "ß" * 255]
    fact = await _add(client, headers, "The office is on the Straße", [],
                      entities=[{"name": n} for n in names])
    assert len(await _names(client, headers)) == 3
    assert (await client.delete(f"{API}/{fact['id']}", headers=headers)).status_code == 204
    assert await _names(client, headers) == []


async def test_an_entity_a_live_memory_names_with_a_sharp_s_is_kept(
        client: httpx.AsyncClient, database: Database) -> None:
    """Deleting a memory keeps the entities another live memory names (Weiß was deleted:
    SQL's lower() of the name was not its case-folded normalised name)."""
    _, headers = await make_user(database)
    await _add(client, headers, "Weiß is a name", [], entities=[{"name": "Weiß"}])
    other = await _add(client, headers, "Weiß knows Bob", [("Weiß", "knows", "Bob")])
    assert (await client.delete(f"{API}/{other['id']}", headers=headers)).status_code == 204
    assert await _names(client, headers) == ["Weiß"]


async def test_a_name_of_only_format_characters_names_no_entity(
        client: httpx.AsyncClient, database: Database) -> None:
    """An entity or a relation's end named only by zero-width characters (format characters,
    Unicode category Cf: U+200B, U+FEFF) is blank, skipped like one of white space: no
    invisible entities, the memory stored."""
    _, headers = await make_user(database)
    fact = await _add(client, headers, "a fact", [("\u200b", "likes", "\ufeff")],
                      entities=[{"name": "\u200b\u200b"}])
    assert await _names(client, headers) == []
    assert (await client.delete(f"{API}/{fact['id']}", headers=headers)).status_code == 204


async def test_a_relation_of_only_format_characters_makes_no_relation(
        client: httpx.AsyncClient, database: Database) -> None:
    """A relation of only format characters (U+200B, U+2060) is blank, skipped like one of
    white space, its ends with it: it was stored, an invisible edge ``a ----> b`` that
    paths, neighbours, history and recall followed.  Format characters inside a relation
    are dropped from it (graph.clean)."""
    _, headers = await make_user(database)
    await _add(client, headers, "odd relation", [("a", "\u200b\u2060", "b")])
    assert await _names(client, headers) == []
    paths = await client.get(f"{GRAPH}/paths", headers=headers,
                             params={"source": "a", "target": "b"})
    assert paths.status_code == 404, paths.text  # no entity a: the relation made none
    await _add(client, headers, "Ada works at Acme", [("Ada", "works\u200b_at", "Acme")])
    paths = await client.get(f"{GRAPH}/paths", headers=headers,
                             params={"source": "Ada", "target": "Acme"})
    assert [[e["relation"] for e in p["edges"]] for p in paths.json()] == [["works_at"]], \
        paths.text


async def test_composed_and_decomposed_names_are_one_entity(
        client: httpx.AsyncClient, database: Database) -> None:
    """"Café" typed as one code point (U+00E9) and as "e" plus a combining accent (U+0301,
    what macOS file names and some keyboards give) are one entity, named composed (NFC),
    as "STRASSE" is "Straße": they were two look-alike entities, and a path through one
    spelling was not found by the other."""
    _, headers = await make_user(database)
    await _add(client, headers, "Ada owns the Caf\u00e9", [("Ada", "owns", "Caf\u00e9")])
    await _add(client, headers, "The Cafe\u0301 is in Paris", [("Cafe\u0301", "located_in", "Paris")])
    found = (await client.get(f"{GRAPH}/entities", headers=headers, params={"q": "cafe\u0301"})).json()
    assert [e["name"] for e in found] == ["Caf\u00e9"], found
    paths = await client.get(f"{GRAPH}/paths", headers=headers,
                             params={"source": "Ada", "target": "Paris"})
    assert paths.status_code == 200 and [p["hops"] for p in paths.json()] == [2], paths.text


def test_recall_matches_a_decomposed_accent_as_a_composed_name() -> None:
    """A query naming "Cafe<U+0301>" names the entity "Café" (recall's graph signal): the
    combining accent ending the word was cut as no word character, leaving "cafe"."""
    assert "caf\u00e9" in recall.query_phrases("Who owns the Cafe\u0301?")
    assert "caf\u00e9 owner" in recall.query_phrases("CAFE\u0301 owner")


async def test_names_differing_only_by_format_characters_are_one_entity(
        client: httpx.AsyncClient, database: Database) -> None:
    """'Ada' and 'Ada<U+200B>' (and 'A<U+200D>da') are one entity, named without them."""
    _, headers = await make_user(database)
    for name in ("Ada\u200b", "Ada", "A\u200dda"):
        await _add(client, headers, f"fact {uuid.uuid4()}", [], entities=[{"name": name}])
    assert await _names(client, headers) == ["Ada"]


async def test_deleting_an_agent_or_a_chat_session_removes_the_entities_only_their_memories_named(
        client: httpx.AsyncClient, database: Database) -> None:
    """Memories deleted by a foreign key's cascade (an agent's, a chat session's) take the
    entities only they named with them (they stayed: only the memory service cleaned up);
    an entity a live memory names stays."""
    user_id, headers = await make_user(database)
    agent = await make_agent(database, user_id)
    chat = await new_session(client, headers)
    await _add(client, headers, "Kestrel project uses Falcon", [("Kestrel", "uses", "Falcon")],
               agent_id=str(agent.id), entities=[{"name": "Kestrel"}])
    await _add(client, headers, "Ada likes Zurich", [("Ada", "likes", "Zurich")],
               session_id=chat["id"])
    await _add(client, headers, "Falcon is fast", [], entities=[{"name": "falcon"}])
    assert await _names(client, headers) == ["Ada", "Falcon", "Kestrel", "Zurich"]
    gone = await client.delete(f"/api/v1/agents/{agent.id}", headers=headers)
    assert gone.status_code == 204, gone.text
    assert await _names(client, headers) == ["Ada", "Falcon", "Zurich"]
    gone = await client.delete(f"/api/v1/chat/sessions/{chat['id']}", headers=headers)
    assert gone.status_code == 204, gone.text
    assert await _names(client, headers) == ["Falcon"]
    assert [m["content"] for m in (await client.get(API, headers=headers)).json()["items"]] \
        == ["Falcon is fast"]


async def test_the_migration_names_the_entities_of_existing_memories_and_removes_orphans(
        client: httpx.AsyncClient, database: Database) -> None:
    """Migration 1210 fills ``entity_names`` with graph.normalize's names and removes the
    entities earlier deletions left; the trigger is in place after it."""
    _, headers = await make_user(database)
    kept = await _add(client, headers, "The office is on the Straße", [("Straße", "in", "Bern")],
                      entities=[{"name": "Straße"}, {"name": "Ada\u00a0 Lovelace"}])
    left = await _add(client, headers, "Zed likes tea", [("Zed", "likes", "Tea")])
    await downgrade(database.engine, "1200")
    async with database.transaction() as session:  # no trigger yet: Zed and Tea stay
        await session.execute(text("DELETE FROM memories WHERE id = :id"),
                              {"id": uuid.UUID(left["id"])})
    assert await _names(client, headers) == ["Ada Lovelace", "Bern", "Straße", "Tea", "Zed"]
    await upgrade(database.engine)
    async with database.transaction() as session:
        named = await session.scalar(text("SELECT entity_names FROM memories WHERE id = :id"),
                                     {"id": uuid.UUID(kept["id"])})
    assert named == ["ada lovelace", "bern", "strasse"]
    assert await _names(client, headers) == ["Ada Lovelace", "Bern", "Straße"]
    assert (await client.delete(f"{API}/{kept['id']}", headers=headers)).status_code == 204
    assert await _names(client, headers) == []


async def test_the_migration_composes_names_merges_look_alikes_and_drops_blank_relations(
        client: httpx.AsyncClient, database: Database) -> None:
    """Migration 1290 brings a graph written before names were composed (NFC) and relations
    cleaned to the new rules: "Café" and "Cafe<U+0301>" (two entities then) become one, the
    oldest kept with the other's relations and type; a relation of only format characters
    is deleted with the ends only it used; relations and ``entity_names`` are recomputed,
    so deleting the memories still removes their entities (the trigger of 1210)."""
    user_id, headers = await make_user(database)
    owns = await _add(client, headers, "Ada owns the Cafe", [("Ada", "owns", "X1")])
    located = await _add(client, headers, "The Cafe is in Paris",
                         [("X2", "located_in", "Paris")], entities=[{"name": "X2", "type": "place"}])
    odd = await _add(client, headers, "odd relation", [("a", "r3", "b")])
    await downgrade(database.engine, "1280")
    nfd = "Cafe\u0301"
    old = {  # as the code before 1290 wrote them: casefolded, not composed, relation strip()ped
        owns["id"]: ([], [("Ada", "owns", "Caf\u00e9")], ["ada", "caf\u00e9"]),
        located["id"]: ([{"name": nfd, "type": "place"}], [(nfd, "located_in\u200b", "Paris")],
                        [nfd.casefold(), "paris"]),
        odd["id"]: ([], [("a", "\u200b\u2060", "b")], ["a", "b"])}
    async with database.transaction() as session:
        for memory_id, (entities, relations, names) in old.items():
            await session.execute(
                text("UPDATE memories SET entities = CAST(:entities AS jsonb),"
                     " relationships = CAST(:relations AS jsonb), entity_names = :names"
                     " WHERE id = :id"),
                {"id": uuid.UUID(memory_id), "names": names, "entities": json.dumps(entities),
                 "relations": json.dumps([{"source": a, "relation": r, "target": b}
                                          for a, r, b in relations])})
        for was, name in (("x1", "Caf\u00e9"), ("x2", nfd)):
            await session.execute(
                text("UPDATE memory_entities SET name = :name, normalized_name = :key,"
                     " created_at = created_at + :later"
                     " WHERE user_id = :uid AND normalized_name = :was"),
                {"name": name, "key": name.casefold(), "was": was, "uid": user_id,
                 "later": timedelta(seconds=1 if was == "x2" else 0)})
        for was, relation in (("located_in", "located_in\u200b"), ("r3", "\u200b\u2060")):
            await session.execute(
                text("UPDATE memory_relations SET relation = :relation"
                     " WHERE user_id = :uid AND relation = :was"),
                {"relation": relation, "was": was, "uid": user_id})
    assert await _names(client, headers) == sorted(["Ada", "Caf\u00e9", nfd, "Paris", "a", "b"])
    await upgrade(database.engine)
    found = (await client.get(f"{GRAPH}/entities", headers=headers)).json()
    assert sorted((e["name"], e["entity_type"], e["current_relations"]) for e in found) == [
        ("Ada", "thing", 1), ("Caf\u00e9", "place", 2), ("Paris", "thing", 1)], found
    paths = await client.get(f"{GRAPH}/paths", headers=headers,
                             params={"source": "Ada", "target": "Paris"})
    assert [[e["relation"] for e in p["edges"]] for p in paths.json()] == [["owns", "located_in"]]
    async with database.transaction() as session:
        named: dict[uuid.UUID, list[str]] = dict((await session.execute(
            text("SELECT id, entity_names FROM memories WHERE user_id = :uid"),
            {"uid": user_id})).tuples().all())
    assert named == {uuid.UUID(owns["id"]): ["ada", "caf\u00e9"],
                     uuid.UUID(located["id"]): ["caf\u00e9", "paris"], uuid.UUID(odd["id"]): []}
    for memory in (owns, located):
        assert (await client.delete(f"{API}/{memory['id']}", headers=headers)).status_code == 204
    assert await _names(client, headers) == []


async def test_concurrent_memories_naming_the_same_entities_do_not_deadlock(
        client: httpx.AsyncClient, database: Database) -> None:
    """Memories added at once that name the same entities in opposite orders all succeed:
    the entities are written in one order (most were 503s after a deadlock, 40P01, when
    each was upserted in the memory's own order).  Deletes lock them in the same order."""
    _, headers = await make_user(database)
    names = [f"E{j}" for j in range(8)]

    async def add(i: int) -> httpx.Response:
        ordered = names if i % 2 else names[::-1]
        pair = ("P", "Q") if i % 2 else ("Q", "P")
        return await client.post(API, headers=headers, json={
            "content": f"fact {i}", "entities": [{"name": n} for n in ordered],
            "relationships": [{"source": pair[0], "relation": "r", "target": pair[1]}]})

    added = await asyncio.gather(*(add(i) for i in range(12)))
    assert [a.status_code for a in added] == [201] * 12, [a.text for a in added]
    assert await _names(client, headers) == sorted([*names, "P", "Q"])

    async def delete_or_add(i: int) -> httpx.Response:
        if i % 2:
            return await client.delete(f"{API}/{added[i].json()['id']}", headers=headers)
        return await add(i + 100)

    mixed = await asyncio.gather(*(delete_or_add(i) for i in range(12)))
    assert sorted(m.status_code for m in mixed) == [201] * 6 + [204] * 6, [m.text for m in mixed]
    assert await _names(client, headers) == sorted([*names, "P", "Q"])


async def test_graph_entities_of_an_unknown_user_is_a_404(
        client: httpx.AsyncClient, database: Database, admin_headers: Headers) -> None:
    """An administrator naming an unknown user_id gets a 404 from graph/entities, as from
    the memory list (not an empty 200); another user's id is a 404 for a non-admin."""
    other, _ = await make_user(database)
    _, headers = await make_user(database)
    unknown = str(uuid.uuid4())
    listed = await client.get(API, headers=admin_headers, params={"user_id": unknown})
    assert listed.status_code == 404
    answer = await client.get(f"{GRAPH}/entities", headers=admin_headers,
                              params={"user_id": unknown})
    assert answer.status_code == 404, (answer.status_code, answer.text)
    assert (await client.get(f"{GRAPH}/entities", headers=admin_headers,
                             params={"user_id": str(other)})).status_code == 200
    assert (await client.get(f"{GRAPH}/entities", headers=headers,
                             params={"user_id": str(other)})).status_code == 404


async def test_an_entitys_history_is_paged(client: httpx.AsyncClient, database: Database) -> None:
    """An entity's history answers a page (default 50, at most 500) oldest first, and
    next_cursor walks the rest: a hub entity's thousands of relations, each with its
    memory's text, are never one answer."""
    _, headers = await make_user(database)
    for i in range(3):
        await _add(client, headers, f"hub fact {i}",
                   [("Hub", "links", f"N{i}-{j}") for j in range(50)])
    hub = await _entity_id(client, headers, "Hub")
    url = f"{GRAPH}/entities/{hub}/history"
    first = (await client.get(url, headers=headers)).json()
    assert len(first["items"]) == 50 and first["next_cursor"]
    seen: list[tuple[str, str]] = []
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 40} | ({"cursor": cursor} if cursor else {})
        answer = await client.get(url, headers=headers, params=params)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        seen += [(h["valid_from"], h["id"]) for h in page["items"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    assert len(seen) == 150 and len(set(seen)) == 150
    assert [h["id"] for h in first["items"]] == [i for _, i in seen[:50]]
    assert [v for v, _ in seen] == sorted(v for v, _ in seen)  # oldest first
    key = {"f": "2024-01-01T00:00:00+00:00", "c": "2024-01-01T00:00:00+00:00",
           "id": str(uuid.uuid4())}
    for params in ({"limit": 501}, {"limit": 0}, {"cursor": "bm90IGpzb24"},
                   {"cursor": encode_cursor({**key, "c": 1})},
                   {"cursor": encode_cursor({**key, "f": "2024-01-01T00:00:00"})},
                   {"cursor": encode_cursor({**key, "f": "0001-01-01T00:00:00+14:00"})}):
        bad = await client.get(url, headers=headers, params=params)
        assert bad.status_code in (400, 422), (params, bad.status_code, bad.text)
    assert (await client.get(url, headers=headers,
                             params={"cursor": encode_cursor(key)})).json()["items"] != []


async def test_a_name_fitting_once_composed_is_accepted_and_found_sent_decomposed(
        client: httpx.AsyncClient, database: Database) -> None:
    """200 "é" sent decomposed (400 code points, as macOS may send them) fit the 255
    characters a name is stored in: accepted (it was a 422 "at most 255"), and the paths
    query finds the entity by that spelling (a 422 on `source` too)."""
    _, h = await make_user(database)
    nfd = unicodedata.normalize("NFD", "\u00e9" * 200)
    await _add(client, h, "long accented", [(nfd, "is", "X")])
    assert await _names(client, h) == sorted(["\u00e9" * 200, "X"])
    paths = await client.get(f"{GRAPH}/paths", headers=h, params={"source": nfd, "target": "X"})
    assert paths.status_code == 200 and len(paths.json()) == 1, paths.text


async def test_a_blank_path_end_is_a_422_naming_it(
        client: httpx.AsyncClient, database: Database) -> None:
    """A paths query whose source or target shows nothing (a zero-width space, a mark)
    is a 422 naming that parameter (it named a field "entity" the route does not have)."""
    _, h = await make_user(database)
    await _add(client, h, "a", [("A", "is", "B")])
    for params, field in (({"source": "\u200b", "target": "B"}, "source"),
                          ({"source": "A", "target": "\u200b\u200e"}, "target")):
        answer = await client.get(f"{GRAPH}/paths", headers=h, params=params)
        assert answer.status_code == 422 and answer.json()["field"] == field, answer.text


@pytest.mark.parametrize("filler", ["\u3164", "\u034f", "\uffa0"])
async def test_a_name_padded_with_a_filler_is_the_plain_name(
        client: httpx.AsyncClient, database: Database, filler: str) -> None:
    """A name padded with a character that shows nothing (a Hangul filler, the grapheme
    joiner) is the plain name's entity (it was a second, look-alike one), and a name of
    only such characters makes no entity, as a zero-width space does."""
    _, h = await make_user(database)
    await _add(client, h, "a", [("Ada", "knows", "Bo")])
    await _add(client, h, "b", [(f"Ada{filler}", "knows", "Cy"), ("Bo", "likes", filler)])
    assert await _names(client, h) == ["Ada", "Bo", "Cy"]
