"""Persona members (docs/agents.md, "Personas and members"): when an
administrator deletes a persona's owner's account, the persona passes to its member with
role ``owner`` who joined first.  A co-owner who leaves, or is made a viewer, at that same
moment must not become the persona's owner."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from tests.agents.api import Headers, add_member, create_persona, named_user


async def test_coowner_who_left_during_owner_deletion_does_not_inherit(
        client: httpx.AsyncClient, database: Database, admin_headers: Headers) -> None:
    """A co-owner leaves (204) while an administrator deletes the owner's account. A user
    expects that someone who has left the persona is no longer anything in it: the
    account deletion chose the heir before the leave committed and made them the
    persona's owner (owner_id). The side transaction's row lock only holds both requests
    at the interleaving a real race would reach."""
    owner_id, _, owner = await named_user(database, "own")
    co_id, _, co = await named_user(database, "co")
    p = await create_persona(client, owner)
    pid = p["id"]
    await add_member(client, owner, pid, str(co_id), "owner", co)
    async with database.transaction() as s:
        await s.execute(text("SELECT 1 FROM persona_members WHERE persona_id=:p AND user_id=:u "
                             "FOR UPDATE"), {"p": pid, "u": co_id})
        leave = asyncio.create_task(client.delete(f"/api/v1/personas/{pid}/members/{co_id}",
                                                  headers=co))
        await asyncio.sleep(0.7)
        gone = asyncio.create_task(client.delete(f"/api/v1/users/{owner_id}",
                                                 headers=admin_headers))
        await asyncio.sleep(0.7)
    r1 = await asyncio.wait_for(leave, 30)
    r2 = await asyncio.wait_for(gone, 30)
    assert r1.status_code == 204, r1.text
    assert r2.status_code in (200, 204), r2.text
    async with database.transaction() as s:
        now = await s.scalar(text("SELECT owner_id FROM personas WHERE id=:p"), {"p": pid})
    assert now is None or str(now) != str(co_id), "the co-owner who left owns the persona"


async def test_coowner_demoted_during_owner_deletion_does_not_inherit(
        client: httpx.AsyncClient, database: Database, admin_headers: Headers) -> None:
    """The owner makes a co-owner a viewer (200) while an administrator deletes the
    owner's account. Docs: the persona passes to a member *with role owner*; the viewer
    is none, so the persona is deleted (no other owner). The deletion chose the heir
    before the demotion committed and made the viewer its owner."""
    owner_id, _, owner = await named_user(database, "own")
    co_id, _, co = await named_user(database, "co")
    p = await create_persona(client, owner)
    pid = p["id"]
    await add_member(client, owner, pid, str(co_id), "owner", co)
    async with database.transaction() as s:
        await s.execute(text("SELECT 1 FROM persona_members WHERE persona_id=:p AND user_id=:u "
                             "FOR UPDATE"), {"p": pid, "u": co_id})
        demote = asyncio.create_task(client.patch(
            f"/api/v1/personas/{pid}/members/{co_id}", json={"role": "viewer"}, headers=owner))
        await asyncio.sleep(0.7)
        gone = asyncio.create_task(client.delete(f"/api/v1/users/{owner_id}",
                                                 headers=admin_headers))
        await asyncio.sleep(0.7)
    r1 = await asyncio.wait_for(demote, 30)
    r2 = await asyncio.wait_for(gone, 30)
    assert r1.status_code == 200, r1.text
    assert r2.status_code in (200, 204), r2.text
    async with database.transaction() as s:
        now = await s.scalar(text("SELECT owner_id FROM personas WHERE id=:p"), {"p": pid})
    assert now is None or str(now) != str(co_id), "the co-owner made a viewer owns the persona"
