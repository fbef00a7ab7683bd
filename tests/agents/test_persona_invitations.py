"""Joining a persona takes consent (docs/agents.md, "Personas and members"): an owner who
is not a site administrator invites, the invitee accepts or declines, the persona's
owners list and revoke; site administrators and the operator add directly.  An
invitation tells the owner no more about a stranger than a group invitation does (their
username only when the owner may already see the account), and row-level security
(migration 1150) admits a membership only as invited."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text
from sqlalchemy.exc import DBAPIError

from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.principal import Principal
from tests.agents.api import Headers, create_persona, named_user
from tests.support.identity import join_group, join_persona, make_user
from tests.support.sql import fetch, scalar

P = "/api/v1/personas"
MINE = f"{P}/invitations"


async def _invite(client: httpx.AsyncClient, headers: Headers, pid: str, user: str,
                  role: str = "editor") -> dict[str, Any]:
    invited = await client.post(f"{P}/{pid}/members", headers=headers,
                                json={"user": user, "role": role})
    assert invited.status_code == 202, invited.text
    answer: dict[str, Any] = invited.json()
    return answer


async def _members(database: Database, pid: str) -> int:
    return int(await scalar(database, "SELECT count(*) FROM persona_members "
                            "WHERE persona_id = :p", p=uuid.UUID(pid)))


async def _actions(database: Database, pid: str) -> list[str]:
    rows = await fetch(database, "SELECT action FROM audit_logs WHERE resource_id = :p "
                       "ORDER BY seq", p=pid)
    return [r[0] for r in rows]


async def test_an_owner_invites_and_the_invitee_accepts_or_declines(
        client: httpx.AsyncClient, database: Database) -> None:
    olga_id, olga_name, olga = await named_user(database, "olga")
    bob_id, bob_name, bob = await named_user(database, "bob")
    pid = (await create_persona(client, olga, name="Night desk"))["id"]

    invited = await _invite(client, olga, pid, bob_name.upper(), role="owner")
    assert {k: invited[k] for k in ("persona_id", "persona_name", "user_id", "role",
                                    "invited_by", "invited_by_username")} == {
        "persona_id": pid, "persona_name": "Night desk", "user_id": str(bob_id),
        "role": "owner", "invited_by": str(olga_id), "invited_by_username": olga_name}
    # No membership yet: the persona is not bob's to see, nor in his list.
    assert await _members(database, pid) == 0
    assert (await client.get(f"{P}/{pid}", headers=bob)).status_code == 404
    assert (await client.get(P, headers=bob)).json()["items"] == []
    # Inviting again answers the same pending invitation, unchanged.
    again = await _invite(client, olga, pid, str(bob_id), role="viewer")
    assert again["id"] == invited["id"] and again["role"] == "owner"

    # Bob sees it, with the persona's and the inviter's names and his own username.
    mine = (await client.get(MINE, headers=bob)).json()
    assert [(i["id"], i["persona_name"], i["invited_by_username"], i["username"])
            for i in mine["items"]] == [(invited["id"], "Night desk", olga_name, bob_name)]
    assert mine["next_cursor"] is None
    theirs = (await client.get(f"{P}/{pid}/invitations", headers=olga)).json()
    assert [i["id"] for i in theirs["items"]] == [invited["id"]]
    assert (await client.get(MINE, headers=olga)).json()["items"] == []

    # Declined: gone.
    declined = await client.post(f"{MINE}/{invited['id']}/decline", headers=bob)
    assert declined.status_code == 204, declined.text
    assert (await client.get(MINE, headers=bob)).json()["items"] == []
    assert (await client.post(f"{MINE}/{invited['id']}/accept", headers=bob)).status_code == 404
    assert await _members(database, pid) == 0

    # Invited again and accepted: a member with the invited role, the invitation gone.
    second = await _invite(client, olga, pid, str(bob_id), role="viewer")
    assert second["id"] != invited["id"]
    accepted = await client.post(f"{MINE}/{second['id']}/accept", headers=bob)
    assert accepted.status_code == 201, accepted.text
    assert (accepted.json()["user_id"], accepted.json()["role"],
            accepted.json()["username"]) == (str(bob_id), "viewer", bob_name)
    assert (await client.get(f"{P}/{pid}", headers=bob)).json()["my_role"] == "viewer"
    assert (await client.get(f"{P}/{pid}/invitations", headers=olga)).json()["items"] == []
    assert (await client.post(f"{MINE}/{second['id']}/accept", headers=bob)).status_code == 404
    assert (await client.post(f"{MINE}/{second['id']}/decline", headers=bob)).status_code == 404
    # A member already, or the owner: 409.
    member = await client.post(f"{P}/{pid}/members", headers=olga, json={"user": bob_name})
    assert member.status_code == 409, member.text
    owner = await client.post(f"{P}/{pid}/members", headers=olga, json={"user": str(olga_id)})
    assert owner.status_code == 409, owner.text

    assert await _actions(database, pid) == [
        "persona.create", "persona.member_invited", "persona.invitation_declined",
        "persona.member_invited", "persona.invitation_accepted"]


async def test_an_invitation_tells_the_owner_no_more_about_a_stranger_than_a_group_s(
        client: httpx.AsyncClient, database: Database) -> None:
    """An unknown name is a 404, as for groups; a stranger named by e-mail is invited
    without their username coming back, to the owner or in the persona's invitation
    list; someone sharing a group with the owner (whose account the owner sees) is
    named; the members' list shows nobody before they accept."""
    _, olga = await make_user(database)
    stranger_id, stranger_name, stranger = await named_user(database, "stranger")
    peer_id, peer_name, peer = await named_user(database, "peer")
    group = await client.post("/api/v1/groups", headers=olga,
                              json={"name": f"g-{uuid.uuid4().hex[:8]}"})
    await join_group(client, olga, group.json()["id"], peer_id, peer)
    pid = (await create_persona(client, olga))["id"]
    gid = (await client.post("/api/v1/groups", headers=olga,
                             json={"name": f"g-{uuid.uuid4().hex[:8]}"})).json()["id"]

    for name in ("no-such-user", "nobody@example.test", str(uuid.uuid4())):
        for path in (f"{P}/{pid}/members", f"/api/v1/groups/{gid}/members"):
            unknown = await client.post(path, headers=olga, json={"user": name})
            assert unknown.status_code == 404, (path, unknown.text)
            assert name not in unknown.text
    by_mail = await _invite(client, olga, pid, f"{stranger_name}@example.test")
    assert by_mail["user_id"] == str(stranger_id) and by_mail["username"] is None
    assert stranger_name not in str(by_mail)
    listed = (await client.get(f"{P}/{pid}/invitations", headers=olga)).text
    assert stranger_name not in listed
    named = await _invite(client, olga, pid, str(peer_id))
    assert named["username"] == peer_name
    assert (await client.get(f"{P}/{pid}/members", headers=olga)).json() == []
    # The stranger sees their own username and the persona; accepted, the owner sees it.
    mine = (await client.get(MINE, headers=stranger)).json()["items"]
    assert [i["username"] for i in mine] == [stranger_name]
    assert (await client.post(f"{MINE}/{by_mail['id']}/accept", headers=stranger)).status_code == 201
    members = (await client.get(f"{P}/{pid}/members", headers=olga)).json()
    assert [m["username"] for m in members] == [stranger_name]


async def test_site_administrators_and_the_operator_add_members_directly(
        client: httpx.AsyncClient, database: Database, admin_headers: Headers) -> None:
    _, olga = await make_user(database)
    _, root = await make_user(database, admin=True)
    bob_id, bob = await make_user(database)
    carol_id, _ = await make_user(database)
    pid = (await create_persona(client, olga))["id"]
    pending = await _invite(client, olga, pid, str(bob_id))
    # A site administrator adds bob (201): his pending invitation is answered by it.
    added = await client.post(f"{P}/{pid}/members", headers=root,
                              json={"user": str(bob_id), "role": "viewer"})
    assert added.status_code == 201 and added.json()["user_id"] == str(bob_id), added.text
    assert (await client.get(MINE, headers=bob)).json()["items"] == []
    assert (await client.post(f"{MINE}/{pending['id']}/accept", headers=bob)).status_code == 404
    by_operator = await client.post(f"{P}/{pid}/members", headers=admin_headers,
                                    json={"user": str(carol_id), "role": "owner"})
    assert by_operator.status_code == 201 and by_operator.json()["role"] == "owner"
    assert await _members(database, pid) == 2
    # The operator token is no user: it has no invitations of its own.
    assert (await client.get(MINE, headers=admin_headers)).status_code == 403
    assert (await client.post(f"{MINE}/{pending['id']}/accept",
                              headers=admin_headers)).status_code == 403
    # Administrators list a persona's invitations, and revoke them.
    again = await _invite(client, olga, pid, str((await make_user(database))[0]))
    listed = (await client.get(f"{P}/{pid}/invitations", headers=admin_headers)).json()
    assert [i["id"] for i in listed["items"]] == [again["id"]]
    assert (await client.delete(f"{P}/{pid}/invitations/{again['id']}",
                                headers=root)).status_code == 204


async def test_the_persona_s_owners_list_and_revoke_invitations_nobody_else(
        client: httpx.AsyncClient, database: Database) -> None:
    _, olga = await make_user(database)
    co_id, co = await make_user(database)
    editor_id, editor = await make_user(database)
    carol_id, carol = await make_user(database)
    pid = (await create_persona(client, olga))["id"]
    await join_persona(client, olga, pid, co_id, co, role="owner")
    await join_persona(client, olga, pid, editor_id, editor, role="editor")
    invitation = await _invite(client, olga, pid, str(carol_id))
    url = f"{P}/{pid}/invitations/{invitation['id']}"
    # An editor neither lists, invites nor revokes (403); the invitee cannot revoke
    # through the persona (404: not theirs to see); someone else's persona: 404.
    assert (await client.get(f"{P}/{pid}/invitations", headers=editor)).status_code == 403
    assert (await client.delete(url, headers=editor)).status_code == 403
    assert (await client.post(f"{P}/{pid}/members", headers=editor,
                              json={"user": str(carol_id)})).status_code == 403
    assert (await client.delete(url, headers=carol)).status_code == 404
    assert (await client.get(f"{P}/{pid}/invitations", headers=carol)).status_code == 404
    other = (await create_persona(client, editor))["id"]
    assert (await client.delete(f"{P}/{other}/invitations/{invitation['id']}",
                                headers=editor)).status_code == 404
    assert (await client.delete(f"{P}/{pid}/invitations/{uuid.uuid4()}",
                                headers=olga)).status_code == 404
    assert (await client.post(f"{MINE}/{uuid.uuid4()}/accept", headers=carol)).status_code == 404
    # Another's invitation is no invitation to me.
    assert (await client.post(f"{MINE}/{invitation['id']}/accept",
                              headers=editor)).status_code == 404
    assert (await client.post(f"{MINE}/{invitation['id']}/decline",
                              headers=olga)).status_code == 404
    # A member-owner sees the invitation and revokes it: the invitee can no longer accept.
    listed = (await client.get(f"{P}/{pid}/invitations", headers=co)).json()
    assert [i["id"] for i in listed["items"]] == [invitation["id"]]
    assert (await client.delete(url, headers=co)).status_code == 204
    assert (await client.delete(url, headers=olga)).status_code == 404
    assert (await client.post(f"{MINE}/{invitation['id']}/accept",
                              headers=carol)).status_code == 404
    assert await _members(database, pid) == 2
    assert (await _actions(database, pid))[-1] == "persona.invitation_revoked"


async def test_my_invitations_are_paged_newest_first_and_deleting_a_persona_drops_its_own(
        client: httpx.AsyncClient, database: Database) -> None:
    _, olga = await make_user(database)
    bob_id, bob = await make_user(database)
    pids = [(await create_persona(client, olga))["id"] for _ in range(3)]
    made = [await _invite(client, olga, pid, str(bob_id)) for pid in pids]
    first = (await client.get(MINE, headers=bob, params={"limit": 2})).json()
    assert [i["id"] for i in first["items"]] == [made[2]["id"], made[1]["id"]]
    rest = (await client.get(MINE, headers=bob, params={"limit": 2,
                                                        "cursor": first["next_cursor"]})).json()
    assert [i["id"] for i in rest["items"]] == [made[0]["id"]] and rest["next_cursor"] is None
    assert (await client.get(MINE, headers=bob, params={"cursor": "bogus"})).status_code == 400
    assert (await client.get(MINE, headers=bob, params={"limit": 0})).status_code == 422
    assert (await client.delete(f"{P}/{pids[2]}", headers=olga)).status_code == 204
    mine = (await client.get(MINE, headers=bob)).json()["items"]
    assert [i["id"] for i in mine] == [made[1]["id"], made[0]["id"]]
    assert (await client.post(f"{MINE}/{made[2]['id']}/accept", headers=bob)).status_code == 404
    assert await scalar(database, "SELECT count(*) FROM persona_invitations "
                        "WHERE persona_id = :p", p=uuid.UUID(pids[2])) == 0
    # Malformed ids are 4xx answers, never a 500.
    for path in (f"{MINE}/not-an-id/accept", f"{P}/{pids[0]}/invitations/not-an-id"):
        method = "POST" if path.endswith("accept") else "DELETE"
        assert (await client.request(method, path, headers=olga)).status_code == 422


def _as(user_id: uuid.UUID) -> Principal:
    return Principal(user_id=user_id, is_admin=False, kind="session")


async def test_the_database_admits_a_membership_only_by_invitation(
        client: httpx.AsyncClient, database: Database) -> None:
    """Row-level security, the second wall: an owner cannot write someone else's
    membership, nor move one to another account or persona; an invitee inserts their own
    only as invited (not as owner when invited as viewer); invitations are seen by the
    invitee and the persona's owners only."""
    olga_id, olga = await make_user(database)
    bob_id, _ = await make_user(database)
    carol_id, carol = await make_user(database)
    pid = uuid.UUID((await create_persona(client, olga))["id"])
    await _invite(client, olga, str(pid), str(bob_id), role="viewer")
    await join_persona(client, olga, pid, carol_id, carol, role="viewer")

    insert = text("INSERT INTO persona_members (id, user_id, persona_id, role) "
                  "VALUES (:i, :u, :p, :r)")

    def row(user_id: uuid.UUID, role: str) -> dict[str, Any]:
        return {"i": uuid.uuid4(), "u": user_id, "p": pid, "r": role}

    for actor, who, role in ((olga_id, bob_id, "viewer"), (bob_id, bob_id, "owner"),
                             (carol_id, carol_id, "owner")):
        with pytest.raises(DBAPIError, match="row-level security"):
            async with database.transaction() as session:
                await apply_principal(session, _as(actor))
                await session.execute(insert, row(who, role))
    with pytest.raises(DBAPIError, match="keeps its persona and its user"):
        async with database.transaction() as session:  # carol's membership made bob's
            await apply_principal(session, _as(olga_id))
            await session.execute(text("UPDATE persona_members SET user_id = :b "
                                       "WHERE user_id = :c"), {"b": bob_id, "c": carol_id})
    ids = [r[0] for r in await fetch(database, "SELECT id FROM persona_invitations "
                                     "WHERE persona_id = :p", p=pid)]
    assert len(ids) == 1
    async with database.transaction() as session:
        await apply_principal(session, _as(carol_id))
        assert (await session.execute(text("SELECT * FROM persona_invitations"))).all() == []
        gone = await session.execute(text("DELETE FROM persona_invitations"))
        assert gone.rowcount == 0  # type: ignore[attr-defined]
        names = await session.execute(
            text("SELECT * FROM roost_persona_invitation_names(CAST(:ids AS uuid[]))"),
            {"ids": ids})
        assert names.all() == []
    async with database.transaction() as session:
        await apply_principal(session, _as(olga_id))
        assert len((await session.execute(text("SELECT * FROM persona_invitations"))).all()) == 1
    async with database.transaction() as session:  # as invited: admitted
        await apply_principal(session, _as(bob_id))
        assert len((await session.execute(text("SELECT * FROM persona_invitations"))).all()) == 1
        await session.execute(insert, row(bob_id, "viewer"))
    assert await _members(database, str(pid)) == 2


async def test_inviting_one_person_concurrently_answers_one_invitation(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """An owner's double click (or two owners at once) invites the person once; every
    request answers that invitation, none fails."""
    _, owner = await make_user(database)
    persona = await create_persona(client, owner)
    _, name, _ = await named_user(database, "twice")
    answers = await asyncio.gather(*(
        client.post(f"{P}/{persona['id']}/members", headers=owner,
                    json={"user": name, "role": "viewer"}) for _ in range(5)))
    assert [a.status_code for a in answers] == [202] * 5, [a.text for a in answers]
    assert len({a.json()["id"] for a in answers}) == 1
    assert await scalar(database, "SELECT count(*) FROM persona_invitations "
                        "WHERE persona_id = :p", p=uuid.UUID(persona["id"])) == 1


async def test_a_co_owner_s_invitations_are_withdrawn_when_they_stop_being_one(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """Nobody joins on the word of an owner the persona no longer has: a co-owner removed,
    demoted, leaving or whose account is deleted takes their pending invitations with
    them (``persona.invitations_withdrawn``); the other owners' stay."""
    _, olga = await make_user(database)
    pid = (await create_persona(client, olga))["id"]
    co_owners = [await make_user(database) for _ in range(4)]
    for co_id, co in co_owners:
        await join_persona(client, olga, pid, co_id, co, role="owner")
    invitees = [await make_user(database) for _ in co_owners]
    sent = [await _invite(client, co, pid, str(invitee_id), role="owner")
            for (_, co), (invitee_id, _) in zip(co_owners, invitees, strict=True)]
    stay_id, stay = await make_user(database)
    kept = await _invite(client, olga, pid, str(stay_id))

    (removed_id, _), (demoted_id, demoted), (leaving_id, leaving), (deleted_id, _) = co_owners
    steps = (
        client.delete(f"{P}/{pid}/members/{removed_id}", headers=olga),
        client.patch(f"{P}/{pid}/members/{demoted_id}", headers=olga, json={"role": "editor"}),
        client.delete(f"{P}/{pid}/members/{leaving_id}", headers=leaving),
        client.delete(f"/api/v1/users/{deleted_id}", headers=admin_headers),
    )
    for step in steps:
        answer = await step
        assert answer.status_code in (200, 204), answer.text

    for invitation, (_, invitee) in zip(sent, invitees, strict=True):
        accepted = await client.post(f"{MINE}/{invitation['id']}/accept", headers=invitee)
        assert accepted.status_code == 404, accepted.text
        assert (await client.get(f"{P}/{pid}", headers=invitee)).status_code == 404
    pending = (await client.get(f"{P}/{pid}/invitations", headers=olga)).json()["items"]
    assert [i["id"] for i in pending] == [kept["id"]]
    # The demoted co-owner, an editor now, invites nobody either.
    again = await client.post(f"{P}/{pid}/members", headers=demoted,
                              json={"user": str(invitees[1][0]), "role": "owner"})
    assert again.status_code == 403, again.text
    assert (await client.post(f"{MINE}/{kept['id']}/accept", headers=stay)).status_code == 201
    assert (await _actions(database, pid)).count("persona.invitations_withdrawn") == 4


async def test_a_nul_in_the_invited_user_is_a_422_naming_the_field(
        client: httpx.AsyncClient, database: Database) -> None:
    """A NUL in ``user`` is refused as a group's member body refuses it: a 422 naming the
    field, not the database lookup's anonymous 400."""
    _, _, olga = await named_user(database, "olga")
    pid = (await create_persona(client, olga))["id"]
    resp = await client.post(f"{P}/{pid}/members", headers=olga, json={"user": "bob\x00x"})
    assert resp.status_code == 422, resp.text
    assert resp.headers["content-type"].startswith("application/problem+json")
    assert "user" in resp.text and "NUL" in resp.text, resp.text
