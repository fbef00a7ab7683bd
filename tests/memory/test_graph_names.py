"""Entity and relation names of the memory graph: long names that casefold longer stay
distinct, control characters make no invisible or twin entity, the CLI prints them escaped."""

from __future__ import annotations

import asyncio
from pathlib import Path

import httpx

from roost.db.engine import Database
from tests.memory.test_graph import API, GRAPH, _add, test_settings
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer

__all__ = ["test_settings"]


async def test_distinct_long_names_are_not_merged(client: httpx.AsyncClient,
                                                  database: Database) -> None:
    """Two entity names (each within 255 characters) are two entities. The matching key was
    cut at 255 characters after casefolding, which lengthens a name (ß is ss): two names
    differing past the cut became one entity, the second silently linked as the first."""
    _, headers = await make_user(database)
    a = "ß" * 200 + "a" * 55
    b = "ß" * 200 + "b" * 55
    await _add(client, headers, "two long names", [(a, "knows", "X"), (b, "knows", "Y")])
    found = (await client.get(f"{GRAPH}/entities", headers=headers, params={"limit": 500})).json()
    assert {e["name"] for e in found} == {a, b, "X", "Y"}


async def test_control_character_names_make_no_entity(client: httpx.AsyncClient,
                                                      database: Database) -> None:
    """Control characters (Unicode Cc: U+0001, DEL) are dropped from names as format
    characters are: a name of only control characters was an invisible entity, and
    `Ada<DEL>` a second, look-alike `Ada`."""
    _, headers = await make_user(database)
    await _add(client, headers, "invisible", [("\x01\x02", "knows", "Ada"), ("Ada\x7f", "is", "Ada")])
    found = (await client.get(f"{GRAPH}/entities", headers=headers)).json()
    assert [e["name"] for e in found] == ["Ada"]


async def test_cli_graph_escapes_control_characters(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    client: httpx.AsyncClient,
) -> None:
    """`roost memory graph`'s first line (the entity's name and type) was printed raw: an
    entity type with an escape sequence (a user's, or a model's through learning) wrote
    terminal control sequences to the operator's terminal."""
    _, headers = await make_user(database, username="hank")
    answer = await client.post(API, headers=headers, json={
        "content": "evil", "entities": [{"name": "Hank\x1b[2J", "type": "t\x1b]0;pwn\x07"}],
        "relationships": [{"source": "Hank\x1b[2J", "relation": "r\x1b[31m", "target": "Z"}]})
    assert answer.status_code == 201, answer.text
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "cli-data"),
           "ROOST_KNOWLEDGE_EMBEDDING_PROVIDER": "hash"}
    shown = await asyncio.to_thread(run_roost, "memory", "graph", "Hank\x1b[2J", "--user", "hank",
                                    "--depth", "1", env=env)
    assert shown.returncode == 0, shown.stderr
    first = shown.stdout.splitlines()[0]
    assert "\x1b" not in first and "\x07" not in first, repr(first)


async def test_an_entity_named_like_a_uuid_is_found_by_its_name(
        client: httpx.AsyncClient, database: Database) -> None:
    """`source` and `target` are names or ids: a name in the form of a UUID (an order
    number) that is no entity's id is a name (it was taken for an id only: a 404 "no
    entity with id"); an id still wins, and another user's id is still a 404."""
    name = "123e4567-e89b-12d3-a456-426614174000"
    _, headers = await make_user(database)
    await _add(client, headers, "the order shipped to Paris", [(name, "shipped_to", "Paris")])
    found = await client.get(f"{GRAPH}/paths", headers=headers,
                             params={"source": name, "target": "Paris"})
    assert found.status_code == 200, found.text
    assert [[e["name"] for e in p["entities"]] for p in found.json()] == [[name, "Paris"]]
    paris = (await client.get(f"{GRAPH}/entities", headers=headers,
                              params={"q": "paris"})).json()[0]["id"]
    by_id = await client.get(f"{GRAPH}/paths", headers=headers,
                             params={"source": name, "target": paris})
    assert by_id.status_code == 200 and len(by_id.json()) == 1, by_id.text
    _, stranger = await make_user(database)
    theirs = await client.get(f"{GRAPH}/paths", headers=stranger,
                              params={"source": paris, "target": name})
    assert theirs.status_code == 404, theirs.text


async def test_entities_q_finds_the_end_of_a_name_whose_key_was_cut(
        client: httpx.AsyncClient, database: Database) -> None:
    """`entities?q=` finds a part of a name past where its key was cut: ``ß`` * 200 +
    `` Berlin`` casefolds to a key over 255 characters, stored as its first 238 and a
    digest, and `q=berlin` was matched against that cut key only."""
    name = "ß" * 200 + " Berlin"
    _, headers = await make_user(database)
    await _add(client, headers, "a long name", [(name, "is_in", "Germany")])
    found = await client.get(f"{GRAPH}/entities", headers=headers, params={"q": "berlin"})
    assert found.status_code == 200, found.text
    assert [e["name"] for e in found.json()] == [name]
    long_q = await client.get(f"{GRAPH}/entities", headers=headers,
                              params={"q": "ß" * 130 + " berlin"})
    assert [e["name"] for e in long_q.json()] == [name], long_q.text
    none = await client.get(f"{GRAPH}/entities", headers=headers, params={"q": "munich"})
    assert none.json() == [], none.text
