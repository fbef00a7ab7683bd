"""The memory graph: long names that hid a search hit, names that NFC lengthens."""

from __future__ import annotations

import httpx

from roost.db.engine import Database
from tests.memory.test_graph import API, GRAPH, _add, test_settings
from tests.support.identity import make_user

__all__ = ["test_settings"]


async def test_many_long_names_do_not_hide_a_short_match(
        client: httpx.AsyncClient, database: Database) -> None:
    """`entities?q=berlin` lists `Berlin` though more than CUT_SLACK (100) more connected
    entities have long names (keys cut to 238 characters and a digest): they filled the
    over-fetched rows, were all filtered out, and `Berlin` was never returned."""
    _, headers = await make_user(database)
    for batch in range(3):
        await _add(client, headers, f"long names {batch}",
                   [("ß" * 200 + f"{batch}-{i:02d}", "near", "Hub") for i in range(40)])
    answer = await client.post(API, headers=headers, json={
        "content": "a city", "entities": [{"name": "Berlin", "type": "city"}]})
    assert answer.status_code == 201, answer.text
    found = await client.get(f"{GRAPH}/entities", headers=headers,
                             params={"q": "berlin", "limit": 5})
    assert found.status_code == 200, found.text
    assert [e["name"] for e in found.json()] == ["Berlin"]


async def test_a_name_nfc_lengthens_past_the_limit_is_refused(
        client: httpx.AsyncClient, database: Database) -> None:
    """NFC decomposes composition exclusions (U+0958 DEVANAGARI QA is two code points):
    130 of them and ` Berlin` (137 characters sent) are 267 once composed.  That name was
    cut to 255, losing ` Berlin`; it is a 422 naming the field now, and nothing is stored."""
    name = "\u0958" * 130 + " Berlin"
    _, headers = await make_user(database)
    answer = await client.post(API, headers=headers, json={
        "content": "a long name", "relationships": [
            {"source": name, "relation": "is_in", "target": "Germany"}]})
    assert answer.status_code == 422 and "once composed" in answer.text, answer.text
    listed = await client.get(API, headers=headers)
    assert listed.json()["items"] == [], listed.text
    fits = "\u0958" * 120 + " Berlin"  # 247 once composed
    await _add(client, headers, "a long name", [(fits, "is_in", "Germany")])
    found = await client.get(f"{GRAPH}/entities", headers=headers, params={"q": "berlin"})
    assert [e["name"].endswith(" Berlin") for e in found.json()] == [True], found.text


async def test_a_relation_nfc_lengthens_past_the_limit_is_refused(
        client: httpx.AsyncClient, database: Database) -> None:
    """A relation of 100 U+0958 (200 code points once composed) passed the 128-character
    limit and was cut in the graph, the memory's JSON keeping it whole: a 422 naming it,
    nothing stored."""
    _, headers = await make_user(database)
    answer = await client.post(API, headers=headers, json={
        "content": "Ada and Bob", "relationships": [
            {"source": "Ada", "relation": "\u0958" * 100, "target": "Bob"}]})
    assert answer.status_code == 422 and "relation" in answer.text, answer.text
    assert "once composed" in answer.text, answer.text
    assert (await client.get(API, headers=headers)).json()["items"] == []


async def test_an_entity_type_of_invisible_characters_is_the_default_type(
        client: httpx.AsyncClient, database: Database) -> None:
    """An entity type of a zero-width space (or spaces) is cleaned as names and relations
    are: nothing is left, so the entity is a `thing`, not stored with an invisible type
    (a twin of every other type)."""
    _, headers = await make_user(database)
    for kind in ("\u200b", "   ", "\u2060\ufeff", "person\u200b"):
        answer = await client.post(API, headers=headers, json={
            "content": "Ada", "entities": [{"name": f"Ada {len(kind)}", "type": kind}]})
        assert answer.status_code == 201, answer.text
    found = await client.get(f"{GRAPH}/entities", headers=headers, params={"q": "ada"})
    assert sorted(e["entity_type"] for e in found.json()) == [
        "person", "thing", "thing", "thing"], found.text
