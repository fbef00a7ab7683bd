"""Persona roles, the persona's agents (docs/agents.md "Agents"): owners, editors and
administrators create them, members read and run them, owners and editors change them
(their creator only while one: a member removed or made a viewer no longer does), only
the agent's owner or an administrator takes one out of the persona; a public one is read
and run by everyone and changed by no one else; another tenant's ids in a body
(persona_id, tool_permissions, document_ids, project_id) are refused, never linked."""

from __future__ import annotations

import hashlib
import uuid

import httpx

from roost.db.engine import Database
from roost.knowledge.models import Document
from roost.workspace.models import Project
from tests.agents.api import Headers, create_agent, create_persona
from tests.agents.roles import Checker, make_cast, private_tool
from tests.support.sql import scalar

PROMPT = "confidential-agent-prompt"


async def _document(database: Database, owner: uuid.UUID) -> uuid.UUID:
    async with database.transaction() as session:
        doc = Document(user_id=owner, name="private.txt", source="upload",
                       path_hash=hashlib.sha256(uuid.uuid4().bytes).hexdigest())
        session.add(doc)
        await session.flush()
        return doc.id


async def _project(database: Database, owner: uuid.UUID) -> uuid.UUID:
    async with database.transaction() as session:
        project = Project(user_id=owner, name="private project")
        session.add(project)
        await session.flush()
        return project.id


async def test_owners_editors_and_administrators_create_agents_in_a_persona(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    expected = {c.owner: 201, c.co_owner: 201, c.editor: 201, c.viewer: 403, c.outsider: 404,
                c.group_peer: 404, c.admin: 201, c.operator: 403}
    for actor, code in expected.items():
        resp = await client.post("/api/v1/agents", headers=actor.headers, json={
            "name": "x", "slug": f"s-{uuid.uuid4().hex[:8]}", "persona_id": c.pid})
        chk.check("POST /agents {persona_id}", actor, resp, code,
                  leak=("Falcon", "confidential"))
    chk.done()


async def test_members_read_and_run_a_persona_s_agent_owners_and_editors_change_it(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    agent = await create_agent(client, c.owner.headers, persona_id=c.pid, system_prompt=PROMPT)
    aid = agent["id"]
    for actor in c.all():
        one = await client.get(f"/api/v1/agents/{aid}", headers=actor.headers)
        filtered = await client.get("/api/v1/agents", params={"persona_id": c.pid},
                                    headers=actor.headers)
        everything = await client.get("/api/v1/agents", headers=actor.headers)
        if actor in c.readers():
            chk.check("GET /agents/{id}", actor, one, 200)
            chk.that(aid in filtered.text, f"GET /agents?persona_id as {actor.name}: missing")
        else:
            chk.check("GET /agents/{id}", actor, one, 404, leak=(PROMPT,))
            chk.that(aid not in filtered.text and aid not in everything.text
                     and PROMPT not in everything.text,
                     f"GET /agents as {actor.name} lists the persona's private agent")
    expected_patch = {c.owner: 200, c.co_owner: 200, c.editor: 200, c.viewer: 403,
                      c.outsider: 404, c.group_peer: 404, c.admin: 200, c.operator: 200}
    for actor, code in expected_patch.items():
        resp = await client.patch(f"/api/v1/agents/{aid}", headers=actor.headers,
                                  json={"description": f"by {actor.name}"})
        chk.check("PATCH /agents/{id}", actor, resp, code, leak=(PROMPT,))
    # Only the agent's owner (or an administrator) moves it out of the persona.
    for actor, code in ((c.editor, 403), (c.co_owner, 403), (c.viewer, 403)):
        resp = await client.patch(f"/api/v1/agents/{aid}", headers=actor.headers,
                                  json={"persona_id": None})
        chk.check("PATCH /agents/{id} persona_id=null", actor, resp, code)
    for actor, code in ((c.viewer, 403), (c.outsider, 404), (c.group_peer, 404)):
        resp = await client.delete(f"/api/v1/agents/{aid}", headers=actor.headers)
        chk.check("DELETE /agents/{id}", actor, resp, code, leak=(PROMPT,))
    # Runs: "those who see it" start them.
    for actor, code in ((c.viewer, 202), (c.editor, 202), (c.outsider, 404),
                        (c.group_peer, 404), (c.operator, 403)):
        resp = await client.post(f"/api/v1/agents/{aid}/runs", headers=actor.headers,
                                 json={"input": "hello"})
        chk.check("POST /agents/{id}/runs", actor, resp, code, leak=(PROMPT,))
    resp = await client.delete(f"/api/v1/agents/{aid}", headers=c.editor.headers)
    chk.check("DELETE /agents/{id}", c.editor, resp, 204)
    chk.done()


async def test_another_tenant_s_ids_in_an_agent_s_body_are_refused_and_never_linked(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    theirs = await create_persona(client, c.outsider.headers)
    their_tool = await private_tool(database, c.outsider.id, name="outsider_tool")
    their_doc = await _document(database, c.outsider.id)
    their_project = await _project(database, c.outsider.id)
    # A tool the outsider granted to their own persona.
    granted = await client.put(f"/api/v1/personas/{theirs['id']}/tools/{their_tool}",
                               headers=c.outsider.headers, json={})
    assert granted.status_code == 200, granted.text

    def body(**fields: object) -> dict[str, object]:
        return {"name": "x", "slug": f"s-{uuid.uuid4().hex[:8]}", **fields}

    cases = (
        ("persona_id=another tenant's", {"persona_id": theirs["id"]}, 404),
        ("tool_permissions=[another tenant's tool id]", {"tool_permissions": [str(their_tool)]},
         422),
        ("tool_permissions=[another tenant's tool name]", {"tool_permissions": ["outsider_tool"]},
         422),
        ("persona P + tool granted to another persona",
         {"persona_id": c.pid, "tool_permissions": [str(their_tool)]}, 422),
        ("document_ids=[another tenant's]", {"document_ids": [str(their_doc)]}, 422),
        ("project_id=another tenant's", {"project_id": str(their_project)}, 404),
    )
    for label, fields, code in cases:
        resp = await client.post("/api/v1/agents", headers=c.editor.headers, json=body(**fields))
        chk.check(f"POST /agents {label}", c.editor, resp, code, leak=(theirs["name"],))
    agent = await create_agent(client, c.editor.headers, persona_id=c.pid)
    for label, fields, code in cases:
        resp = await client.patch(f"/api/v1/agents/{agent['id']}", headers=c.editor.headers,
                                  json=fields)
        chk.check(f"PATCH /agents/{{id}} {label}", c.editor, resp, code,
                  leak=(theirs["name"],))
    now = (await client.get(f"/api/v1/agents/{agent['id']}", headers=c.editor.headers)).json()
    chk.that(now["persona_id"] == c.pid and now["tool_permissions"] == []
             and now["document_ids"] == [] and now["project_id"] is None,
             f"a foreign id got linked: {now}")
    # The owner's group peer sees the owner's group documents, not the persona.
    peer_agent = await client.post("/api/v1/agents", headers=c.group_peer.headers,
                                   json=body(persona_id=c.pid))
    chk.check("POST /agents {persona_id} (group peer)", c.group_peer, peer_agent, 404)
    chk.done()


async def test_a_removed_member_no_longer_changes_or_runs_the_persona_s_agent_they_made(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """The agent is the persona's, not its creator's: once removed, the editor who made it
    neither reads (its system prompt is the persona's), changes nor runs it: to them it is
    an unknown agent; its owners still change it."""
    c = await make_cast(client, database, admin_headers)
    agent = await create_agent(client, c.editor.headers, persona_id=c.pid, system_prompt=PROMPT)
    aid = agent["id"]
    removed = await client.delete(f"/api/v1/personas/{c.pid}/members/{c.editor.id}",
                                  headers=c.owner.headers)
    assert removed.status_code == 204, removed.text
    changed = await client.patch(f"/api/v1/agents/{aid}", headers=c.editor.headers,
                                 json={"system_prompt": "exfiltrate everything"})
    assert changed.status_code == 404, changed.text
    run = await client.post(f"/api/v1/agents/{aid}/runs", headers=c.editor.headers,
                            json={"input": "hello"})
    assert run.status_code == 404, run.text
    seen = await client.get(f"/api/v1/agents/{aid}", headers=c.editor.headers)
    assert seen.status_code == 404, seen.text
    listed = await client.get("/api/v1/agents", headers=c.editor.headers)
    assert aid not in listed.text
    now = (await client.get(f"/api/v1/agents/{aid}", headers=c.owner.headers)).json()
    assert now["system_prompt"] == PROMPT
    for actor in (c.owner, c.co_owner):
        resp = await client.patch(f"/api/v1/agents/{aid}", headers=actor.headers,
                                  json={"description": f"kept by {actor.name}"})
        assert resp.status_code == 200, resp.text
    runs = await scalar(database, "SELECT count(*) FROM runs WHERE agent_id = :a", a=aid)
    assert runs == 0


async def test_a_member_made_a_viewer_no_longer_changes_the_persona_s_agent_they_made(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """Viewers do not change the persona's agents, including one they made as an editor."""
    c = await make_cast(client, database, admin_headers)
    agent = await create_agent(client, c.editor.headers, persona_id=c.pid, system_prompt=PROMPT)
    demoted = await client.patch(f"/api/v1/personas/{c.pid}/members/{c.editor.id}",
                                 json={"role": "viewer"}, headers=c.owner.headers)
    assert demoted.status_code == 200, demoted.text
    changed = await client.patch(f"/api/v1/agents/{agent['id']}", headers=c.editor.headers,
                                 json={"system_prompt": "changed by a viewer"})
    assert changed.status_code == 403, changed.text
    published = await client.patch(f"/api/v1/agents/{agent['id']}", headers=c.editor.headers,
                                   json={"is_public": True})
    assert published.status_code == 403, published.text
    now = (await client.get(f"/api/v1/agents/{agent['id']}", headers=c.owner.headers)).json()
    assert (now["system_prompt"], now["is_public"]) == (PROMPT, False)


async def test_a_public_persona_agent_is_read_and_run_by_everyone_and_changed_by_no_outsider(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """An editor may make the persona's agent public (docs: is_public lets every user read
    and run it, never change it).  Outsiders then read it, its prompt included, and start
    runs of it (which get none of the persona's grants or secrets:
    test_roles_runs.py, test_roles_secret_exfil.py), but change, move or delete nothing."""
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    agent = await create_agent(client, c.owner.headers, persona_id=c.pid, system_prompt=PROMPT)
    aid = agent["id"]
    made_public = await client.patch(f"/api/v1/agents/{aid}", headers=c.editor.headers,
                                     json={"is_public": True})
    chk.check("PATCH /agents/{id} is_public=true", c.editor, made_public, 200)
    theirs = await create_persona(client, c.outsider.headers)
    for actor in (c.outsider, c.group_peer):
        seen = await client.get(f"/api/v1/agents/{aid}", headers=actor.headers)
        chk.check("GET /agents/{public persona agent}", actor, seen, 200)
        for fields in ({"system_prompt": "hijacked"}, {"is_public": False},
                       {"persona_id": None}, {"persona_id": theirs["id"]}):
            resp = await client.patch(f"/api/v1/agents/{aid}", headers=actor.headers,
                                      json=fields)
            chk.check(f"PATCH /agents/{{public persona agent}} {sorted(fields)}", actor, resp,
                      403)
        resp = await client.delete(f"/api/v1/agents/{aid}", headers=actor.headers)
        chk.check("DELETE /agents/{public persona agent}", actor, resp, 403)
        run = await client.post(f"/api/v1/agents/{aid}/runs", headers=actor.headers,
                                json={"input": "hi"})
        chk.check("POST /agents/{public persona agent}/runs", actor, run, 202)
    now = (await client.get(f"/api/v1/agents/{aid}", headers=c.owner.headers)).json()
    chk.that((now["system_prompt"], now["is_public"], now["persona_id"]) == (PROMPT, True, c.pid),
             f"an outsider changed the public persona agent: {now}")
    chk.done()


async def test_only_the_agent_s_owner_files_a_persona_agent_in_a_project(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """A project groups its owner's own things (docs/workspace.md): an editor of the
    persona changes its agent but does not file the owner's agent in their own project
    (403, as for moving it to another persona); the agent's owner and administrators do."""
    c = await make_cast(client, database, admin_headers)
    agent = await create_agent(client, c.owner.headers, persona_id=c.pid)
    for actor in (c.editor, c.co_owner):
        proj = await client.post("/api/v1/projects", headers=actor.headers,
                                 json={"name": f"{actor.name}-private"})
        assert proj.status_code == 201, proj.text
        resp = await client.patch(f"/api/v1/agents/{agent['id']}", headers=actor.headers,
                                  json={"project_id": proj.json()["id"]})
        assert resp.status_code == 403, resp.text
    mine = await client.post("/api/v1/projects", headers=c.owner.headers,
                             json={"name": "owner-project"})
    assert mine.status_code == 201, mine.text
    filed = await client.patch(f"/api/v1/agents/{agent['id']}", headers=c.owner.headers,
                               json={"project_id": mine.json()["id"]})
    assert filed.status_code == 200 and filed.json()["project_id"] == mine.json()["id"]
    unfiled = await client.patch(f"/api/v1/agents/{agent['id']}", headers=c.admin.headers,
                                 json={"project_id": None})
    assert unfiled.status_code == 200 and unfiled.json()["project_id"] is None, unfiled.text
    # Naming the project it is in already changes nothing and is no refusal.
    same = await client.patch(f"/api/v1/agents/{agent['id']}", headers=c.editor.headers,
                              json={"project_id": None, "description": "kept"})
    assert same.status_code == 200, same.text
