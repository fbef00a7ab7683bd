"""A group whose only member, its creator, left: the creator may still delete it (it
kept its server-unique name and its place among the creator's 100 groups, and was a 404
for everyone but site administrators)."""

from __future__ import annotations

import uuid

import httpx

from roost.db.engine import Database
from tests.support.identity import make_user

G = "/api/v1/groups"


async def test_a_creator_who_left_their_empty_group_can_still_delete_it(
        client: httpx.AsyncClient, database: Database) -> None:
    alice_id, alice = await make_user(database)
    _, bob = await make_user(database)
    name = f"orphan-{uuid.uuid4().hex[:8]}"
    made = await client.post(G, headers=alice, json={"name": name})
    assert made.status_code == 201, made.text
    gid = made.json()["id"]
    left = await client.delete(f"{G}/{gid}/members/{alice_id}", headers=alice)
    assert left.status_code == 204, left.text
    assert (await client.post(G, headers=alice, json={"name": name})).status_code == 409
    assert (await client.delete(f"{G}/{gid}", headers=bob)).status_code == 404  # not theirs
    gone = await client.delete(f"{G}/{gid}", headers=alice)
    assert gone.status_code == 204, gone.text
    again = await client.post(G, headers=alice, json={"name": name})
    assert again.status_code == 201, again.text
