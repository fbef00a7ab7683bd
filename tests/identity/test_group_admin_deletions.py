"""Deleting accounts and a group's admins: the group's only admin and the member who would
inherit it, deleted at the same moment, leave the group an admin (it was left with none:
the heir's deletion took no lock on a group it did not administer yet, and deleted the
membership just promoted)."""

from __future__ import annotations

import asyncio

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from tests.support.identity import join_group, make_user
from tests.support.sql import fetch


async def test_last_group_admin_and_heir_deleted_at_once_leave_an_admin(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
) -> None:
    """Both deletions 204, and the group's remaining member is its admin.  The side
    transaction's row lock on the heir's membership holds both requests at the
    interleaving a real race reaches (the admin's deletion about to promote the heir while
    the heir's own deletion starts)."""
    creator_id, creator = await make_user(database)
    heir_id, heir = await make_user(database)
    third_id, third = await make_user(database)
    made = await client.post("/api/v1/groups", json={"name": "herons"}, headers=creator)
    assert made.status_code == 201, made.text
    group = made.json()["id"]
    await join_group(client, creator, group, heir_id, heir)
    await join_group(client, creator, group, third_id, third)
    async with database.transaction() as side:
        await side.execute(text("SELECT 1 FROM user_group_memberships WHERE group_id = :g "
                                "AND user_id = :u FOR UPDATE"), {"g": group, "u": heir_id})
        admin_gone = asyncio.create_task(
            client.delete(f"/api/v1/users/{creator_id}", headers=admin_headers))
        await asyncio.sleep(0.7)
        heir_gone = asyncio.create_task(
            client.delete(f"/api/v1/users/{heir_id}", headers=admin_headers))
        await asyncio.sleep(0.7)
    answers = [await asyncio.wait_for(admin_gone, 30), await asyncio.wait_for(heir_gone, 30)]
    assert [a.status_code for a in answers] == [204, 204], [a.text for a in answers]
    rows = await fetch(database, "SELECT user_id, role FROM user_group_memberships "
                       "WHERE group_id = :g", g=group)
    assert [(r.user_id, r.role) for r in rows] == [(third_id, "admin")], (
        "the group is left with no admin", rows)

