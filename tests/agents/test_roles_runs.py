"""Persona roles, runs of the persona's agents (docs/agents.md "Runs"): members and
administrators see them, nobody else, a removed member no longer; only the run's user or
an administrator cancels a run or has Roost learn from it (403 for the other members);
an outsider's run of a public persona agent gets none of the persona's tool grants; an
agent's slug reaches no private persona agent of another tenant."""

from __future__ import annotations

import sys

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.api import Headers, create_agent
from tests.agents.conftest import wait_for_run
from tests.agents.roles import Cast, Checker, make_cast, synced_tool, tool_steps
from tests.chat.conftest import add_provider, new_session
from tests.llm.agent_models import agent_models  # noqa: F401 (a fixture)
from tests.support.identity import join_persona
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls
from tests.support.sql import fetch, scalar
from tests.tools.conftest import ECHO_SERVER

INPUT = "confidential-run-input"


async def persona_runs(client: httpx.AsyncClient, c: Cast) -> tuple[str, str, str]:
    """An agent of the persona (by its owner) and two pending runs of it, the owner's and
    the viewer's (no worker: they stay pending)."""
    agent = await create_agent(client, c.owner.headers, persona_id=c.pid)
    by_owner = await client.post(f"/api/v1/agents/{agent['id']}/runs", headers=c.owner.headers,
                                 json={"input": INPUT})
    by_viewer = await client.post(f"/api/v1/agents/{agent['id']}/runs",
                                  headers=c.viewer.headers, json={"input": INPUT + "-v"})
    assert by_owner.status_code == 202 and by_viewer.status_code == 202, by_viewer.text
    return agent["id"], by_owner.json()["id"], by_viewer.json()["id"]


async def run_status(database: Database, run_id: str) -> str:
    return str(await scalar(database, "SELECT status FROM runs WHERE id = :id", id=run_id))


async def test_members_and_administrators_see_the_persona_s_runs_nobody_else(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    agent_id, run_id, _ = await persona_runs(client, c)
    for actor in c.all():
        one = await client.get(f"/api/v1/runs/{run_id}", headers=actor.headers)
        steps = await client.get(f"/api/v1/runs/{run_id}/steps", headers=actor.headers)
        by_persona = await client.get("/api/v1/runs", params={"persona_id": c.pid},
                                      headers=actor.headers)
        by_agent = await client.get("/api/v1/runs", params={"agent_id": agent_id},
                                    headers=actor.headers)
        if actor in c.readers():
            chk.check("GET /runs/{id}", actor, one, 200)
            chk.check("GET /runs/{id}/steps", actor, steps, 200)
            chk.that(run_id in by_persona.text, f"GET /runs?persona_id as {actor.name}: missing")
        else:
            events = await client.get(f"/api/v1/runs/{run_id}/events", headers=actor.headers)
            chk.check("GET /runs/{id}", actor, one, 404, leak=(INPUT,))
            chk.check("GET /runs/{id}/steps", actor, steps, 404, leak=(INPUT,))
            chk.check("GET /runs/{id}/events", actor, events, 404, leak=(INPUT,))
            for listed in (by_persona, by_agent,
                           await client.get("/api/v1/runs", headers=actor.headers)):
                chk.that(INPUT not in listed.text and run_id not in listed.text,
                         f"GET /runs as {actor.name} lists the persona's run")
    chk.done()


async def test_only_the_run_s_user_cancels_it_other_members_get_403(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    _, run_id, viewer_run = await persona_runs(client, c)
    for actor, target, code in ((c.outsider, run_id, 404), (c.group_peer, run_id, 404),
                                (c.viewer, run_id, 403), (c.editor, run_id, 403),
                                (c.co_owner, run_id, 403), (c.owner, viewer_run, 403)):
        resp = await client.post(f"/api/v1/runs/{target}/cancel", headers=actor.headers)
        chk.check("POST /runs/{another member's run}/cancel", actor, resp, code, leak=(INPUT,))
    chk.that([await run_status(database, r) for r in (run_id, viewer_run)] == ["pending"] * 2,
             "a run was cancelled by someone who is not its user")
    for actor, target in ((c.owner, run_id), (c.viewer, viewer_run)):
        resp = await client.post(f"/api/v1/runs/{target}/cancel", headers=actor.headers)
        chk.check("POST /runs/{own run}/cancel", actor, resp, 200)
        status = await run_status(database, target)
        chk.that(status == "cancelled", f"{actor.name} cancelled their own run: it is {status}")
    [[records]] = await fetch(database, "SELECT count(*) FROM audit_logs "
                                        "WHERE action = 'agent.run.cancel'")
    chk.that(records == 2, f"{records} agent.run.cancel audit records for 2 cancelled runs")
    chk.done()


async def test_only_the_run_s_user_has_roost_learn_from_it_other_members_get_403(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    """Learning writes into the run's user's memory, with their model calls: a member who
    sees the run may not ask for it."""
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    _, run_id, _ = await persona_runs(client, c)
    async with database.transaction() as session:
        await session.execute(text("UPDATE runs SET status = 'completed', output = 'Sure.' "
                                   "WHERE id = :id"), {"id": run_id})
    for actor, code in ((c.outsider, 404), (c.group_peer, 404), (c.viewer, 403),
                        (c.editor, 403), (c.co_owner, 403)):
        resp = await client.post(f"/api/v1/runs/{run_id}/learn", headers=actor.headers)
        chk.check("POST /runs/{owner's run}/learn", actor, resp, code, leak=(INPUT,))
    learn_jobs = "SELECT count(*) FROM background_tasks WHERE task_type = 'memory.learn'"
    jobs = await scalar(database, learn_jobs)
    chk.that(jobs == 0, f"{jobs} memory.learn job(s) queued by members for the owner's run")
    resp = await client.post(f"/api/v1/runs/{run_id}/learn", headers=c.owner.headers)
    chk.check("POST /runs/{own run}/learn", c.owner, resp, 202)
    chk.that(await scalar(database, learn_jobs) == 1, "the run's user queued no learning")
    chk.done()


async def test_a_removed_member_no_longer_sees_the_persona_s_runs_but_keeps_their_own(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    _, run_id, viewer_run = await persona_runs(client, c)
    assert (await client.get(f"/api/v1/runs/{run_id}", headers=c.viewer.headers)).status_code == 200
    assert (await client.delete(f"/api/v1/personas/{c.pid}/members/{c.viewer.id}",
                                headers=c.owner.headers)).status_code == 204
    for path in (f"/api/v1/runs/{run_id}", f"/api/v1/runs/{run_id}/steps",
                 f"/api/v1/runs/{run_id}/events"):
        chk.check(f"GET {path.replace(run_id, '{owner run}')} (removed)", c.viewer,
                  await client.get(path, headers=c.viewer.headers), 404, leak=(INPUT,))
    listed = await client.get("/api/v1/runs", params={"persona_id": c.pid},
                              headers=c.viewer.headers)
    chk.that(run_id not in listed.text, "a removed member still lists the persona's runs")
    # Their own run stays theirs (roost_row_visible(user_id)).
    chk.check("GET /runs/{own run} (removed)", c.viewer,
              await client.get(f"/api/v1/runs/{viewer_run}", headers=c.viewer.headers), 200)
    chk.done()


async def test_an_outsider_s_run_of_a_public_persona_agent_gets_none_of_its_tool_grants(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,
) -> None:
    """docs/agents.md: a granted tool serves the persona's agents in runs of its members.
    An outsider may run a public agent of the persona, without the persona's grants: the
    model's call of a member's private granted tool is a failed step, nothing is called."""
    c = await make_cast(client, database, admin_headers)
    await add_provider(client, admin_headers, stub)
    # The administrator user owns a private stdio echo tool (stdio needs an administrator),
    # and, made an editor of the persona, grants it.
    echo_id = await synced_tool(client, c.admin.headers, {
        "name": "admins-echo", "transport": "stdio", "command": sys.executable,
        "args": [str(ECHO_SERVER)]})
    assert (await client.get(f"/api/v1/tools/{echo_id}",
                             headers=c.outsider.headers)).status_code == 404
    await join_persona(client, c.owner.headers, c.pid, c.admin.id, c.admin.headers)
    grant = await client.put(f"/api/v1/personas/{c.pid}/tools/{echo_id}",
                             headers=c.admin.headers, json={})
    assert grant.status_code == 200, grant.text
    # An editor publishes the persona's agent (any editor may set is_public).
    agent = await create_agent(client, c.editor.headers, persona_id=c.pid,
                               tool_permissions=[echo_id], is_public=True)

    stub.script(ToolCalls(Call("echo", {"text": "from an outsider"})), Reply("done"))
    run = await client.post(f"/api/v1/agents/{agent['id']}/runs", headers=c.outsider.headers,
                            json={"input": "echo"})
    assert run.status_code == 202, run.text
    done = await wait_for_run(client, c.outsider.headers, run.json()["id"])
    assert done["status"] == "completed", done
    [step] = await tool_steps(client, c.outsider.headers, done["id"])
    assert step["status"] == "failed" and "unknown tool 'echo'" in step["error"], step
    [offered, told] = stub.requests(path="/v1/chat/completions")
    assert "tools" not in offered.body or not offered.body["tools"], offered.body
    [answer] = [m for m in told.body["messages"] if m["role"] == "tool"]
    assert "unknown tool" in answer["content"]
    assert await scalar(database, "SELECT count(*) FROM tool_runs WHERE tool_id = :t",
                        t=echo_id) == 0

    # The same agent run by a member (the viewer) uses the grant.
    stub.script(ToolCalls(Call("echo", {"text": "from a member"})), Reply("done"))
    member_run = await client.post(f"/api/v1/agents/{agent['id']}/runs",
                                   headers=c.viewer.headers, json={"input": "echo"})
    assert member_run.status_code == 202, member_run.text
    await wait_for_run(client, c.viewer.headers, member_run.json()["id"])
    [step] = await tool_steps(client, c.viewer.headers, member_run.json()["id"])
    assert step["status"] == "completed" and "from a member" in str(step["output"]), step


async def test_administrators_and_the_operator_cancel_any_run(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers,
) -> None:
    c = await make_cast(client, database, admin_headers)
    _, run_id, viewer_run = await persona_runs(client, c)
    for actor, target in ((c.admin, run_id), (c.operator, viewer_run)):
        resp = await client.post(f"/api/v1/runs/{target}/cancel", headers=actor.headers)
        assert resp.status_code == 200, (actor.name, resp.text)
        assert resp.json()["status"] == "cancelled", (actor.name, resp.text)


@pytest.mark.usefixtures("agent_models")
async def test_an_outsider_reaches_no_private_persona_agent_by_its_slug(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers, stub: StubServer,
) -> None:
    """model "agent:<slug>" on /v1/chat/completions and in a chat session resolves only
    agents the caller may see: another tenant's persona agent is a 404 (/v1's
    model_not_found), nothing started."""
    await add_provider(client, admin_headers, stub)
    c = await make_cast(client, database, admin_headers)
    chk = Checker()
    agent = await create_agent(client, c.owner.headers, persona_id=c.pid)
    model = f"agent:{agent['slug']}"
    # The agent code answers this model (a check of its own: no text for the agent).
    resp = await client.post("/v1/chat/completions", headers=c.owner.headers, json={
        "model": model, "messages": [{"role": "user", "content": " "}]})
    assert resp.status_code == 400 and "no text for the agent" in resp.text, resp.text
    for actor in (c.outsider, c.group_peer):
        resp = await client.post("/v1/chat/completions", headers=actor.headers, json={
            "model": model, "messages": [{"role": "user", "content": "hi"}]})
        chk.check("POST /v1/chat/completions model=agent:<persona slug>", actor, resp, 404)
        chk.that(resp.status_code != 404 or resp.json()["error"]["code"] == "model_not_found",
                 f"/v1 as {actor.name}: {resp.text[:200]}")
        chat = await new_session(client, actor.headers)
        resp = await client.post(f"/api/v1/chat/sessions/{chat['id']}/messages",
                                 headers=actor.headers, json={"content": "hi", "model": model})
        chk.check("POST /chat/sessions/{id}/messages model=agent:<persona slug>", actor, resp,
                  404)
    runs = await scalar(database, "SELECT count(*) FROM runs")
    chk.that(runs == 0, f"{runs} run(s) started by outsiders")
    chk.done()
