"""Agents through the API: create, list, read, change, delete; tools and documents checked
when configured; persona-bound agents (editors may change them, viewers only read), public
agents (everyone runs them, nobody else changes them), other tenants' agents (404)."""

from __future__ import annotations

import uuid
from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from tests.agents.api import (
    Headers,
    add_member,
    audit_rows,
    create_agent,
    create_persona,
    named_user,
)
from tests.knowledge.support import make_group


async def test_agent_lifecycle_tools_config_and_audit(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    user_id, headers = user
    tools = (await client.get("/api/v1/tools", params={"name": "current_time"},
                              headers=headers)).json()["items"]
    tool_id = tools[0]["id"]
    created = await create_agent(
        client, headers, slug="scribe", name="Scribe", system_prompt="Write.",
        tool_permissions=["current_time", tool_id.upper(), "current_time"],
        config={"max_steps": 3, "temperature": 0.5}, avatar_url="https://example.test/a.png")
    assert created["user_id"] == str(user_id) and created["persona_id"] is None
    # Duplicates dropped, ids in their canonical form.
    assert created["tool_permissions"] == ["current_time", tool_id]
    # Every limit shown as a run would apply it; only what was set is stored.
    assert created["config"]["max_steps"] == 3 and created["config"]["timeout_s"] == 600
    agent_id = created["id"]

    changed = await client.patch(f"/api/v1/agents/{agent_id}", headers=headers, json={
        "description": "takes notes", "config": {"max_steps": 7}, "tool_permissions": [],
        "is_public": True, "preferred_model": None})
    assert changed.status_code == 200, changed.text
    body = changed.json()
    assert body["config"]["max_steps"] == 7 and body["config"]["temperature"] is None
    assert body["tool_permissions"] == [] and body["is_public"] is True
    assert body["system_prompt"] == "Write." and body["slug"] == "scribe"
    assert (await client.get(f"/api/v1/agents/{agent_id}", headers=headers)).json() == body

    assert (await client.delete(f"/api/v1/agents/{agent_id}", headers=headers)).status_code == 204
    assert (await client.get(f"/api/v1/agents/{agent_id}", headers=headers)).status_code == 404
    actions = [(r["action"], r["changes"]) for r in await audit_rows(database, "agent.")]
    assert [a for a, _ in actions] == ["agent.create", "agent.update", "agent.delete"]
    assert actions[1][1]["is_public"] == {"before": False, "after": True}


async def test_configuration_is_checked_when_it_is_given(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    other_id, other = other_user
    unknown = await client.post("/api/v1/agents", headers=headers, json={
        "name": "x", "slug": "x", "tool_permissions": ["current_time", "rm_rf", str(uuid.uuid4())]})
    assert unknown.status_code == 422 and "'rm_rf'" in unknown.json()["detail"]
    missing_doc = str(uuid.uuid4())
    docs = await client.post("/api/v1/agents", headers=headers, json={
        "name": "x", "slug": "x", "document_ids": [missing_doc]})
    assert docs.status_code == 422 and missing_doc in docs.json()["detail"]
    # Another user's document is as unknown as a missing one.
    uploaded = await client.post("/api/v1/knowledge/documents", headers=other,
                                 files={"file": ("notes.txt", b"secret notes", "text/plain")})
    assert uploaded.status_code == 202, uploaded.text
    theirs = uploaded.json()["document"]["id"]
    refused = await client.post("/api/v1/agents", headers=headers, json={
        "name": "x", "slug": "x", "document_ids": [theirs]})
    assert refused.status_code == 422
    mine = await create_agent(client, other, slug="reader", document_ids=[theirs, theirs])
    assert mine["document_ids"] == [theirs]

    for body in ({"name": "x", "slug": "Bad Slug"}, {"name": "x", "slug": "-x"},
                 {"name": "x", "slug": "x" * 101}, {"name": "", "slug": "x"},
                 {"name": "x", "slug": "x", "config": {"max_steps": 0}},
                 {"name": "x", "slug": "x", "config": {"max_steps": "3"}},
                 {"name": "x", "slug": "x", "config": {"shell": True}},
                 {"name": "x", "slug": "x", "is_public": "yes"},
                 {"name": "x", "slug": "x", "avatar_url": "javascript:alert(1)"},
                 {"name": "x", "slug": "x", "tool_permissions": ["t"] * 101},
                 {"name": "x", "slug": "x", "document_ids": ["not-a-uuid"]},
                 {"name": "x", "slug": "x", "system_prompt": "p" * 100_001}):
        resp = await client.post("/api/v1/agents", json=body, headers=headers)
        assert resp.status_code == 422, (body, resp.text)
        assert "p" * 60 not in resp.text
    malformed = await client.post("/api/v1/agents", content=b"{", headers={
        **headers, "Content-Type": "application/json"})
    assert malformed.status_code == 400

    await create_agent(client, headers, slug="dup")
    dup = await client.post("/api/v1/agents", json={"name": "x", "slug": "dup"}, headers=headers)
    assert dup.status_code == 409
    await create_agent(client, other, slug="dup")  # slugs are per owner
    second = await create_agent(client, headers, slug="second")
    renamed = await client.patch(f"/api/v1/agents/{second['id']}", json={"slug": "dup"},
                                 headers=headers)
    assert renamed.status_code == 409
    for body in ({"name": None}, {"config": None}, {"tool_permissions": None},
                 {"is_active": 1}, {"config": {"timeout_s": -1}}):
        resp = await client.patch(f"/api/v1/agents/{second['id']}", json=body, headers=headers)
        assert resp.status_code == 422, (body, resp.text)
    assert other_id  # the other tenant's agents were untouched by all of this


async def test_listing_pagination_and_filters(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    _, other = other_user
    own = [await create_agent(client, headers, slug=f"own-{n}") for n in range(3)]
    public = await create_agent(client, other, slug="shared", is_public=True)
    await create_agent(client, other, slug="private")
    listed = (await client.get("/api/v1/agents", headers=headers)).json()
    assert [a["slug"] for a in listed["items"]] == ["shared", "own-2", "own-1", "own-0"]
    page = (await client.get("/api/v1/agents", params={"limit": 3}, headers=headers)).json()
    rest = (await client.get("/api/v1/agents", params={"limit": 3, "cursor": page["next_cursor"]},
                             headers=headers)).json()
    assert [a["slug"] for a in page["items"] + rest["items"]] == [
        "shared", "own-2", "own-1", "own-0"] and rest["next_cursor"] is None

    async def slugs(**params: Any) -> list[str]:
        body = (await client.get("/api/v1/agents", params=params, headers=headers)).json()
        return [a["slug"] for a in body["items"]]

    assert await slugs(mine="true") == ["own-2", "own-1", "own-0"]
    assert await slugs(mine="false") == ["shared"]
    assert await slugs(is_public="true") == ["shared"]
    await client.patch(f"/api/v1/agents/{own[0]['id']}", json={"is_active": False}, headers=headers)
    assert await slugs(is_active="false") == ["own-0"]
    assert public["id"] in [a["id"] for a in (await client.get(
        "/api/v1/agents", headers=other)).json()["items"]]
    assert (await client.get("/api/v1/agents", params={"is_public": "maybe"},
                             headers=headers)).status_code == 422


async def test_public_agents_are_usable_not_editable_and_private_ones_invisible(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    _, other = other_user
    public = await create_agent(client, other, is_public=True)
    private = await create_agent(client, other)
    assert (await client.get(f"/api/v1/agents/{public['id']}", headers=headers)).status_code == 200
    for method, body in (("PATCH", {"name": "mine now"}), ("DELETE", None)):
        resp = await client.request(method, f"/api/v1/agents/{public['id']}", json=body,
                                    headers=headers)
        assert resp.status_code == 403, resp.text
    run = await client.post(f"/api/v1/agents/{public['id']}/runs", json={"input": "hi"},
                            headers=headers)
    assert run.status_code == 202, run.text
    for method, path, body in (("GET", "", None), ("PATCH", "", {"name": "x"}),
                               ("DELETE", "", None), ("POST", "/runs", {"input": "hi"})):
        resp = await client.request(method, f"/api/v1/agents/{private['id']}{path}", json=body,
                                    headers=headers)
        assert resp.status_code == 404, (method, path, resp.text)
    # A public agent bound to a persona shows nothing of the persona to strangers.
    persona = await create_persona(client, other)
    bound = await create_agent(client, other, persona_id=persona["id"], is_public=True)
    assert (await client.get(f"/api/v1/agents/{bound['id']}", headers=headers)).status_code == 200
    assert (await client.get(f"/api/v1/personas/{persona['id']}", headers=headers)).status_code == 404
    assert (await client.patch(f"/api/v1/agents/{bound['id']}", json={"name": "x"},
                               headers=headers)).status_code == 403


async def test_persona_bound_agents_follow_the_personas_roles(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    _, owner = user
    _, editor_name, editor = await named_user(database, "editor")
    _, viewer_name, viewer = await named_user(database, "viewer")
    _, _, stranger = await named_user(database, "stranger")
    pid = (await create_persona(client, owner))["id"]
    await add_member(client, owner, pid, editor_name, "editor", editor)
    await add_member(client, owner, pid, viewer_name, "viewer", viewer)

    # Binding takes an owner or editor of the persona: 403 for a viewer, 404 for a stranger.
    as_viewer = await client.post("/api/v1/agents", json={"name": "x", "slug": "x",
                                                           "persona_id": pid}, headers=viewer)
    assert as_viewer.status_code == 403
    as_stranger = await client.post("/api/v1/agents", json={"name": "x", "slug": "x",
                                                             "persona_id": pid}, headers=stranger)
    assert as_stranger.status_code == 404
    agent = await create_agent(client, owner, persona_id=pid)
    by_editor = await create_agent(client, editor, persona_id=pid)

    seen = (await client.get("/api/v1/agents", params={"persona_id": pid}, headers=viewer)).json()
    assert {a["id"] for a in seen["items"]} == {agent["id"], by_editor["id"]}
    assert (await client.patch(f"/api/v1/agents/{agent['id']}", json={"name": "v"},
                               headers=viewer)).status_code == 403
    assert (await client.delete(f"/api/v1/agents/{agent['id']}", headers=viewer)).status_code == 403
    edited = await client.patch(f"/api/v1/agents/{agent['id']}", json={"name": "Edited"},
                                headers=editor)
    assert edited.status_code == 200 and edited.json()["name"] == "Edited"
    # Only the agent's owner moves it out of (or into another) persona.
    unbind = await client.patch(f"/api/v1/agents/{agent['id']}", json={"persona_id": None},
                                headers=editor)
    assert unbind.status_code == 403
    other_persona = (await create_persona(client, viewer))["id"]
    moved = await client.patch(f"/api/v1/agents/{by_editor['id']}",
                               json={"persona_id": other_persona}, headers=editor)
    assert moved.status_code == 404  # a persona the editor cannot see
    assert (await client.get(f"/api/v1/agents/{agent['id']}", headers=stranger)).status_code == 404
    # The editor may delete the persona's agents (not the persona).
    assert (await client.delete(f"/api/v1/agents/{agent['id']}", headers=editor)).status_code == 204
    assert (await client.delete(f"/api/v1/personas/{pid}", headers=editor)).status_code == 403
    # Leaving the persona ends the view of its agents, the ones one made for it included
    # (they are the persona's: to keep one, move it out of the persona first).
    await client.delete(f"/api/v1/personas/{pid}/members/{by_editor['user_id']}", headers=editor)
    assert (await client.get(f"/api/v1/agents/{by_editor['id']}", headers=editor)).status_code == 404
    assert (await client.get(f"/api/v1/agents/{by_editor['id']}", headers=viewer)).status_code == 200


async def test_operator_token_cannot_own_agents(
    client: httpx.AsyncClient, admin_headers: Headers, user: tuple[uuid.UUID, Headers],
) -> None:
    _, headers = user
    agent = await create_agent(client, headers)
    refused = await client.post("/api/v1/agents", json={"name": "x", "slug": "x"},
                                headers=admin_headers)
    assert refused.status_code == 403
    # Administrators see and change everyone's.
    assert (await client.get(f"/api/v1/agents/{agent['id']}",
                             headers=admin_headers)).status_code == 200
    assert (await client.patch(f"/api/v1/agents/{agent['id']}", json={"is_active": False},
                               headers=admin_headers)).status_code == 200


async def refused_on_create_and_change(client: httpx.AsyncClient, headers: Headers,
                                       agent: dict[str, Any], field: str, value: Any) -> None:
    """``field: value`` is a 422 naming the field, for a new agent and for ``agent``."""
    created = await client.post("/api/v1/agents", headers=headers, json={
        "name": "A", "slug": f"s-{uuid.uuid4().hex[:8]}", field: value})
    changed = await client.patch(f"/api/v1/agents/{agent['id']}", headers=headers,
                                 json={field: value})
    for resp in (created, changed):
        assert resp.status_code == 422 and field in resp.text, (field, resp.text)


async def test_a_nul_in_an_agent_s_text_is_a_422_naming_the_field(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """An agent's text is stored as text (and jsonb), which holds no NUL: refused as a
    run's input is, a 422 naming the field (on create and on change), not the
    database's anonymous 400; nothing stored or changed."""
    _, headers = user
    agent = await create_agent(client, headers, description="kept")
    for field, value in (("name", "a\x00b"), ("description", "a\x00"),
                         ("system_prompt", "x\x00y"), ("preferred_model", "m\x00"),
                         ("preferred_provider", "p\x00"), ("tool_permissions", ["t\x00"])):
        await refused_on_create_and_change(client, headers, agent, field, value)
    listed = (await client.get("/api/v1/agents", headers=headers)).json()["items"]
    assert [a["id"] for a in listed] == [agent["id"]]
    assert (await client.get(f"/api/v1/agents/{agent['id']}", headers=headers)).json() == agent


@pytest.mark.parametrize("value", ["gpt\x1b[2J", "m\nX-Injected: 1", "m\u2028", "m\x85"])
async def test_model_and_provider_names_with_control_characters_are_refused(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], value: str,
) -> None:
    """An agent's preferred model and provider, and a persona's default ones, are names a
    provider knows, shown in lists and the CLI: a control character or line break makes
    none (they were stored as given), a 422 naming the field; nothing changed."""
    _, headers = user
    agent = await create_agent(client, headers, slug="named-models")
    for field in ("preferred_model", "preferred_provider"):
        await refused_on_create_and_change(client, headers, agent, field, value)
    assert (await client.get(f"/api/v1/agents/{agent['id']}", headers=headers)).json() == agent
    for field in ("default_model", "default_provider"):
        resp = await client.post("/api/v1/personas", headers=headers,
                                 json={"name": "P", field: value})
        assert resp.status_code == 422 and field in resp.text, (field, resp.text)


async def test_one_tool_id_spelt_several_ways_in_tool_permissions_is_kept_once(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """Duplicates are dropped on the canonical id: one tool's id in several spellings
    (upper case, no dashes, braces, urn:uuid:) is one entry, on create and on PATCH."""
    _, headers = user
    tools = (await client.get("/api/v1/tools", params={"name": "current_time"},
                              headers=headers)).json()["items"]
    tool_id = tools[0]["id"]
    spellings = [tool_id, tool_id.upper(), uuid.UUID(tool_id).hex, "{" + tool_id + "}",
                 f"urn:uuid:{tool_id}"]
    resp = await client.post("/api/v1/agents", headers=headers, json={
        "name": "x", "slug": "dup-ids", "tool_permissions": spellings})
    assert resp.status_code == 201, resp.text
    assert resp.json()["tool_permissions"] == [tool_id], resp.json()["tool_permissions"]
    patched = await client.patch(f"/api/v1/agents/{resp.json()['id']}", headers=headers,
                                 json={"tool_permissions": [tool_id.upper(), tool_id]})
    assert patched.status_code == 200
    assert patched.json()["tool_permissions"] == [tool_id], patched.json()["tool_permissions"]


@pytest.mark.parametrize("url", ["http://example.test/\x07", "https://example.test/a\x1b[2J",
                                 "https://example.test/\x7f", "https://example.test/\u0085x",
                                 "https://example.test/\u2028"])
async def test_avatar_url_with_control_characters_is_refused(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], url: str,
) -> None:
    """``avatar_url`` must be an http(s) URL, invalid ones 422 (docs/agents.md, "Bad
    input"): a control character (BEL, ESC, DEL, NEL, a line separator) makes none; it
    was stored and answered as given (the pattern excluded only ASCII white space and
    ``urlsplit`` took the rest)."""
    _, headers = user
    resp = await client.post("/api/v1/agents", headers=headers, json={
        "name": "x", "slug": "avatar", "avatar_url": url})
    assert resp.status_code == 422 and "control character" in resp.text, resp.text[:300]
    assert url not in resp.text
    agent = await create_agent(client, headers, slug="avatar2")
    patched = await client.patch(f"/api/v1/agents/{agent['id']}", headers=headers,
                                 json={"avatar_url": url})
    assert patched.status_code == 422, (patched.status_code, patched.text[:300])
    assert (await client.get(f"/api/v1/agents/{agent['id']}", headers=headers)).json() == agent


async def test_a_slug_that_reads_as_a_uuid_is_refused(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers],
) -> None:
    """Agents are named "by slug or id" (the CLI, workflows, debates), a UUID always as
    an id: a slug that reads as one (hyphenated or 32 hex digits) is 422 on create and
    on change, so that no slug stands for another agent's id."""
    _, headers = user
    agent = await create_agent(client, headers)
    an_id = uuid.uuid4()
    for slug in (str(an_id), an_id.hex, agent["id"]):
        created = await client.post("/api/v1/agents", headers=headers,
                                    json={"name": "A", "slug": slug})
        changed = await client.patch(f"/api/v1/agents/{agent['id']}", headers=headers,
                                     json={"slug": slug})
        for resp in (created, changed):
            assert resp.status_code == 422 and "slug" in resp.text, (slug, resp.text[:300])
    # Short of a UUID, hex digits and dashes are a slug as before.
    assert (await create_agent(client, headers, slug=str(an_id)[:-1]))["slug"] == str(an_id)[:-1]


async def test_a_deleted_document_leaves_the_agents_that_chose_it(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    """Deleting a document takes its id out of every agent's document_ids, keeping the
    order of the rest, another group member's agent too: the agent reads back what it
    retrieves, and a PATCH resending the list it read is accepted (it was a 422 for the
    deleted id, which the caller never typed)."""
    user_id, headers = user
    other_id, other = other_user
    team = await make_group(database, f"t-{uuid.uuid4().hex[:6]}", user_id, other_id)
    shared = await client.post("/api/v1/knowledge/documents", headers=headers,
                               files={"file": ("s.txt", b"shared notes", "text/plain")},
                               data={"group_id": str(team)})
    assert shared.status_code == 202, shared.text
    shared_id = shared.json()["document"]["id"]
    members = await create_agent(client, other, slug="member", document_ids=[shared_id])
    ids = []
    for name in ("a.txt", "b.txt", "c.txt"):
        uploaded = await client.post("/api/v1/knowledge/documents", headers=headers,
                                     files={"file": (name, name.encode() * 4, "text/plain")})
        assert uploaded.status_code == 202, uploaded.text
        ids.append(uploaded.json()["document"]["id"])
    agent = await create_agent(client, headers, slug="reader", document_ids=ids)
    second = await create_agent(client, headers, slug="second", document_ids=[ids[2]])
    deleted = await client.delete(f"/api/v1/knowledge/documents/{ids[1]}", headers=headers)
    assert deleted.status_code == 204, deleted.text

    read = await client.get(f"/api/v1/agents/{agent['id']}", headers=headers)
    assert read.json()["document_ids"] == [ids[0], ids[2]]
    unchanged = await client.get(f"/api/v1/agents/{second['id']}", headers=headers)
    assert unchanged.json()["document_ids"] == [ids[2]]
    resent = await client.patch(f"/api/v1/agents/{agent['id']}", headers=headers,
                                json={"document_ids": read.json()["document_ids"]})
    assert resent.status_code == 200, resent.text

    gone = await client.delete(f"/api/v1/knowledge/documents/{shared_id}", headers=headers)
    assert gone.status_code == 204, gone.text
    member_agent = await client.get(f"/api/v1/agents/{members['id']}", headers=other)
    assert member_agent.json()["document_ids"] == []
