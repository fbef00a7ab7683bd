"""Overlapping operations on a persona and its members: a change that read the persona
or a membership, then waited for its deletion by another transaction, is a 404 (never
a 500 from an UPDATE or DELETE that found no row), and a removal writes one record."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from tests.agents.api import Headers, add_member, create_persona, named_user
from tests.support.races import answer_behind, race_settings
from tests.support.sql import scalar


@pytest.fixture
def test_settings(test_settings: Settings) -> Settings:
    return race_settings(test_settings)


async def _records(database: Database, action: str, persona_id: str) -> int:
    return int(await scalar(database, "SELECT count(*) FROM audit_logs WHERE "
                            "action = :a AND persona_id = :p", a=action, p=persona_id))


async def test_a_change_waiting_on_the_persona_s_deletion_is_a_404(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    _, h = user
    pid = (await create_persona(client, h))["id"]
    resp = await answer_behind(
        database, "DELETE FROM personas WHERE id = :p", {"p": pid}, "personas",
        client.patch(f"/api/v1/personas/{pid}", json={"name": "renamed"}, headers=h))
    assert resp.status_code == 404, resp.text
    assert await _records(database, "persona.update", pid) == 0


@pytest.mark.parametrize("deleted", ["member", "persona"])
async def test_a_role_change_waiting_on_the_member_s_removal_is_a_404(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    deleted: str,
) -> None:
    """The membership removed (or the whole persona deleted) while the role change
    waits: 404, and no role record."""
    _, h = user
    e_id, e_name, editor = await named_user(database, "ed")
    pid = (await create_persona(client, h))["id"]
    await add_member(client, h, pid, e_name, "editor", editor)
    deletion, params = (
        ("DELETE FROM persona_members WHERE persona_id = :p AND user_id = :u",
         {"p": pid, "u": str(e_id)}) if deleted == "member"
        else ("DELETE FROM personas WHERE id = :p", {"p": pid}))
    resp = await answer_behind(
        database, deletion, params, "persona_members",
        client.patch(f"/api/v1/personas/{pid}/members/{e_id}", json={"role": "viewer"},
                     headers=h))
    assert resp.status_code == 404, resp.text
    assert await _records(database, "persona.member.role", pid) == 0


@pytest.mark.parametrize("who", ["owner", "member"])
async def test_a_removal_waiting_on_another_removal_is_a_404_and_no_record(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    who: str,
) -> None:
    """Removed (or leaving) while another transaction removes the membership: 404, and
    no second ``persona.member.remove`` record."""
    _, h = user
    e_id, e_name, editor = await named_user(database, "ed")
    pid = (await create_persona(client, h))["id"]
    await add_member(client, h, pid, e_name, "editor", editor)
    resp = await answer_behind(
        database, "DELETE FROM persona_members WHERE persona_id = :p AND user_id = :u",
        {"p": pid, "u": str(e_id)}, "persona_members",
        client.delete(f"/api/v1/personas/{pid}/members/{e_id}",
                      headers=h if who == "owner" else editor))
    assert resp.status_code == 404, resp.text
    assert await _records(database, "persona.member.remove", pid) == 0


async def test_two_removals_at_once_write_one_record(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    """The owner removes a member as they leave: one 204, one 404, one record."""
    _, h = user
    e_id, e_name, editor = await named_user(database, "ed")
    pid = (await create_persona(client, h))["id"]
    await add_member(client, h, pid, e_name, "editor", editor)
    answers = await asyncio.gather(
        client.delete(f"/api/v1/personas/{pid}/members/{e_id}", headers=h),
        client.delete(f"/api/v1/personas/{pid}/members/{e_id}", headers=editor))
    assert sorted(r.status_code for r in answers) == [204, 404], [r.text for r in answers]
    assert await _records(database, "persona.member.remove", pid) == 1


@pytest.mark.parametrize("inviter", ["creator", "co-owner"])
async def test_invitations_sent_while_the_persona_is_deleted_are_made_or_404(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    inviter: str,
) -> None:
    """An owner invites while the persona is deleted: each invitation is made (202) or
    finds the persona gone (404), never a 5xx nor a 403.  An invitation written after
    the deletion committed was refused by row-level security: 403 "this account may not
    make this change", blaming the owner's rights."""
    _, h = user
    invitees = [(await named_user(database, "in"))[1] for _ in range(3)]
    for _ in range(6):
        pid = (await create_persona(client, h))["id"]
        headers = h
        if inviter == "co-owner":
            _, co_name, headers = await named_user(database, "co")
            await add_member(client, h, pid, co_name, "owner", headers)
        *invited, deleted = await asyncio.gather(
            *(client.post(f"/api/v1/personas/{pid}/members", headers=headers,
                          json={"user": name, "role": "viewer"}) for name in invitees),
            client.delete(f"/api/v1/personas/{pid}", headers=h))
        assert deleted.status_code == 204, deleted.text
        assert {answer.status_code for answer in invited} <= {202, 404}, [
            (answer.status_code, answer.text) for answer in invited]
    assert await scalar(database, "SELECT count(*) FROM persona_invitations") == 0


@pytest.mark.parametrize("granter", ["owner", "editor"])
async def test_tool_grants_made_while_the_persona_is_deleted_are_made_or_404(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    granter: str,
) -> None:
    """Tools granted (PUT /personas/{id}/tools/{tool}) while the persona is deleted: each
    grant is made (200) or finds the persona gone (404), never a 403: a grant written
    after the deletion committed was refused by row-level security, "this account may
    not make this change"."""
    _, h = user
    tools = (await client.get("/api/v1/tools", headers=h, params={"limit": 50})).json()
    tool_ids = [tool["id"] for tool in tools["items"]][:3]
    assert len(tool_ids) == 3, tools
    for _ in range(8):
        pid = (await create_persona(client, h))["id"]
        headers = h
        if granter == "editor":
            _, editor_name, headers = await named_user(database, "ed")
            await add_member(client, h, pid, editor_name, "editor", headers)
        *granted, deleted = await asyncio.gather(
            *(client.put(f"/api/v1/personas/{pid}/tools/{tool_id}", headers=headers, json={})
              for tool_id in tool_ids),
            client.delete(f"/api/v1/personas/{pid}", headers=h))
        assert deleted.status_code == 204, deleted.text
        assert {answer.status_code for answer in granted} <= {200, 404}, [
            (answer.status_code, answer.text) for answer in granted]
    assert await scalar(database, "SELECT count(*) FROM persona_tools") == 0
