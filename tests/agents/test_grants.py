"""Tools granted to a persona (persona_tools): a tool one member owns, used by the
persona's agent in another member's run, within the grant's constraints; invisible and
unusable without the grant; grants visible to members, managed by owners and editors."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import httpx

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.api import add_member, create_agent, create_persona, named_user
from tests.agents.conftest import Headers, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls

ECHO_SERVER = Path(__file__).resolve().parents[1] / "tools" / "mcp_echo_server.py"


async def _private_echo(client: httpx.AsyncClient, owner: Headers) -> str:
    """The id of the ``echo`` tool of a private stdio MCP server of ``owner`` (an
    administrator: only they may run a stdio server)."""
    server = await client.post("/api/v1/mcp-servers", headers=owner, json={
        "name": "alices-echo", "transport": "stdio", "command": sys.executable,
        "args": [str(ECHO_SERVER)]})
    assert server.status_code == 201, server.text
    synced = await client.post(f"/api/v1/mcp-servers/{server.json()['id']}/sync", headers=owner)
    assert synced.status_code == 200, synced.text
    tools = (await client.get("/api/v1/tools", params={"name": "echo"}, headers=owner)).json()
    return str(next(t["id"] for t in tools["items"] if t["name"] == "echo"))


async def test_a_granted_tool_serves_the_persona_s_agents_within_its_constraints(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,
) -> None:
    # Alice (an administrator, so she may run a stdio server) owns a private echo tool.
    _, alice = await make_user(database, admin=True)
    bob_id, bob_name, bob = await named_user(database, "bob")
    _, _, carol = await named_user(database, "carol")
    await add_provider(client, admin_headers, stub)
    echo_id = await _private_echo(client, alice)
    assert (await client.get(f"/api/v1/tools/{echo_id}", headers=bob)).status_code == 404

    persona = await create_persona(client, alice)
    await add_member(client, alice, persona["id"], bob_name, "viewer")
    grant = await client.put(f"/api/v1/personas/{persona['id']}/tools/{echo_id}", headers=alice,
                             json={"max_calls_per_run": 1,
                                   "input_schema": {"properties": {
                                       "text": {"type": "string", "maxLength": 20}}}})
    assert grant.status_code == 200, grant.text
    assert grant.json()["max_calls_per_run"] == 1
    listed = await client.get(f"/api/v1/personas/{persona['id']}/tools", headers=bob)
    assert [g["tool_id"] for g in listed.json()] == [echo_id]  # members see grants
    assert (await client.put(f"/api/v1/personas/{persona['id']}/tools/{echo_id}", headers=bob,
                             json={})).status_code == 403  # a viewer cannot grant
    assert (await client.get(f"/api/v1/personas/{persona['id']}/tools",
                             headers=carol)).status_code == 404  # not a member
    bad = await client.put(f"/api/v1/personas/{persona['id']}/tools/{echo_id}", headers=alice,
                           json={"input_schema": {"type": "no-such-type"}})
    assert bad.status_code == 422
    # Valid JSON Schema whose check of any value never ends: refused when saved.
    endless = await client.put(f"/api/v1/personas/{persona['id']}/tools/{echo_id}",
                               headers=alice, json={"input_schema": {"allOf": [{"$ref": "#"}]}})
    assert endless.status_code == 422 and "without end" in endless.json()["detail"]
    assert [g["input_schema"] for g in (await client.get(
        f"/api/v1/personas/{persona['id']}/tools", headers=alice)).json()] == [
        {"properties": {"text": {"type": "string", "maxLength": 20}}}]  # the grant kept

    agent = await create_agent(client, alice, slug="echoer", persona_id=persona["id"],
                               tool_permissions=[echo_id], is_public=False)
    # Bob (a viewer) runs it: the grant lets the run use Alice's tool; its constraints
    # refuse the second call and the over-long text, and the model is told.
    stub.script(ToolCalls(Call("echo", {"text": "hello"}),
                          Call("echo", {"text": "again"})),
                ToolCalls(Call("echo", {"text": "x" * 30})), Reply("done"))
    run = (await client.post(f"/api/v1/agents/{agent['id']}/runs", json={"input": "echo"},
                             headers=bob)).json()
    assert run["user_id"] == str(bob_id)
    done = await wait_for_run(client, bob, run["id"])
    assert done["status"] == "completed", done
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=bob)).json()
    tool_steps = [s for s in steps if s["step_type"] == "tool_call"]
    assert [s["status"] for s in tool_steps] == ["completed", "failed", "failed"]
    assert "hello" in str(tool_steps[0]["output"])
    assert "1 call(s)" in tool_steps[1]["error"]
    assert "maxLength" in tool_steps[2]["error"]

    # Revoked: the agent no longer gets the tool in new runs.
    assert (await client.delete(f"/api/v1/personas/{persona['id']}/tools/{echo_id}",
                                headers=alice)).status_code == 204
    stub.script(Reply("no tools now"))
    again = (await client.post(f"/api/v1/agents/{agent['id']}/runs", json={"input": "echo"},
                               headers=bob)).json()
    assert (await wait_for_run(client, bob, again["id"]))["status"] == "completed"
    assert "tools" not in stub.requests(path="/v1/chat/completions")[-1].body
    assert uuid.UUID(echo_id)


async def test_nul_in_grant_schema_is_a_422_naming_the_field(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A NUL in a grant's input_schema (stored as jsonb, which holds no NUL) is a 422
    naming the field, as in every other persona and agent body: it was the database's
    anonymous 400 "a value is out of range or malformed"."""
    _, alice = await make_user(database)
    listed = await client.get("/api/v1/tools", params={"kind": "builtin"}, headers=alice)
    items = listed.json()["items"]
    persona = await create_persona(client, alice)
    resp = await client.put(f"/api/v1/personas/{persona['id']}/tools/{items[0]['id']}",
                            headers=alice, json={"input_schema": {"description": "a\u0000b"}})
    assert resp.status_code == 422 and "input_schema" in resp.text, resp.text


async def test_rebinding_an_agent_keeps_only_tools_its_new_persona_lets_it_use(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    """A tool an agent may use only through its persona's grant (another member's private
    tool, named by id) does not stay in its tool_permissions when the agent moves to a
    persona without that grant or to none: the change is a 422 naming the tool (it would
    otherwise stay listed and silently drop out of every run); with the tool left out of
    the same change, or to a persona granting it too, the move is made."""
    _, alice = await make_user(database, admin=True)
    _, bob_name, bob = await named_user(database, "bob")
    echo_id = await _private_echo(client, alice)
    granting, also_granting, plain = [await create_persona(client, alice) for _ in range(3)]
    for persona in (granting, also_granting):
        assert (await client.put(f"/api/v1/personas/{persona['id']}/tools/{echo_id}",
                                 headers=alice, json={})).status_code == 200
    for persona in (granting, also_granting, plain):
        await add_member(client, admin_headers, persona["id"], bob_name, "editor")
    agent = await create_agent(client, bob, persona_id=granting["id"],
                               tool_permissions=[echo_id])

    for target in (plain["id"], None):
        moved = await client.patch(f"/api/v1/agents/{agent['id']}", headers=bob,
                                   json={"persona_id": target})
        assert moved.status_code == 422, moved.text
        assert echo_id in moved.json()["detail"] and "tool_permissions" in moved.json()["detail"]
    kept = (await client.get(f"/api/v1/agents/{agent['id']}", headers=bob)).json()
    assert kept["persona_id"] == granting["id"] and kept["tool_permissions"] == [echo_id]

    moved = await client.patch(f"/api/v1/agents/{agent['id']}", headers=bob,
                               json={"persona_id": also_granting["id"]})
    assert moved.status_code == 200, moved.text
    assert moved.json()["tool_permissions"] == [echo_id]
    moved = await client.patch(f"/api/v1/agents/{agent['id']}", headers=bob,
                               json={"persona_id": plain["id"], "tool_permissions": []})
    assert moved.status_code == 200, moved.text
    assert moved.json()["persona_id"] == plain["id"] and moved.json()["tool_permissions"] == []
