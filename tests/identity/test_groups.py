"""Groups and memberships (point 7)."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from tests.support.identity import join_group, make_user


async def test_group_lifecycle_and_roles(client: httpx.AsyncClient, database: Database) -> None:
    alice_id, alice = await make_user(database, username="alice")
    bob_id, bob = await make_user(database, username="bob")
    carol_id, carol = await make_user(database, username="carol")

    made = await client.post("/api/v1/groups", headers=alice, json={"name": "Research",
                                                                     "description": "R&D"})
    assert made.status_code == 201 and made.json()["my_role"] == "admin"
    gid = made.json()["id"]
    dup = await client.post("/api/v1/groups", headers=bob, json={"name": "Research"})
    assert dup.status_code == 409

    # Outsiders cannot see the group at all.
    assert (await client.get(f"/api/v1/groups/{gid}", headers=bob)).status_code == 404
    assert (await client.get(f"/api/v1/groups/{gid}/members", headers=bob)).status_code == 404

    # A group admin invites (202); the membership exists once bob accepts.
    invited = await client.post(f"/api/v1/groups/{gid}/members", headers=alice,
                                json={"user": "BOB"})
    assert invited.status_code == 202 and invited.json()["username"] == "bob", invited.text
    assert invited.json()["role"] == "member"
    assert (await client.get(f"/api/v1/groups/{gid}", headers=bob)).status_code == 404
    accepted = await client.post(
        f"/api/v1/groups/invitations/{invited.json()['id']}/accept", headers=bob)
    assert accepted.status_code == 201 and accepted.json()["username"] == "bob"
    assert accepted.json()["role"] == "member"
    again = await client.post(f"/api/v1/groups/{gid}/members", headers=alice,
                              json={"user": str(bob_id)})
    assert again.status_code == 409
    unknown = await client.post(f"/api/v1/groups/{gid}/members", headers=alice,
                                json={"user": "nobody"})
    assert unknown.status_code == 404

    # A member sees the group and its members but cannot manage it.
    mine = (await client.get("/api/v1/groups", headers=bob)).json()
    assert [(g["name"], g["my_role"]) for g in mine] == [("Research", "member")]
    members = (await client.get(f"/api/v1/groups/{gid}/members", headers=bob)).json()
    assert [(m["username"], m["role"]) for m in members] == [("alice", "admin"), ("bob", "member")]
    assert (await client.patch(f"/api/v1/groups/{gid}", headers=bob,
                               json={"name": "Mine"})).status_code == 403
    assert (await client.post(f"/api/v1/groups/{gid}/members", headers=bob,
                              json={"user": "carol"})).status_code == 403

    # Promotion makes bob a manager.
    promoted = await client.patch(f"/api/v1/groups/{gid}/members/{bob_id}", headers=alice,
                                  json={"role": "admin"})
    assert promoted.json()["role"] == "admin"
    await join_group(client, bob, gid, "carol@example.test", carol)
    renamed = await client.patch(f"/api/v1/groups/{gid}", headers=bob,
                                 json={"name": "Research Lab"})
    assert renamed.json()["name"] == "Research Lab" and renamed.json()["description"] == "R&D"

    # The last admin cannot walk away while others remain; members may leave.
    await client.patch(f"/api/v1/groups/{gid}/members/{bob_id}", headers=alice,
                       json={"role": "member"})
    stuck = await client.delete(f"/api/v1/groups/{gid}/members/{alice_id}", headers=alice)
    assert stuck.status_code == 409
    demote_last = await client.patch(f"/api/v1/groups/{gid}/members/{alice_id}", headers=alice,
                                     json={"role": "member"})
    assert demote_last.status_code == 409
    assert (await client.delete(f"/api/v1/groups/{gid}/members/{carol_id}",
                                headers=carol)).status_code == 204
    assert (await client.get(f"/api/v1/groups/{gid}", headers=carol)).status_code == 404

    assert (await client.delete(f"/api/v1/groups/{gid}", headers=bob)).status_code == 403
    assert (await client.delete(f"/api/v1/groups/{gid}", headers=alice)).status_code == 204
    assert (await client.get("/api/v1/groups", headers=bob)).json() == []

    async with database.transaction() as session:
        actions = set((await session.scalars(text("SELECT action FROM audit_logs"))).all())
    assert {"group.created", "group.member_invited", "group.invitation_accepted",
            "group.member_role_changed", "group.updated", "group.member_left",
            "group.deleted"} <= actions


async def test_admins_see_every_group(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]
) -> None:
    _, alice = await make_user(database, username="alice")
    _, bob = await make_user(database, username="bob")
    await client.post("/api/v1/groups", headers=alice, json={"name": "A"})
    await client.post("/api/v1/groups", headers=bob, json={"name": "B"})
    every = (await client.get("/api/v1/groups?all=true", headers=admin_headers)).json()
    assert sorted(g["name"] for g in every) == ["A", "B"]
    assert (await client.get("/api/v1/groups?all=true", headers=alice)).status_code == 403
    # The operator token is good credentials but no user to own a group: 403, not 401
    # (a 401 would send clients to sign in again), as personas and documents answer.
    debate = {"topic": "t", "positions": ["a", "b"],
              "participants": [{"id": "x", "model": "m"}, {"id": "y", "model": "m"}]}
    for path, body in (("/api/v1/groups", {"name": "Ops"}), ("/api/v1/personas", {"name": "Ops"}),
                       ("/api/v1/workflows", {"name": "Ops"}), ("/api/v1/calendars", {"name": "Ops"}),
                       ("/api/v1/projects", {"name": "Ops"}), ("/api/v1/tasks-board", {"title": "Ops"}),
                       ("/api/v1/debates", debate)):
        as_operator = await client.post(path, headers=admin_headers, json=body)
        assert as_operator.status_code == 403, (path, as_operator.text)
        assert "operator token" in as_operator.json()["detail"]
    _, admin = await make_user(database, admin=True, username="root2")
    gid = every[0]["id"]
    assert (await client.get(f"/api/v1/groups/{gid}/members", headers=admin)).status_code == 200


async def test_a_name_is_stripped_and_its_limit_holds_for_what_was_sent(
        client: httpx.AsyncClient, database: Database) -> None:
    """128 characters at most, as the OpenAPI document says of the value sent: surrounding
    spaces are stripped from what is stored, not discounted from the limit."""
    _, alice = await make_user(database, username="alice")
    made = await client.post("/api/v1/groups", headers=alice, json={"name": "  Lab  "})
    assert made.status_code == 201 and made.json()["name"] == "Lab"
    fits = await client.post("/api/v1/groups", headers=alice, json={"name": "x" * 128})
    assert fits.status_code == 201, fits.text
    for name in (" " + "y" * 128, "z" * 129):
        too_long = await client.post("/api/v1/groups", headers=alice, json={"name": name})
        assert too_long.status_code == 422, too_long.text
        renamed = await client.patch(f"/api/v1/groups/{made.json()['id']}", headers=alice,
                                     json={"name": name})
        assert renamed.status_code == 422, renamed.text
