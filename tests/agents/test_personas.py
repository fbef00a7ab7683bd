"""Personas and their members through the API: the lifecycle, pagination, who may see
and change what (owners, editors, viewers, other tenants), e-mail addresses, audit, and
bad input."""

from __future__ import annotations

import uuid

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.identity.tenancy import apply_principal
from roost.principal import Principal
from tests.agents.api import (
    Headers,
    add_member,
    audit_rows,
    create_agent,
    create_persona,
    named_user,
)


async def test_persona_lifecycle_and_pagination(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    user_id, headers = user
    created = await create_persona(client, headers, name="  Ada  ", system_prompt="Be terse.",
                                   email_address="Ada@Example.TEST")
    assert created["owner_id"] == str(user_id) and created["my_role"] == "owner"
    assert created["name"] == "Ada" and created["email_address"] == "ada@example.test"
    pid = created["id"]
    for n in range(3):
        await create_persona(client, headers, name=f"p{n}", is_active=n != 1)
    page = (await client.get("/api/v1/personas", params={"limit": 2}, headers=headers)).json()
    assert [p["name"] for p in page["items"]] == ["p2", "p1"] and page["next_cursor"]
    rest = (await client.get("/api/v1/personas", params={"limit": 2, "cursor": page["next_cursor"]},
                             headers=headers)).json()
    assert [p["name"] for p in rest["items"]] == ["p0", "Ada"] and rest["next_cursor"] is None
    inactive = (await client.get("/api/v1/personas", params={"is_active": "false"},
                                 headers=headers)).json()
    assert [p["name"] for p in inactive["items"]] == ["p1"]

    changed = await client.patch(f"/api/v1/personas/{pid}", headers=headers, json={
        "description": "analyst", "default_model": "m-1", "is_active": False,
        "email_address": None})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert (body["description"], body["default_model"], body["is_active"],
            body["email_address"]) == ("analyst", "m-1", False, None)
    assert body["system_prompt"] == "Be terse."  # untouched
    assert (await client.get(f"/api/v1/personas/{pid}", headers=headers)).json() == body

    assert (await client.delete(f"/api/v1/personas/{pid}", headers=headers)).status_code == 204
    assert (await client.get(f"/api/v1/personas/{pid}", headers=headers)).status_code == 404
    actions = [r["action"] for r in await audit_rows(database, "persona.")]
    assert actions.count("persona.create") == 4
    assert actions[-2:] == ["persona.update", "persona.delete"]
    [update] = await audit_rows(database, "persona.update")
    assert update["changes"]["is_active"] == {"before": True, "after": False}
    assert str(update["persona_id"]) == pid


async def test_members_roles_and_what_each_may_do(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    _, owner = user
    editor_id, editor_name, editor = await named_user(database, "editor")
    viewer_id, _, viewer = await named_user(database, "viewer")
    stranger_id, _, stranger = await named_user(database, "stranger")
    pid = (await create_persona(client, owner, name="Team"))["id"]
    added = await add_member(client, owner, pid, editor_name, "editor", editor)
    assert added["user_id"] == str(editor_id) and added["username"] == editor_name
    await add_member(client, owner, pid, str(viewer_id), "viewer", viewer)  # by id

    # Viewers read, never change.
    assert (await client.get(f"/api/v1/personas/{pid}", headers=viewer)).json()["my_role"] == "viewer"
    members = (await client.get(f"/api/v1/personas/{pid}/members", headers=viewer)).json()
    assert {m["role"] for m in members} == {"editor", "viewer"}
    for method, path, body in (
        ("PATCH", f"/api/v1/personas/{pid}", {"name": "x"}),
        ("DELETE", f"/api/v1/personas/{pid}", None),
        ("POST", f"/api/v1/personas/{pid}/members", {"user": str(stranger_id)}),
        ("PATCH", f"/api/v1/personas/{pid}/members/{editor_id}", {"role": "viewer"}),
        ("DELETE", f"/api/v1/personas/{pid}/members/{editor_id}", None),
        ("GET", f"/api/v1/personas/{pid}/secrets", None),
    ):
        resp = await client.request(method, path, json=body, headers=viewer)
        assert resp.status_code == 403, (method, path, resp.text)
        assert "viewer" in resp.json()["detail"]

    # Editors change the persona, never delete it nor manage members.
    renamed = await client.patch(f"/api/v1/personas/{pid}", json={"name": "Team 2"}, headers=editor)
    assert renamed.status_code == 200 and renamed.json()["name"] == "Team 2"
    assert (await client.delete(f"/api/v1/personas/{pid}", headers=editor)).status_code == 403
    assert (await client.post(f"/api/v1/personas/{pid}/members", json={"user": str(stranger_id)},
                              headers=editor)).status_code == 403
    assert (await client.patch(f"/api/v1/personas/{pid}/members/{viewer_id}",
                               json={"role": "editor"}, headers=editor)).status_code == 403

    # Strangers see nothing: 404 everywhere, as if it did not exist.
    for method, path in (("GET", f"/api/v1/personas/{pid}"), ("PATCH", f"/api/v1/personas/{pid}"),
                         ("DELETE", f"/api/v1/personas/{pid}"),
                         ("GET", f"/api/v1/personas/{pid}/members"),
                         ("DELETE", f"/api/v1/personas/{pid}/members/{viewer_id}")):
        resp = await client.request(method, path, json={} if method == "PATCH" else None,
                                    headers=stranger)
        assert resp.status_code == 404, (method, path, resp.text)
    assert (await client.get("/api/v1/personas", headers=stranger)).json()["items"] == []

    # The owner re-roles and removes; a member leaves on their own.
    promoted = await client.patch(f"/api/v1/personas/{pid}/members/{viewer_id}",
                                  json={"role": "owner"}, headers=owner)
    assert promoted.status_code == 200 and promoted.json()["role"] == "owner"
    # A member with role owner manages members too.
    assert (await client.patch(f"/api/v1/personas/{pid}/members/{editor_id}",
                               json={"role": "viewer"}, headers=viewer)).status_code == 200
    assert (await client.delete(f"/api/v1/personas/{pid}/members/{editor_id}",
                                headers=editor)).status_code == 204  # leaves
    assert (await client.get(f"/api/v1/personas/{pid}", headers=editor)).status_code == 404
    assert (await client.delete(f"/api/v1/personas/{pid}/members/{viewer_id}",
                                headers=owner)).status_code == 204
    assert (await client.get(f"/api/v1/personas/{pid}/members", headers=owner)).json() == []
    actions = [r["action"] for r in await audit_rows(database, "persona.") if r["action"]
               .startswith(("persona.member", "persona.invitation"))]
    assert actions == ["persona.member_invited", "persona.invitation_accepted",
                       "persona.member_invited", "persona.invitation_accepted",
                       "persona.member.role", "persona.member.role", "persona.member.remove",
                       "persona.member.remove"]


async def test_member_mistakes(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    owner_id, owner = user
    _, name, member = await named_user(database, "member")
    pid = (await create_persona(client, owner))["id"]
    await add_member(client, owner, pid, name, "viewer", member)
    members = f"/api/v1/personas/{pid}/members"
    again = await client.post(members, json={"user": name, "role": "editor"}, headers=owner)
    assert again.status_code == 409
    self_add = await client.post(members, json={"user": str(owner_id)}, headers=owner)
    assert self_add.status_code == 409 and "owns" in self_add.json()["detail"]
    nobody = await client.post(members, json={"user": "no-such-user"}, headers=owner)
    assert nobody.status_code == 404
    bad_role = await client.post(members, json={"user": name, "role": "admin"}, headers=owner)
    assert bad_role.status_code == 422
    missing = await client.patch(f"{members}/{uuid.uuid4()}", json={"role": "viewer"},
                                 headers=owner)
    assert missing.status_code == 404


async def test_email_addresses_are_unique_across_tenants_and_email_agent_is_the_personas(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    _, other = other_user
    mine = await create_persona(client, headers, email_address="desk@example.test")
    clash = await client.post("/api/v1/personas", json={"name": "x",
                                                        "email_address": "DESK@example.test"},
                              headers=other)
    assert clash.status_code == 409 and "e-mail" in clash.json()["detail"]
    theirs = await create_persona(client, other)
    moved = await client.patch(f"/api/v1/personas/{theirs['id']}",
                               json={"email_address": "Desk@Example.test"}, headers=other)
    assert moved.status_code == 409

    stray = await create_agent(client, headers)  # not bound to the persona
    refused = await client.patch(f"/api/v1/personas/{mine['id']}",
                                 json={"email_agent_id": stray["id"]}, headers=headers)
    assert refused.status_code == 422 and "email_agent_id" in refused.json()["detail"]
    bound = await create_agent(client, headers, persona_id=mine["id"])
    ok = await client.patch(f"/api/v1/personas/{mine['id']}",
                            json={"email_agent_id": bound["id"]}, headers=headers)
    assert ok.status_code == 200 and ok.json()["email_agent_id"] == bound["id"]
    # Deleting the persona deletes its agents, the one answering mail included.
    assert (await client.delete(f"/api/v1/personas/{mine['id']}", headers=headers)).status_code == 204
    assert (await client.get(f"/api/v1/agents/{bound['id']}", headers=headers)).status_code == 404
    assert (await client.get(f"/api/v1/agents/{stray['id']}", headers=headers)).status_code == 200


async def test_bad_input_is_a_4xx_problem(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], admin_headers: Headers,
) -> None:
    _, headers = user
    pid = (await create_persona(client, headers))["id"]
    malformed = await client.post("/api/v1/personas", content=b'{"name": ',
                                  headers={**headers, "Content-Type": "application/json"})
    assert malformed.status_code == 400
    for body in ({"name": ""}, {"name": "   "}, {"name": "\u200b\u200d\ufeff"},  # invisible
                 {"name": "x" * 256}, {"name": 5},
                 {"name": "x", "is_active": 0}, {"name": "x", "unknown": 1},
                 {"name": "x", "email_address": "not-an-address"},
                 {"name": "x", "system_prompt": "p" * 100_001},
                 {"name": "x", "fallback_providers": ["a"] * 11}):
        resp = await client.post("/api/v1/personas", json=body, headers=headers)
        assert resp.status_code == 422, (body, resp.text)
        assert resp.headers["content-type"].startswith("application/problem+json")
        assert "x" * 50 not in resp.text and "not-an-address" not in resp.text
    for body in ({"name": None}, {"is_active": None}, {"system_prompt": None},
                 {"email_agent_id": "nope"}):
        resp = await client.patch(f"/api/v1/personas/{pid}", json=body, headers=headers)
        assert resp.status_code == 422, (body, resp.text)
    # Only a UUID names a persona ({persona_id:uuid}): "invitations" and the like are
    # other routes, anything else no route at all.
    malformed = await client.get("/api/v1/personas/not-a-uuid", headers=headers)
    assert malformed.status_code == 404
    assert malformed.headers["content-type"].startswith("application/problem+json")
    assert (await client.get("/api/v1/personas", params={"cursor": "junk"},
                             headers=headers)).status_code == 400
    assert (await client.get(f"/api/v1/personas/{uuid.uuid4()}", headers=headers)).status_code == 404
    # The operator token is no user: it cannot own a persona (but sees them all).
    operator = await client.post("/api/v1/personas", json={"name": "x"}, headers=admin_headers)
    assert operator.status_code == 403
    assert (await client.get(f"/api/v1/personas/{pid}", headers=admin_headers)).status_code == 200


async def test_row_level_security_hides_other_tenants_personas_in_sql(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    """The second wall: a raw query in the other user's scope sees none of it."""
    _, headers = user
    other_id, _ = other_user
    pid = (await create_persona(client, headers))["id"]
    await create_agent(client, headers, persona_id=pid)
    await client.put(f"/api/v1/personas/{pid}/secrets", headers=headers,
                     json={"secret_type": "api_token", "key_name": "K", "value": "v"})
    async with database.transaction() as session:
        await apply_principal(session, Principal(user_id=other_id, is_admin=False, kind="system"))
        counts = (await session.execute(text(
            "SELECT (SELECT count(*) FROM personas), (SELECT count(*) FROM agents), "
            "(SELECT count(*) FROM secrets), (SELECT count(*) FROM persona_members)"))).one()
    assert tuple(counts) == (0, 0, 0, 0)


async def test_an_email_address_that_grows_when_lower_cased_is_a_422_naming_the_field(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """An address valid as sent (320 chars max) but longer once lower-cased: 422 naming
    email_address, not a generic 400 from the database."""
    _, headers = user
    address = "a@" + "\u0130" * 300 + ".te"  # 305 characters; "İ".lower() is 2 characters
    assert len(address) <= 320
    resp = await client.post("/api/v1/personas", headers=headers,
                             json={"name": "Desk", "email_address": address})
    assert resp.status_code == 422, resp.text
    assert "email_address" in resp.text
    pid = (await create_persona(client, headers))["id"]
    patched = await client.patch(f"/api/v1/personas/{pid}", headers=headers,
                                 json={"email_address": address})
    assert patched.status_code == 422, patched.text


async def test_a_nul_in_a_persona_s_text_is_a_422_naming_the_field(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """A persona's text is stored as text (and jsonb), which holds no NUL: a 422 naming
    the field (on create and on change), not the database's anonymous 400; nothing
    stored or changed."""
    _, headers = user
    persona = await create_persona(client, headers, description="kept")
    for field, value in (("description", "a\x00"), ("system_prompt", "x\x00y"),
                         ("default_model", "m\x00"), ("default_provider", "p\x00"),
                         ("fallback_providers", ["f\x00"])):
        created = await client.post("/api/v1/personas", headers=headers,
                                    json={"name": "P", field: value})
        changed = await client.patch(f"/api/v1/personas/{persona['id']}", headers=headers,
                                     json={field: value})
        for resp in (created, changed):
            assert resp.status_code == 422 and field in resp.text, (field, resp.text)
    listed = (await client.get("/api/v1/personas", headers=headers)).json()["items"]
    assert [p["id"] for p in listed] == [persona["id"]]
    assert (await client.get(f"/api/v1/personas/{persona['id']}",
                             headers=headers)).json() == persona


async def test_the_owner_leaving_or_removed_is_a_409(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    admin_headers: Headers,
) -> None:
    """The persona's owner (``owner_id``) is no member row and ownership does not move:
    leaving, being removed (by a co-owner, an administrator) or being re-roled is a 409
    saying so, not "not a member" (404); nothing changes."""
    owner_id, owner = user
    co_id, co_name, co = await named_user(database, "co")
    pid = (await create_persona(client, owner))["id"]
    await add_member(client, owner, pid, co_name, "owner", co)
    left = await client.delete(f"/api/v1/personas/{pid}/members/{owner_id}", headers=owner)
    assert left.status_code == 409, left.text
    assert "cannot leave it; delete it instead" in left.json()["detail"]
    for headers in (co, admin_headers):
        removed = await client.delete(f"/api/v1/personas/{pid}/members/{owner_id}",
                                      headers=headers)
        assert removed.status_code == 409, removed.text
        for who in (owner, headers):
            demoted = await client.patch(f"/api/v1/personas/{pid}/members/{owner_id}",
                                         json={"role": "viewer"}, headers=who)
            assert demoted.status_code == 409, demoted.text
            assert "ownership does not move" in demoted.json()["detail"]
    persona = (await client.get(f"/api/v1/personas/{pid}", headers=owner)).json()
    assert (persona["owner_id"], persona["my_role"]) == (str(owner_id), "owner")
    members = (await client.get(f"/api/v1/personas/{pid}/members", headers=owner)).json()
    assert [(m["user_id"], m["role"]) for m in members] == [(str(co_id), "owner")]
    assert await audit_rows(database, "persona.member.re") == []


@pytest.mark.parametrize("address", [
    "a\x01b@example.test", "a\x1b[2Jb@example.test", "a\u0085b@example.test",
    "a\u2028b@example.test", "a\u2029b@example.test", "a\x7fb@example.test"])
async def test_an_email_address_with_a_control_character_is_a_422_naming_the_field(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], address: str,
) -> None:
    """Mail never reaches such an address and it would go raw into a From header: 422
    naming email_address, on create and on change; nothing stored."""
    _, headers = user
    created = await client.post("/api/v1/personas", headers=headers,
                                json={"name": "x", "email_address": address})
    assert created.status_code == 422 and "email_address" in created.text, created.text
    persona = await create_persona(client, headers)
    changed = await client.patch(f"/api/v1/personas/{persona['id']}", headers=headers,
                                 json={"email_address": address})
    assert changed.status_code == 422 and "email_address" in changed.text, changed.text
    assert (await client.get(f"/api/v1/personas/{persona['id']}",
                             headers=headers)).json() == persona


@pytest.mark.parametrize("char", ["\u200b", "\u202e", "\u00ad", "\ufeff"])
async def test_an_invisible_format_character_in_an_email_address_is_refused(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers], char: str,
) -> None:
    """A persona address that looks exactly like another tenant's ("desk@example.test"
    with a zero-width space, a bidi override, a soft hyphen or a BOM inside) is a 422, on
    create and on edit: it was stored as a second, identical-looking address."""
    _, headers = user
    _, other = other_user
    await create_persona(client, headers, email_address="desk@example.test")
    spoof = await client.post("/api/v1/personas", headers=other, json={
        "name": "x", "email_address": f"de{char}sk@example.test"})
    assert spoof.status_code == 422, spoof.text
    theirs = await create_persona(client, other)
    patched = await client.patch(f"/api/v1/personas/{theirs['id']}", headers=other,
                                 json={"email_address": f"desk@example{char}.test"})
    assert patched.status_code == 422, patched.text


