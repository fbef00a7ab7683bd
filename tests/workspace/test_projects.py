"""Projects: CRUD, what they group (counts), isolation between users, group sharing,
bad input, and deleting a project leaves what it grouped working."""

from __future__ import annotations

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.identity.cliscope import acting_principal
from roost.workspace import service
from tests.agents.conftest import make_agent
from tests.knowledge.support import make_group
from tests.support.identity import make_user
from tests.workspace.conftest import User, make_project, make_task


async def test_project_crud_counts_and_delete_sets_null(client: httpx.AsyncClient, user: User,
                                                        database: Database) -> None:
    user_id, headers = user
    project = await make_project(
        client, headers, "Roost", description="The backend", project_type="backend",
        programming_language="python", framework="fastapi",
        repository_url="git@github.com:acme/roost.git", local_path="/home/me/roost",
        start_date="2027-01-01", end_date="2027-06-30", project_metadata={"team": "core"})
    assert project["status"] == "active" and project["user_id"] == str(user_id)
    agent = await make_agent(database, user_id, project_id=project["id"])
    await make_task(client, headers, "open", project_id=project["id"])
    await make_task(client, headers, "closed", project_id=project["id"], status="done")
    workflow = await client.post("/api/v1/workflows", headers=headers, json={
        "name": "flow", "project_id": project["id"],
        "nodes": [], "edges": []})
    assert workflow.status_code == 201, workflow.text
    detail = (await client.get(f"/api/v1/projects/{project['id']}", headers=headers)).json()
    assert detail["counts"] == {"agents": 1, "workflows": 1, "documents": 0,
                                "chat_sessions": 0, "tasks": 2, "open_tasks": 1}

    resp = await client.patch(f"/api/v1/projects/{project['id']}",
                              json={"status": "paused", "name": "Roost 2"}, headers=headers)
    assert resp.status_code == 200 and resp.json()["status"] == "paused"
    listed = (await client.get("/api/v1/projects", headers=headers,
                               params={"status": "paused"})).json()
    assert [p["name"] for p in listed["items"]] == ["Roost 2"]
    assert (await client.get("/api/v1/projects", headers=headers,
                             params={"status": "active"})).json()["items"] == []

    # Deleting the project: the agent, workflow and tasks stay, unattached, and work.
    assert (await client.delete(f"/api/v1/projects/{project['id']}",
                                headers=headers)).status_code == 204
    async with database.transaction() as s:
        left = (await s.execute(text(
            "SELECT (SELECT project_id FROM agents WHERE id = :a) AS agent, "
            "(SELECT count(*) FROM tasks WHERE project_id IS NULL) AS tasks, "
            "(SELECT project_id FROM workflows WHERE id = :w) AS workflow"),
            {"a": agent.id, "w": workflow.json()["id"]})).one()
    assert (left.agent, left.tasks, left.workflow) == (None, 2, None)
    again = await client.get(f"/api/v1/agents/{agent.id}", headers=headers)
    assert again.status_code == 200 and again.json()["project_id"] is None
    assert (await client.get(f"/api/v1/workflows/{workflow.json()['id']}",
                             headers=headers)).status_code == 200
    assert (await client.get(f"/api/v1/projects/{project['id']}",
                             headers=headers)).status_code == 404


async def test_two_users_projects_are_isolated(client: httpx.AsyncClient, user: User,
                                               other_user: User) -> None:
    _, alice = user
    _, bob = other_user
    mine = await make_project(client, alice, "Secret")
    url = f"/api/v1/projects/{mine['id']}"
    assert (await client.get(url, headers=bob)).status_code == 404
    assert (await client.patch(url, json={"name": "x"}, headers=bob)).status_code == 404
    assert (await client.delete(url, headers=bob)).status_code == 404
    assert (await client.get("/api/v1/projects", headers=bob)).json()["items"] == []
    # Bob cannot attach his task (or move one) to Alice's project.
    resp = await client.post("/api/v1/tasks-board", json={"title": "sneak",
                                                          "project_id": mine["id"]}, headers=bob)
    assert resp.status_code == 404
    theirs = await make_task(client, bob, "his")
    resp = await client.patch(f"/api/v1/tasks-board/{theirs['id']}",
                              json={"project_id": mine["id"]}, headers=bob)
    assert resp.status_code == 404
    assert (await client.get(url, headers=alice)).status_code == 200


async def test_an_administrator_filing_a_project_under_a_missing_group_gets_a_404(
    client: httpx.AsyncClient, database: Database
) -> None:
    """The field named, as a member gets for a group they are not in; not a 409."""
    _, root = await make_user(database, admin=True)
    made = await client.post("/api/v1/projects", headers=root, json={
        "name": "p", "group_id": "0190b5e0-0000-7000-8000-000000000000"})
    assert made.status_code == 404 and "group_id" in made.text, made.text


async def test_group_members_see_a_group_project_and_its_admins_change_it(
        client: httpx.AsyncClient, database: Database, user: User) -> None:
    owner_id, owner = user
    member_id, member = await make_user(database)
    admin_id, group_admin = await make_user(database)
    _, outsider = await make_user(database)
    team = await make_group(database, "team-ws", owner_id, member_id, admin_id)
    async with database.transaction() as s:
        await s.execute(text("UPDATE user_group_memberships SET role = 'admin' "
                             "WHERE user_id = :u AND group_id = :g"), {"u": admin_id, "g": team})
    project = await make_project(client, owner, "Shared", group_id=str(team))
    url = f"/api/v1/projects/{project['id']}"
    assert (await client.get(url, headers=member)).status_code == 200
    listed = (await client.get("/api/v1/projects", headers=member)).json()["items"]
    assert [p["id"] for p in listed] == [project["id"]]
    assert (await client.get(url, headers=outsider)).status_code == 404
    # Members read; the group's admins and the owner change; only the owner deletes.
    assert (await client.patch(url, json={"name": "Mine now"}, headers=member)).status_code == 403
    resp = await client.patch(url, json={"description": "by the admin"}, headers=group_admin)
    assert resp.status_code == 200, resp.text
    assert (await client.delete(url, headers=group_admin)).status_code == 403
    # A member attaches their own task to it; the owner's count does not include it.
    await make_task(client, member, "member's", project_id=project["id"])
    counts = (await client.get(url, headers=owner)).json()["counts"]
    assert counts["tasks"] == 0
    assert (await client.get(url, headers=member)).json()["counts"]["tasks"] == 1
    # Sharing with a group you are not in is a 404.
    other_group = await make_group(database, "not-mine", admin_id)
    resp = await client.post("/api/v1/projects", json={"name": "x", "group_id": str(other_group)},
                             headers=owner)
    assert resp.status_code == 404


async def test_bad_project_input_is_a_clear_4xx(client: httpx.AsyncClient, user: User) -> None:
    _, headers = user
    for body in ({"name": "x", "status": "done"}, {"name": ""}, {"name": "  "},
                 {"name": "x", "repository_url": "javascript:alert(1)"},
                 {"name": "x", "repository_url": "file:///etc/passwd"},
                 {"name": "x", "local_path": "/tmp/\x00x"},
                 {"name": "x", "local_path": "p" * 5000},
                 {"name": "x", "project_metadata": {"k": "\x00"}},
                 {"name": "x", "project_metadata": ["not", "an", "object"]},
                 {"name": "x", "start_date": "2027-02-01", "end_date": "2027-01-01"},
                 {"name": "x", "start_date": 20270101}, {"name": "x", "owner": "me"}):
        resp = await client.post("/api/v1/projects", json=body, headers=headers)
        assert resp.status_code == 422, (body, resp.text)
    for url in ("https://example.org/a.git", "ssh://git@example.org/a.git",
                "git://example.org/a.git", "git@example.org:a/b.git"):
        await make_project(client, headers, url, repository_url=url)
    project = await make_project(client, headers, "dated", start_date="2027-01-01")
    resp = await client.patch(f"/api/v1/projects/{project['id']}",
                              json={"end_date": "2026-01-01"}, headers=headers)
    assert resp.status_code == 422
    assert (await client.patch(f"/api/v1/projects/{project['id']}", json={"status": None},
                               headers=headers)).status_code == 422
    assert (await client.get("/api/v1/projects/not-a-uuid", headers=headers)).status_code == 404
    assert (await client.get("/api/v1/projects", headers=headers,
                             params={"status": "gone"})).status_code == 422


async def test_chat_sessions_and_documents_attach_to_a_visible_project_only(
        client: httpx.AsyncClient, user: User, other_user: User,
        admin_headers: dict[str, str]) -> None:
    _, headers = user
    _, bob = other_user
    project = await make_project(client, headers, "Research")
    theirs = await make_project(client, bob, "Bob's")
    made = await client.post("/api/v1/chat/sessions", json={"title": "in project",
                                                            "project_id": project["id"]},
                             headers=headers)
    assert made.status_code == 201, made.text
    assert made.json()["project_id"] == project["id"]
    loose = await client.post("/api/v1/chat/sessions", json={"title": "loose"}, headers=headers)
    listed = (await client.get("/api/v1/chat/sessions", headers=headers,
                               params={"project_id": project["id"]})).json()["items"]
    assert [s["title"] for s in listed] == ["in project"]
    # Moved into the project and out again (each change audited with the ids as text).
    loose_url = f"/api/v1/chat/sessions/{loose.json()['id']}"
    for target in (project["id"], None):
        moved = await client.patch(loose_url, json={"project_id": target}, headers=headers)
        assert moved.status_code == 200, moved.text
        assert moved.json()["project_id"] == target
    audited = (await client.get("/api/v1/audit/logs", headers=admin_headers, params={
        "action": "chat.session.update", "resource_id": loose.json()["id"]})).json()["items"]
    assert sorted((tuple(r["changes"]["project_id"]) for r in audited), key=str) == sorted(
        [(None, project["id"]), (project["id"], None)], key=str)
    # Another user's project: 404 on create and on moving a session to it.
    resp = await client.post("/api/v1/chat/sessions", json={"project_id": theirs["id"]},
                             headers=headers)
    assert resp.status_code == 404
    resp = await client.patch(f"/api/v1/chat/sessions/{made.json()['id']}",
                              json={"project_id": theirs["id"]}, headers=headers)
    assert resp.status_code == 404
    # Documents: uploaded into a project (another user's: 404), listed by project.
    for pid, expected_status in ((theirs["id"], 404), (project["id"], 202)):
        resp = await client.post("/api/v1/knowledge/documents", headers=headers,
                                 files={"file": ("notes.md", b"# Notes", "text/markdown")},
                                 data={"project_id": pid})
        assert resp.status_code == expected_status, resp.text
    docs = (await client.get("/api/v1/knowledge/documents", headers=headers,
                             params={"project_id": project["id"]})).json()["items"]
    assert [d["name"] for d in docs] == ["notes.md"]
    detail = (await client.get(f"/api/v1/projects/{project['id']}", headers=headers)).json()
    assert detail["counts"]["chat_sessions"] == 1 and detail["counts"]["documents"] == 1


async def test_agents_attach_to_a_visible_project_only(
        client: httpx.AsyncClient, user: User, other_user: User) -> None:
    _, headers = user
    _, bob = other_user
    project = await make_project(client, headers, "Bots")
    theirs = await make_project(client, bob, "Bob's bots")
    made = await client.post("/api/v1/agents", headers=headers, json={
        "name": "Helper", "slug": "helper", "project_id": project["id"]})
    assert made.status_code == 201, made.text
    assert made.json()["project_id"] == project["id"]
    await client.post("/api/v1/agents", headers=headers, json={"name": "Loose", "slug": "loose"})
    listed = (await client.get("/api/v1/agents", headers=headers,
                               params={"project_id": project["id"]})).json()["items"]
    assert [a["slug"] for a in listed] == ["helper"]
    # Another user's project: 404 on create and on moving the agent to it.
    resp = await client.post("/api/v1/agents", headers=headers, json={
        "name": "Spy", "slug": "spy", "project_id": theirs["id"]})
    assert resp.status_code == 404, resp.text
    agent_url = f"/api/v1/agents/{made.json()['id']}"
    resp = await client.patch(agent_url, json={"project_id": theirs["id"]}, headers=headers)
    assert resp.status_code == 404
    detail = (await client.get(f"/api/v1/projects/{project['id']}", headers=headers)).json()
    assert detail["counts"]["agents"] == 1
    # null detaches it.
    resp = await client.patch(agent_url, json={"project_id": None}, headers=headers)
    assert resp.status_code == 200 and resp.json()["project_id"] is None


async def test_project_metadata_limit_counts_utf8_bytes_not_ascii_escapes(
        client: httpx.AsyncClient, user: User) -> None:
    """64 KiB of compact UTF-8 JSON: 15,000 "é" (30 KB; 90 KB as ASCII escapes) fit,
    33,000 (66 KB) do not."""
    _, h = user
    fits = await client.post("/api/v1/projects", headers=h, json={
        "name": "x", "project_metadata": {"notes": "é" * 15_000}})
    assert fits.status_code == 201, fits.text
    too_big = await client.post("/api/v1/projects", headers=h, json={
        "name": "x", "project_metadata": {"notes": "é" * 33_000}})
    assert too_big.status_code == 422 and "65536 bytes" in too_big.text, too_big.text


async def test_a_group_admin_s_change_of_a_shared_project_is_audited_as_theirs(
        client: httpx.AsyncClient, database: Database, user: User) -> None:
    """The audit record of a project change names who made it (the group admin), as every
    domain's records do, and the project's owner beside it; the owner's own change names
    only the owner."""
    owner_id, owner = user
    admin_id, group_admin = await make_user(database)
    team = await make_group(database, "team-audit", owner_id, admin_id)
    async with database.transaction() as s:
        await s.execute(text("UPDATE user_group_memberships SET role = 'admin' "
                             "WHERE user_id = :u AND group_id = :g"), {"u": admin_id, "g": team})
    project = await make_project(client, owner, "Heron", group_id=str(team))
    url = f"/api/v1/projects/{project['id']}"
    changed = await client.patch(url, json={"name": "Theirs now"}, headers=group_admin)
    assert changed.status_code == 200, changed.text
    assert (await client.patch(url, json={"name": "Mine again"}, headers=owner)).status_code == 200
    async with database.transaction() as s:
        rows = (await s.execute(text(
            "SELECT user_id, changes FROM audit_logs WHERE action = 'project.update' "
            "AND resource_id = :p ORDER BY seq"), {"p": project["id"]})).all()
    assert [r.user_id for r in rows] == [admin_id, owner_id], rows
    assert rows[0].changes["owner"] == str(owner_id) and "owner" not in rows[1].changes, rows


async def test_an_scp_like_repository_url_with_a_terminal_escape_is_refused(
        client: httpx.AsyncClient, user: User) -> None:
    """repository_url refuses control characters in the scp-like form as in URL form (an
    ESC in ``git@host:p...`` was stored as it came)."""
    _, h = user
    resp = await client.post("/api/v1/projects", json={"name": "x", "repository_url": "git@host:p\x1b[31mx"},
                             headers=h)
    assert resp.status_code == 422, resp.text
    url = await client.post("/api/v1/projects", json={"name": "x", "repository_url": "http://host/\x1b[31m"},
                            headers=h)
    assert url.status_code == 422, url.text


async def test_an_administrator_files_a_users_agent_or_workflow_only_where_the_user_sees(
        client: httpx.AsyncClient, user: User, other_user: User, database: Database) -> None:
    """An administrator moving Alice's agent or workflow into Bob's project (which Alice
    cannot open) gets a 404 naming project_id, as for her tasks and chat sessions: a
    project groups its owner's own things (both were moved, and counted in Bob's project).
    Into a project of a group Alice is in, the move goes through."""
    alice_id, alice = user
    bob_id, bob = other_user
    _, root = await make_user(database, admin=True)
    bobs = await make_project(client, bob, "Bob's")
    agent = await make_agent(database, alice_id)
    made = await client.post("/api/v1/workflows", headers=alice,
                             json={"name": "flow", "nodes": [], "edges": []})
    assert made.status_code == 201, made.text
    for path in (f"/api/v1/agents/{agent.id}", f"/api/v1/workflows/{made.json()['id']}"):
        moved = await client.patch(path, headers=root, json={"project_id": bobs["id"]})
        assert moved.status_code == 404, (path, moved.text)
        assert moved.json()["field"] == "project_id"
        assert (await client.get(path, headers=alice)).json()["project_id"] is None

    team = await make_group(database, "both", alice_id, bob_id)
    shared = await client.post("/api/v1/projects", headers=bob,
                               json={"name": "Shared", "group_id": str(team)})
    assert shared.status_code == 201, shared.text
    for path in (f"/api/v1/agents/{agent.id}", f"/api/v1/workflows/{made.json()['id']}"):
        moved = await client.patch(path, headers=root, json={"project_id": shared.json()["id"]})
        assert moved.status_code == 200, (path, moved.text)


async def test_the_cli_finds_a_project_by_its_full_id_in_any_spelling(
        client: httpx.AsyncClient, database: Database) -> None:
    """`roost projects show ID` (the CLI's lookup) finds a project by its full id spelled
    without dashes, in braces or upper case, as other commands take ids (it was "you
    have no project named ...")."""
    user_id, headers = await make_user(database, username="pfx")
    project = await make_project(client, headers, "Roost")
    principal = await acting_principal(database, "pfx")
    for spelling in (project["id"].replace("-", ""), "{" + project["id"] + "}",
                     project["id"].upper()):
        async with database.transaction() as s:
            found = await service.find_project(s, principal, spelling)
        assert str(found.id) == project["id"] and found.user_id == user_id, spelling
