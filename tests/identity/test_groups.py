"""Groups and memberships (point 7)."""

from __future__ import annotations

import unicodedata
import uuid

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.pagination import encode_cursor
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
    mine = (await client.get("/api/v1/groups", headers=bob)).json()["items"]
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
    assert (await client.get("/api/v1/groups", headers=bob)).json()["items"] == []

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
    every = (await client.get("/api/v1/groups?all=true", headers=admin_headers)).json()["items"]
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


async def test_a_name_typed_decomposed_is_the_same_name_as_the_composed_one(
        client: httpx.AsyncClient, database: Database) -> None:
    """Names are composed (NFC) before they are compared: "Équipe" typed with a combining
    accent is the taken name (409), not a second group that looks identical, and an
    operator's ``--group`` finds the group either way."""
    _, alice = await make_user(database)
    _, mallory = await make_user(database)
    made = await client.post("/api/v1/groups", headers=alice, json={"name": "Équipe"})
    assert made.status_code == 201, made.text
    twin = await client.post("/api/v1/groups", headers=mallory,
                             json={"name": unicodedata.normalize("NFD", " Équipe ")})
    assert twin.status_code == 409, twin.text
    other = await client.post("/api/v1/groups", headers=mallory,
                              json={"name": unicodedata.normalize("NFD", "Café")})
    assert other.status_code == 201 and other.json()["name"] == "Café", other.text
    renamed = await client.patch(f"/api/v1/groups/{other.json()['id']}", headers=mallory,
                                 json={"name": unicodedata.normalize("NFD", "Équipe")})
    assert renamed.status_code == 409, renamed.text


@pytest.mark.parametrize("name", [
    "evil\nadmins", "red\x1b[31mteam", "abc\u202egnp.exe", "\u200b\u200b", "a\u200bdmins",
    "line\u2028break", "c1\x9bcontrol", "\u3164", "\u115f\u1160", "\uffa0", "\u034f",
    "fin\u3164ance",
])
async def test_a_name_with_control_or_invisible_characters_is_a_422_naming_it(
        client: httpx.AsyncClient, database: Database, name: str) -> None:
    """A group's name is shown to the people it invites: a line break, a terminal escape,
    a bidirectional override, zero-width characters, Hangul fillers or a grapheme joiner
    (a name reading as another, or as nothing) are refused, on creation and on renaming."""
    _, alice = await make_user(database)
    made = await client.post("/api/v1/groups", headers=alice, json={"name": name})
    assert made.status_code == 422 and "name" in made.text, made.text
    ok = await client.post("/api/v1/groups", headers=alice, json={"name": "Équipe 🦆"})
    assert ok.status_code == 201, ok.text
    renamed = await client.patch(f"/api/v1/groups/{ok.json()['id']}", headers=alice,
                                 json={"name": name})
    assert renamed.status_code == 422 and "name" in renamed.text, renamed.text
    listed = (await client.get("/api/v1/groups", headers=alice)).json()["items"]
    assert [g["name"] for g in listed] == ["Équipe 🦆"]


async def test_a_name_ending_in_characters_that_show_nothing_is_the_name_without_them(
        client: httpx.AsyncClient, database: Database) -> None:
    """Another user's group named like an existing one plus a trailing Hangul filler read
    exactly the same to an invitee (201, a second group): the ends are stripped, so it
    is the existing name, a 409."""
    _, alice = await make_user(database)
    _, eve = await make_user(database)
    made = await client.post("/api/v1/groups", headers=alice, json={"name": "finance"})
    assert made.status_code == 201, made.text
    for twin in ("finance\u3164", "\uffa0finance", "finance\u200b"):
        answer = await client.post("/api/v1/groups", headers=eve, json={"name": twin})
        assert answer.status_code == 409, answer.text


async def test_the_group_list_is_paged_by_name_for_a_user_in_many_groups(
        client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str]) -> None:
    """GET /api/v1/groups answers a page (``limit``, ``cursor``) like the other lists, in
    (name, id) order: a user in 1,000 groups reads them 50 at a time, each once; so does
    an administrator's ``?all=true``."""
    uid, alice = await make_user(database)
    async with database.transaction() as s:
        await s.execute(text(
            "WITH g AS (INSERT INTO groups (id, name, created_by, created_at, updated_at) "
            "SELECT gen_random_uuid(), 'bulk-' || lpad(i::text, 4, '0'), :u, now(), now() "
            "FROM generate_series(1, 1000) i RETURNING id) "
            "INSERT INTO user_group_memberships (id, user_id, group_id, role, joined_at) "
            "SELECT gen_random_uuid(), :u, id, 'admin', now() FROM g"), {"u": uid})
    first = await client.get("/api/v1/groups?limit=50", headers=alice)
    assert first.status_code == 200, first.text
    assert len(first.json()["items"]) == 50 and first.json()["next_cursor"], first.text
    for headers, query in ((alice, ""), (admin_headers, "&all=true")):
        names: list[str] = []
        cursor = None
        while True:
            url = f"/api/v1/groups?limit=300{query}" + (f"&cursor={cursor}" if cursor else "")
            page = (await client.get(url, headers=headers)).json()
            assert len(page["items"]) <= 300
            names += [g["name"] for g in page["items"]]
            cursor = page["next_cursor"]
            if cursor is None:
                break
        assert names == [f"bulk-{i:04d}" for i in range(1, 1001)]
    # A cursor the server did not issue is a 400, never a database error.
    some_id = str(uuid.uuid4())
    for forged in ("!!", encode_cursor({"n": 1, "id": some_id}), encode_cursor({"id": some_id}),
                   encode_cursor({"n": "a\x00", "id": some_id}), encode_cursor({"n": "bulk"}),
                   encode_cursor({"n": "x" * 129, "id": some_id})):
        bad = await client.get("/api/v1/groups", params={"cursor": forged}, headers=alice)
        assert bad.status_code == 400, bad.text


async def test_an_account_may_have_created_at_most_100_groups(
        client: httpx.AsyncClient, database: Database) -> None:
    """Each group holds a name unique across the server: an account (not a site
    administrator) that created 100 groups still existing gets a 400 for the next one,
    even after leaving them; deleting one makes room."""
    uid, alice = await make_user(database)
    async with database.transaction() as s:
        await s.execute(text(
            "INSERT INTO groups (id, name, created_by, created_at, updated_at) "
            "SELECT gen_random_uuid(), 'squat-' || i, :u, now(), now() "
            "FROM generate_series(1, 99) i"), {"u": uid})
    last = await client.post("/api/v1/groups", headers=alice, json={"name": "the hundredth"})
    assert last.status_code == 201, last.text
    over = await client.post("/api/v1/groups", headers=alice, json={"name": "one more"})
    assert over.status_code == 400 and "at most 100" in over.json()["detail"], over.text
    assert (await client.delete(f"/api/v1/groups/{last.json()['id']}",
                                headers=alice)).status_code == 204
    again = await client.post("/api/v1/groups", headers=alice, json={"name": "one more"})
    assert again.status_code == 201, again.text
    admin_id, admin = await make_user(database, admin=True)
    async with database.transaction() as s:
        await s.execute(text("UPDATE groups SET created_by = :a WHERE created_by = :u"),
                        {"a": admin_id, "u": uid})
    unbounded = await client.post("/api/v1/groups", headers=admin, json={"name": "admins'"})
    assert unbounded.status_code == 201, unbounded.text


async def test_a_nul_in_the_member_reference_is_a_422_naming_it(
        client: httpx.AsyncClient, database: Database) -> None:
    _, alice = await make_user(database)
    made = await client.post("/api/v1/groups", headers=alice, json={"name": "nul"})
    resp = await client.post(f"/api/v1/groups/{made.json()['id']}/members", headers=alice,
                             json={"user": "bo\x00b"})
    assert resp.status_code == 422 and "user" in resp.text, resp.text
