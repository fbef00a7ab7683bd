"""What a persona's member keeps once they are removed, or once a tool grant is taken back:
nothing, on every path and at once (docs/agents.md "Agents", "Tools granted to a
persona"; docs/debates.md: a participant agent is one "you can see and run").  A removed
creator of the persona's agent runs it nowhere (a run, a debate, a chat turn, /mcp), and a
refused chat turn stores nothing; a run's next granted call is refused once its grant is
revoked or its user removed mid-run; a tool a former editor granted is no longer offered."""

from __future__ import annotations

import asyncio
import json
import sys
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from sqlalchemy import text

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.api import Headers, add_member, create_agent, create_persona, named_user
from tests.agents.conftest import make_agent, running_worker, wait_for_run
from tests.agents.roles import make_cast, private_tool
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.mcp_client import mcp_session
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls
from tests.support.server import in_process
from tests.support.sql import scalar

ECHO_SERVER = Path(__file__).resolve().parents[1] / "tools" / "mcp_echo_server.py"


async def test_a_removed_creator_runs_the_persona_s_agent_on_no_path(
    app: FastAPI, client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """The editor who made the persona's agent is removed: a run, a debate seat, a chat
    turn and /mcp all refuse it (a refused chat turn stores nothing), while the owner is
    still offered it at /mcp."""
    c = await make_cast(client, database, admin_headers)
    agent = await create_agent(client, c.editor.headers, persona_id=c.pid,
                               slug=f"falcon-{uuid.uuid4().hex[:6]}")
    removed = await client.delete(f"/api/v1/personas/{c.pid}/members/{c.editor.id}",
                                  headers=c.owner.headers)
    assert removed.status_code == 204, removed.text
    tool = f"agent__{agent['slug']}"
    # In a served app: agents answer chat turns through a hook installed at start-up.
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        run = await http.post(f"/api/v1/agents/{agent['id']}/runs", headers=c.editor.headers,
                              json={"input": "hello"})
        assert run.status_code == 404, run.text  # an agent they may not see
        debate = await http.post("/api/v1/debates", headers=c.editor.headers, json={
            "topic": "Tabs or spaces?", "positions": ["tabs", "spaces"],
            "participants": [{"id": "a", "agent_id": agent["id"]}, {"id": "b", "model": "m"}],
            "total_rounds": 1})
        assert debate.status_code == 404, debate.text
        sid = (await http.post("/api/v1/chat/sessions", json={},
                               headers=c.editor.headers)).json()["id"]
        chat = await http.post(f"/api/v1/chat/sessions/{sid}/messages", headers=c.editor.headers,
                               json={"content": "hi", "model": f"agent:{agent['slug']}"})
        assert chat.status_code == 404, chat.text
        async with mcp_session(f"{base}/mcp", c.owner.headers) as session:
            assert tool in {t.name for t in (await session.list_tools()).tools}
        async with mcp_session(f"{base}/mcp", c.editor.headers) as session:
            offered = {t.name for t in (await session.list_tools()).tools}
            called = await session.call_tool(tool, {"input": "hi"})
    assert tool not in offered
    assert called.is_error
    assert await scalar(database, "SELECT count(*) FROM chat_messages WHERE session_id = :s",
                        s=sid) == 0
    assert await scalar(database, "SELECT count(*) FROM debate_sessions") == 0
    assert await scalar(database, "SELECT count(*) FROM runs WHERE agent_id = :a",
                        a=agent["id"]) == 0


async def _granted_echo_run(client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
                            database: Database) -> dict[str, Any]:
    """Alice's private echo tool granted to her persona; Bob (a viewer) starts a run whose
    model calls echo once, then, after a pause, once more.  Returns when the first call
    is done."""
    _, alice = await make_user(database, admin=True)  # an administrator may run stdio servers
    bob_id, bob_name, bob = await named_user(database, "bob")
    await add_provider(client, admin_headers, stub)
    server = await client.post("/api/v1/mcp-servers", headers=alice, json={
        "name": f"echo-{uuid.uuid4().hex[:6]}", "transport": "stdio", "command": sys.executable,
        "args": [str(ECHO_SERVER)]})
    assert server.status_code == 201, server.text
    assert (await client.post(f"/api/v1/mcp-servers/{server.json()['id']}/sync",
                              headers=alice)).status_code == 200
    tools = (await client.get("/api/v1/tools", params={"name": "echo"}, headers=alice)).json()
    echo_id = next(t["id"] for t in tools["items"] if t["name"] == "echo")
    persona = await create_persona(client, alice)
    await add_member(client, alice, persona["id"], bob_name, "viewer")
    grant = await client.put(f"/api/v1/personas/{persona['id']}/tools/{echo_id}", headers=alice,
                             json={})
    assert grant.status_code == 200, grant.text
    agent = await create_agent(client, alice, persona_id=persona["id"],
                               tool_permissions=[echo_id])
    # The pause gives the test time to take the grant back between the two calls.
    stub.script(ToolCalls(Call("echo", {"text": "first"})),
                ToolCalls(Call("echo", {"text": "second"}), delay_ms=2000), Reply("done"))
    run = (await client.post(f"/api/v1/agents/{agent['id']}/runs", json={"input": "echo"},
                             headers=bob)).json()
    assert run["user_id"] == str(bob_id)
    deadline = asyncio.get_running_loop().time() + 30
    while True:
        steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=bob)).json()
        if any(s["step_type"] == "tool_call" and s["status"] == "completed" for s in steps):
            break
        assert asyncio.get_running_loop().time() < deadline, steps
        await asyncio.sleep(0.05)
    return {"alice": alice, "bob": bob, "bob_id": bob_id, "persona": persona["id"],
            "echo": echo_id, "run": run["id"]}


@pytest.mark.parametrize("taken_back", ["grant revoked", "member removed"])
async def test_a_run_s_next_granted_call_is_refused_once_the_grant_is_taken_back(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker, taken_back: str,
) -> None:
    s = await _granted_echo_run(client, admin_headers, stub, database)
    url = (f"/api/v1/personas/{s['persona']}/tools/{s['echo']}" if taken_back == "grant revoked"
           else f"/api/v1/personas/{s['persona']}/members/{s['bob_id']}")
    revoked = await client.delete(url, headers=s["alice"])
    assert revoked.status_code == 204, revoked.text
    done = await wait_for_run(client, s["bob"], s["run"])
    assert done["status"] == "completed", done
    steps = (await client.get(f"/api/v1/runs/{s['run']}/steps", headers=s["bob"])).json()
    calls = [st for st in steps if st["step_type"] == "tool_call"]
    assert [st["status"] for st in calls] == ["completed", "failed"], calls


async def test_a_tool_a_former_editor_granted_is_no_longer_offered_to_the_persona_s_runs(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,
) -> None:
    """An editor grants the persona their own private tool, then leaves: the grant is no
    longer theirs to revoke (404), and no run of the persona is offered their tool."""
    c = await make_cast(client, database, admin_headers)
    await add_provider(client, admin_headers, stub)
    tool = await private_tool(database, c.editor.id, name="editors_private_tool")
    granted = await client.put(f"/api/v1/personas/{c.pid}/tools/{tool}", json={},
                               headers=c.editor.headers)
    assert granted.status_code == 200, granted.text
    agent = await create_agent(client, c.owner.headers, persona_id=c.pid,
                               tool_permissions=[str(tool)])
    left = await client.delete(f"/api/v1/personas/{c.pid}/members/{c.editor.id}",
                               headers=c.editor.headers)
    assert left.status_code == 204, left.text
    revoke = await client.delete(f"/api/v1/personas/{c.pid}/tools/{tool}",
                                 headers=c.editor.headers)
    assert revoke.status_code == 404
    stub.script(Reply("done"))
    run = (await client.post(f"/api/v1/agents/{agent['id']}/runs", json={"input": "go"},
                             headers=c.owner.headers)).json()
    assert (await wait_for_run(client, c.owner.headers, run["id"]))["status"] == "completed"
    offered = json.dumps(stub.requests(path="/v1/chat/completions")[-1].body.get("tools", []))
    assert "editors_private_tool" not in offered


async def test_a_run_stops_seeing_a_group_s_documents_once_its_user_leaves_the_group(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, test_settings: Any, monkeypatch: pytest.MonkeyPatch, tmp_path: Path,
) -> None:
    """A run's searches use the user's groups as they are at each step, not as they were
    when it started: removed from the group while a tool runs, the run's next
    knowledge_search no longer finds the group's document."""
    from roost.knowledge.config import EmbedderSpec, KnowledgeConfig
    from tests.agents.conftest import make_agent
    from tests.agents.test_races_runs import slow_current_time
    from tests.agents.test_runs import start
    from tests.knowledge.support import ingest, make_group, principal

    alice_id, alice = await make_user(database)
    bob_id, _ = await make_user(database)
    group = await make_group(database, "team", alice_id, bob_id)
    (tmp_path / "plan.txt").write_text("The zebra migration plan is shared with the team.")
    cfg = KnowledgeConfig(ingest_roots=(tmp_path,), chunk_tokens=64, overlap_tokens=8,
                          embedder=EmbedderSpec("hash", "dev-hashing-384", 384))
    await ingest(database, principal(bob_id, group), cfg, str(tmp_path / "plan.txt"),
                 group_id=group)  # here, with the hash embedder: its queued job is dropped
    async with database.transaction() as s:
        await s.execute(text("DELETE FROM background_tasks"))
    await add_provider(client, admin_headers, stub)
    tool_started = slow_current_time(monkeypatch, 1.5)
    agent = await make_agent(database, alice_id,
                             tool_permissions=["knowledge_search", "current_time"])
    search = Call("knowledge_search", {"query": "zebra migration plan"})
    stub.script(ToolCalls(search), ToolCalls(Call("current_time", {"timezone": "UTC"})),
                ToolCalls(search), Reply("Done."))
    run = await start(client, alice, agent.id)
    async with running_worker(app, database, test_settings, knowledge=cfg):
        await asyncio.wait_for(tool_started.wait(), 20)
        async with database.transaction() as s:  # removed from the group while the tool runs
            await s.execute(text("DELETE FROM user_group_memberships WHERE user_id = :u"),
                            {"u": alice_id})
        assert (await wait_for_run(client, alice, run["id"]))["status"] == "completed"
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=alice)).json()
    calls = [st for st in steps if st["step_type"] == "tool_call"]
    found = [st["output"] for st in calls if "zebra" in json.dumps(st["input"])]
    assert len(found) == 2, calls
    assert [len(f["results"]) for f in found] == [1, 0], found


async def _queue_run(client: httpx.AsyncClient, headers: Headers,
                     agent_id: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/agents/{agent_id}/runs", json={"input": "hello"},
                             headers=headers)
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def _run_error(database: Database, run_id: str) -> str:
    return str(await scalar(database, "SELECT error_message FROM runs WHERE id = :r",
                            r=run_id) or "")


async def test_a_stranger_s_queued_run_does_not_start_once_the_agent_is_made_private(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers], test_settings: Any,
) -> None:
    """A public agent made private by its owner: a stranger's run queued just before ends
    failed, saying so, without asking the model.  Before, it ran with the agent's prompt
    for a user who could no longer see the agent."""
    owner_id, owner = user
    _, stranger = other_user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("Should not be asked.", times=None))
    agent = await make_agent(database, owner_id, is_public=True)
    run = await _queue_run(client, stranger, agent.id)
    resp = await client.patch(f"/api/v1/agents/{agent.id}", headers=owner,
                              json={"is_public": False})
    assert resp.status_code == 200, resp.text
    async with running_worker(app, database, test_settings):
        done = await wait_for_run(client, stranger, run["id"])
    assert done["status"] == "failed", done
    assert "no longer shared with you" in await _run_error(database, run["id"])
    assert stub.requests(path="/v1/chat/completions") == []


async def test_an_old_member_s_queued_run_does_not_start_once_the_agent_moved_persona(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers], test_settings: Any,
) -> None:
    """An agent moved from persona A to persona B: a run a member of A only queued just
    before ends failed, saying so, without asking the model.  Before, it ran B's agent
    with A's prompt, grants and secrets for a user who no longer saw the agent."""
    _, owner = user
    member_id, member = other_user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("Should not be asked.", times=None))
    pa = await create_persona(client, owner)
    pb = await create_persona(client, owner)
    await add_member(client, admin_headers, pa["id"], str(member_id), "viewer")
    agent = await create_agent(client, owner, persona_id=pa["id"])
    run = await _queue_run(client, member, agent["id"])
    resp = await client.patch(f"/api/v1/agents/{agent['id']}", headers=owner,
                              json={"persona_id": pb["id"]})
    assert resp.status_code == 200, resp.text
    assert (await client.get(f"/api/v1/agents/{agent['id']}", headers=member)).status_code == 404
    async with running_worker(app, database, test_settings):
        done = await wait_for_run(client, owner, run["id"])
    assert done["status"] == "failed", done
    assert "moved to another persona" in await _run_error(database, run["id"])
    assert stub.requests(path="/v1/chat/completions") == []
