"""Persona roles, the persona and its members (docs/agents.md "Personas and members"):
members and administrators read it, owners and editors change it, only owners delete it
and manage members, nobody escalates their own role or moves ownership, anyone else gets
the 404 of an unknown id, and a removed member loses everything on the next request.
``email_agent_id`` names only an agent of the persona, refused alike whatever it is."""

from __future__ import annotations

import uuid

import httpx

from roost.db.engine import Database
from tests.agents.api import Headers, create_agent, create_persona, named_user
from tests.agents.roles import Checker, make_cast

NAME = "Falcon"  # of the persona: in no answer to those who may not see it


async def test_members_and_administrators_read_a_persona_others_get_an_unknown_id_s_404(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    my_role = {c.owner: "owner", c.co_owner: "owner", c.editor: "editor", c.viewer: "viewer",
               c.admin: None, c.operator: None}
    for actor in c.all():
        one = await client.get(f"/api/v1/personas/{c.pid}", headers=actor.headers)
        members = await client.get(f"/api/v1/personas/{c.pid}/members", headers=actor.headers)
        listed = await client.get("/api/v1/personas", headers=actor.headers)
        ids = [p["id"] for p in listed.json().get("items", [])]
        if actor in my_role:
            chk.check("GET /personas/{id}", actor, one, 200)
            chk.check("GET /personas/{id}/members", actor, members, 200)
            chk.that(c.pid in ids, f"GET /personas as {actor.name}: persona missing")
            if one.status_code == 200:
                chk.that(one.json()["my_role"] == my_role[actor],
                         f"my_role as {actor.name}: {one.json()['my_role']}")
        else:
            chk.check("GET /personas/{id}", actor, one, 404, leak=(NAME, "confidential"))
            chk.check("GET /personas/{id}/members", actor, members, 404, leak=(NAME,))
            chk.that(c.pid not in ids, f"GET /personas as {actor.name}: lists another's persona")
            chk.that(NAME not in listed.text, f"GET /personas as {actor.name}: leaks")
    # An id that does not exist answers exactly like one the caller may not see.
    ghost = await client.get(f"/api/v1/personas/{uuid.uuid4()}", headers=c.outsider.headers)
    seen = await client.get(f"/api/v1/personas/{c.pid}", headers=c.outsider.headers)
    chk.that(ghost.status_code == seen.status_code
             and ghost.json()["detail"].replace(str(ghost.url).rsplit("/", 1)[1], "X")
             == seen.json()["detail"].replace(c.pid, "X"),
             f"404 of an unseen persona differs from an unknown one: {seen.text} / {ghost.text}")
    chk.done()


async def test_owners_and_editors_change_a_persona_and_only_owners_delete_it(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    expected_patch = {c.owner: 200, c.co_owner: 200, c.editor: 200, c.viewer: 403,
                      c.outsider: 404, c.group_peer: 404, c.admin: 200, c.operator: 200}
    for actor, code in expected_patch.items():
        resp = await client.patch(f"/api/v1/personas/{c.pid}", headers=actor.headers,
                                  json={"description": f"by {actor.name}"})
        chk.check("PATCH /personas/{id}", actor, resp, code, leak=(NAME,))
    # No field moves ownership (StrictInput: unknown field).
    for field in ("owner_id", "my_role", "container_id"):
        resp = await client.patch(f"/api/v1/personas/{c.pid}", headers=c.editor.headers,
                                  json={field: str(c.editor.id)})
        chk.check(f"PATCH /personas/{{id}} {{{field}}}", c.editor, resp, 422)
    owner_now = (await client.get(f"/api/v1/personas/{c.pid}", headers=c.owner.headers)).json()
    chk.that(owner_now["owner_id"] == str(c.owner.id), "owner_id moved")

    for actor, code in ((c.editor, 403), (c.viewer, 403), (c.outsider, 404),
                        (c.group_peer, 404)):
        resp = await client.delete(f"/api/v1/personas/{c.pid}", headers=actor.headers)
        chk.check("DELETE /personas/{id}", actor, resp, code, leak=(NAME,))
    # A member with role owner deletes (docs: "owners").
    resp = await client.delete(f"/api/v1/personas/{c.pid}", headers=c.co_owner.headers)
    chk.check("DELETE /personas/{id}", c.co_owner, resp, 204)
    # Administrators may do everything.
    other = await create_persona(client, c.outsider.headers)
    resp = await client.delete(f"/api/v1/personas/{other['id']}", headers=c.admin.headers)
    chk.check("DELETE /personas/{id}", c.admin, resp, 204)
    chk.done()


async def test_only_owners_manage_members_and_nobody_escalates_a_role(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    members = f"/api/v1/personas/{c.pid}/members"
    newbie_id, newbie_name, newbie = await named_user(database, "newbie")

    for actor, code in ((c.editor, 403), (c.viewer, 403), (c.outsider, 404),
                        (c.group_peer, 404)):
        resp = await client.post(members, json={"user": newbie_name, "role": "viewer"},
                                 headers=actor.headers)
        chk.check("POST /personas/{id}/members", actor, resp, code, leak=(NAME,))
    # Self-escalation, and escalating others, by non-owners.
    for actor, target, role in ((c.editor, c.editor, "owner"), (c.viewer, c.viewer, "editor"),
                                (c.viewer, c.viewer, "owner"), (c.editor, c.viewer, "editor")):
        resp = await client.patch(f"{members}/{target.id}", json={"role": role},
                                  headers=actor.headers)
        chk.check(f"PATCH /members/{{{target.name}}} role={role}", actor, resp, 403)
    for actor, code in ((c.outsider, 404), (c.group_peer, 404)):
        resp = await client.patch(f"{members}/{c.viewer.id}", json={"role": "owner"},
                                  headers=actor.headers)
        chk.check("PATCH /members/{viewer}", actor, resp, code)
    # Removing others: only owners.
    for actor, code in ((c.editor, 403), (c.viewer, 403), (c.outsider, 404),
                        (c.group_peer, 404)):
        resp = await client.delete(f"{members}/{c.co_owner.id}", headers=actor.headers)
        chk.check("DELETE /members/{co_owner}", actor, resp, code)
    # The owner (owner_id) is no member row and ownership does not move: nobody re-roles
    # or removes them (409, as adding them is).
    for actor in (c.co_owner, c.admin):
        resp = await client.patch(f"{members}/{c.owner.id}", json={"role": "viewer"},
                                  headers=actor.headers)
        chk.check("PATCH /members/{owner_id}", actor, resp, 409)
        resp = await client.delete(f"{members}/{c.owner.id}", headers=actor.headers)
        chk.check("DELETE /members/{owner_id}", actor, resp, 409)
    resp = await client.post(members, json={"user": str(c.owner.id), "role": "viewer"},
                             headers=c.co_owner.headers)
    chk.check("POST /members {owner_id}", c.co_owner, resp, 409)
    # A group cannot be made a member (persona_members holds users).
    groups = (await client.get("/api/v1/groups", headers=c.owner.headers)).json()["items"]
    group_id = groups[0]["id"]
    resp = await client.post(members, json={"user": group_id, "role": "viewer"},
                             headers=c.owner.headers)
    chk.check("POST /members {group id}", c.owner, resp, 404)
    # A member-owner and an administrator manage members (an owner invites: the
    # newbie joins on accepting).
    resp = await client.post(members, json={"user": newbie_name, "role": "viewer"},
                             headers=c.co_owner.headers)
    chk.check("POST /personas/{id}/members", c.co_owner, resp, 202)
    resp = await client.post(f"/api/v1/personas/invitations/{resp.json()['id']}/accept",
                             headers=newbie)
    chk.check("POST /personas/invitations/{id}/accept", "newbie", resp, 201)
    resp = await client.patch(f"{members}/{newbie_id}", json={"role": "editor"},
                              headers=c.admin.headers)
    chk.check("PATCH /members/{newbie}", c.admin, resp, 200)
    resp = await client.patch(f"{members}/{newbie_id}", json={"role": "viewer"},
                              headers=c.operator.headers)
    chk.check("PATCH /members/{newbie}", c.operator, resp, 200)
    # Final state: nobody escalated.
    roles = {m["user_id"]: m["role"] for m in (await client.get(
        members, headers=c.owner.headers)).json()}
    chk.that(roles.get(str(c.editor.id)) == "editor", f"editor's role now {roles}")
    chk.that(roles.get(str(c.viewer.id)) == "viewer", f"viewer's role now {roles}")
    chk.that(str(c.outsider.id) not in roles and str(c.group_peer.id) not in roles,
             f"an outsider became a member: {roles}")
    chk.done()


async def test_a_removed_member_loses_access_on_the_next_request(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    # Warm up: the editor is a member, the viewer too.
    for actor in (c.editor, c.viewer):
        chk.check("GET /personas/{id} (before)", actor,
                  await client.get(f"/api/v1/personas/{c.pid}", headers=actor.headers), 200)
    removed = await client.delete(f"/api/v1/personas/{c.pid}/members/{c.editor.id}",
                                  headers=c.owner.headers)
    chk.check("DELETE /members/{editor}", c.owner, removed, 204)
    left = await client.delete(f"/api/v1/personas/{c.pid}/members/{c.viewer.id}",
                               headers=c.viewer.headers)
    chk.check("DELETE /members/{self}", c.viewer, left, 204)
    for actor in (c.editor, c.viewer):
        for method, path, body in (
            ("GET", f"/api/v1/personas/{c.pid}", None),
            ("PATCH", f"/api/v1/personas/{c.pid}", {"name": "hijacked"}),
            ("GET", f"/api/v1/personas/{c.pid}/members", None),
            ("GET", f"/api/v1/personas/{c.pid}/secrets", None),
            ("PUT", f"/api/v1/personas/{c.pid}/secrets",
             {"secret_type": "other", "key_name": "X", "value": "v"}),
            ("GET", f"/api/v1/personas/{c.pid}/tools", None),
            ("GET", f"/api/v1/personas/{c.pid}/emails", None),
            ("GET", f"/api/v1/personas/{c.pid}/health", None),
            ("DELETE", f"/api/v1/personas/{c.pid}/members/{c.co_owner.id}", None),
        ):
            resp = await client.request(method, path, json=body, headers=actor.headers)
            chk.check(f"{method} {path.replace(c.pid, '{id}')} (after removal)", actor, resp,
                      404, leak=(NAME,))
        listed = await client.get("/api/v1/personas", headers=actor.headers)
        chk.that(c.pid not in listed.text, f"GET /personas after removal as {actor.name}")
        agents = await client.get("/api/v1/agents", params={"persona_id": c.pid},
                                  headers=actor.headers)
        chk.that(agents.json()["items"] == [],
                 f"GET /agents?persona_id after removal as {actor.name}: {agents.text[:200]}")
    chk.done()


async def test_email_agent_id_only_names_an_agent_of_the_persona(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    theirs = await create_persona(client, c.outsider.headers)
    foreign_bound = await create_agent(client, c.outsider.headers, persona_id=theirs["id"])
    foreign_public = await create_agent(client, c.outsider.headers, persona_id=theirs["id"],
                                        is_public=True)
    foreign_loose = await create_agent(client, c.outsider.headers, is_public=True)
    editors_own = await create_agent(client, c.editor.headers)  # not bound
    answers = {}
    for label, agent_id in (("another tenant's bound agent", foreign_bound["id"]),
                            ("another tenant's public bound agent", foreign_public["id"]),
                            ("another tenant's public agent", foreign_loose["id"]),
                            ("the editor's unbound agent", editors_own["id"]),
                            ("an unknown id", str(uuid.uuid4()))):
        resp = await client.patch(f"/api/v1/personas/{c.pid}", headers=c.editor.headers,
                                  json={"email_agent_id": agent_id})
        chk.check(f"PATCH /personas/{{id}} email_agent_id={label}", c.editor, resp, 422,
                  leak=(theirs["name"],))
        answers[label] = resp.json().get("detail", "").replace(agent_id, "X")
    chk.that(len(set(answers.values())) == 1,
             f"email_agent_id refusals differ (an existence oracle): {answers}")
    now = (await client.get(f"/api/v1/personas/{c.pid}", headers=c.owner.headers)).json()
    chk.that(now["email_agent_id"] is None, f"linked: {now['email_agent_id']}")
    chk.done()
