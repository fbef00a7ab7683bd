"""Persona members (docs/agents.md, "Personas and members"): when an
administrator deletes a persona's owner's account, the persona passes to its member with
role ``owner`` who joined first.  A co-owner who leaves, or is made a viewer, at that same
moment must not become the persona's owner."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from tests.agents.api import Headers, add_member, create_persona, named_user


@pytest.mark.parametrize("change", ["leaves", "is made a viewer"])
async def test_a_coowner_who_leaves_or_is_demoted_during_the_owners_deletion_is_no_heir(
        client: httpx.AsyncClient, database: Database, admin_headers: Headers,
        change: str) -> None:
    """A co-owner leaves (204), or the owner makes them a viewer (200), while an
    administrator deletes the owner's account. The deletion chose the heir before that
    change committed and made them the persona's owner (owner_id); the persona passes only
    to a member with role owner, so with none left it is deleted. The side transaction's
    row lock only holds both requests at the interleaving a real race would reach."""
    owner_id, _, owner = await named_user(database, "own")
    co_id, _, co = await named_user(database, "co")
    pid = (await create_persona(client, owner))["id"]
    await add_member(client, owner, pid, str(co_id), "owner", co)
    member = f"/api/v1/personas/{pid}/members/{co_id}"
    async with database.transaction() as s:
        await s.execute(text("SELECT 1 FROM persona_members WHERE persona_id=:p AND user_id=:u "
                             "FOR UPDATE"), {"p": pid, "u": co_id})
        changed = asyncio.create_task(
            client.delete(member, headers=co) if change == "leaves" else
            client.patch(member, json={"role": "viewer"}, headers=owner))
        await asyncio.sleep(0.7)
        gone = asyncio.create_task(client.delete(f"/api/v1/users/{owner_id}",
                                                 headers=admin_headers))
        await asyncio.sleep(0.7)
    r1 = await asyncio.wait_for(changed, 30)
    r2 = await asyncio.wait_for(gone, 30)
    assert r1.status_code in (200, 204), r1.text
    assert r2.status_code in (200, 204), r2.text
    async with database.transaction() as s:
        now = await s.scalar(text("SELECT owner_id FROM personas WHERE id=:p"), {"p": pid})
    assert now is None, f"the co-owner who {change} owns the persona"
