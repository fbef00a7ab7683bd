"""Agent runs through the API and a real worker: the tool loop, limits, bad tool calls,
cancel, idempotency, events, another tenant's runs."""

from __future__ import annotations

import asyncio
import itertools
import json
import uuid
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from roost.llm import routing
from roost.tasks.worker import Worker
from tests.agents.conftest import Headers, make_agent, running_worker, wait_for_run
from tests.billing.metered import metered_user, settled, subscribe
from tests.chat.conftest import add_provider, sse_events
from tests.support.identity import make_user
from tests.support.lifecycle import assert_audit_chain_intact, no_open_jobs
from tests.support.mcp_client import mcp_session
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Hang, Reply, ToolCalls
from tests.support.server import in_process
from tests.support.sql import fetch


async def start(client: httpx.AsyncClient, headers: Headers, agent_id: uuid.UUID,
                text_: str = "What time is it?", **fields: Any) -> dict[str, Any]:
    resp = await client.post(f"/api/v1/agents/{agent_id}/runs",
                             json={"input": text_, **fields}, headers=headers)
    assert resp.status_code == 202, resp.text
    body: dict[str, Any] = resp.json()
    return body


async def test_a_run_calls_two_tools_then_answers(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time", {"timezone": "Europe/Paris"})),
                ToolCalls(Call("current_time", {"timezone": "Asia/Tokyo"})),
                Reply("It is late in Tokyo."))
    run = await start(client, headers, agent.id)
    assert run["status"] == "pending" and run["trace_id"].startswith("00-")
    done = await wait_for_run(client, headers, run["id"])
    assert done["status"] == "completed", done
    assert done["stop_reason"] == "final" and done["output"] == "It is late in Tokyo."
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    assert [(s["step_number"], s["step_type"], s["status"]) for s in steps] == [
        (1, "llm_call", "completed"), (2, "tool_call", "completed"),
        (3, "llm_call", "completed"), (4, "tool_call", "completed"),
        (5, "llm_call", "completed")]
    assert steps[1]["output"]["timezone"] == "Europe/Paris" and steps[1]["tool_run_id"]
    assert done["tokens_in"] > 0 and done["steps_count"] == 5
    # The model saw the tools in OpenAI's form and each tool's result.
    seen = stub.requests(path="/v1/chat/completions")
    assert seen[0].body["tools"][0]["function"]["name"] == "current_time"
    assert seen[1].body["messages"][-1]["role"] == "tool"
    assert "Europe/Paris" in seen[1].body["messages"][-1]["content"]
    async with database.transaction() as session:
        linked = (await session.execute(text(
            "SELECT (SELECT count(*) FROM tool_runs WHERE run_id = :r), "
            "(SELECT count(*) FROM usage_records WHERE run_id = :r AND agent_id = :a)"),
            {"r": run["id"], "a": agent.id})).one()
    assert tuple(linked) == (2, 3)


async def test_bad_tool_calls_are_failed_steps_the_model_is_told_of(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("rm_rf", {"path": "/"}), Call("current_time", "{not json")),
                ToolCalls(Call("current_time", {"timezone": "Mars/Olympus"})),
                Reply("Sorry, I could not."))
    run = await start(client, headers, agent.id)
    done = await wait_for_run(client, headers, run["id"])
    assert done["status"] == "completed", done
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    failed = [s for s in steps if s["status"] == "failed"]
    assert len(failed) == 3
    assert "unknown tool 'rm_rf'" in failed[0]["error"]
    assert "not valid JSON" in failed[1]["error"]
    assert "time zone" in failed[2]["error"]  # the tool's own error, as a failed tool run
    seen = stub.requests(path="/v1/chat/completions")
    told = [m for m in seen[1].body["messages"] if m["role"] == "tool"]
    assert len(told) == 2 and "unknown tool" in told[0]["content"]


async def test_max_steps_stops_a_looping_agent(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"],
                             config={"max_steps": 2})
    stub.script(*[ToolCalls(Call("current_time")) for _ in range(5)])
    done = await wait_for_run(client, headers, (await start(client, headers, agent.id))["id"])
    assert (done["status"], done["stop_reason"]) == ("completed", "max_steps")
    assert len(stub.requests(path="/v1/chat/completions")) == 2


async def test_a_credit_budget_of_zero_is_refused_and_one_stored_before_still_runs(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """config.max_cost 0 would stop every run before its first model call: a 422 when
    configured (create or change), as max_tokens 0 is.  An agent stored with it before
    still reads and runs (its runs stop at once, budget), never a 500."""
    user_id, headers = user
    for config in ({"max_cost": 0}, {"max_tokens": 0}):
        made = await client.post("/api/v1/agents", headers=headers, json={
            "name": "A", "slug": f"a-{uuid.uuid4().hex[:8]}", "config": config})
        assert made.status_code == 422, (config, made.text)
    agent = await make_agent(database, user_id)
    changed = await client.patch(f"/api/v1/agents/{agent.id}", headers=headers,
                                 json={"config": {"max_cost": 0}})
    assert changed.status_code == 422, changed.text
    assert "max_cost" in changed.text
    async with database.transaction() as session:  # as stored before it was refused
        await session.execute(text("UPDATE agents SET config = '{\"max_cost\": 0}' "
                                   "WHERE id = :a"), {"a": agent.id})
    read = await client.get(f"/api/v1/agents/{agent.id}", headers=headers)
    assert read.status_code == 200 and read.json()["config"]["max_cost"] == 0, read.text
    await add_provider(client, admin_headers, stub)
    done = await wait_for_run(client, headers, (await start(client, headers, agent.id))["id"])
    assert (done["status"], done["stop_reason"]) == ("completed", "budget"), done
    assert stub.requests(path="/v1/chat/completions") == []


async def test_a_timeout_ends_the_run_and_closes_the_call_it_cut_off(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"],
                             config={"timeout_s": 5})  # the first two steps fit on a loaded machine
    stub.script(ToolCalls(Call("current_time")), Hang())
    run = await start(client, headers, agent.id)
    done = await wait_for_run(client, headers, run["id"])
    assert (done["stop_reason"], done["steps_count"]) == ("timeout", 3), done
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    # The call the timeout cut off is closed with the run (by its own cancellation, or
    # by the run's end), never left running.
    assert [(s["step_type"], s["status"]) for s in steps] == [
        ("llm_call", "completed"), ("tool_call", "completed"), ("llm_call", "failed")]
    assert steps[2]["error"].startswith("cancelled") and steps[2]["finished_at"]
    async with database.transaction() as session:
        ended = (await session.execute(text(
            "SELECT (SELECT array_agg(action) FROM audit_logs WHERE resource_id = :r "
            "AND action LIKE 'agent.run.%'), "
            "(SELECT count(*) FROM clickhouse_analytics WHERE event_type = 'agent.run' "
            " AND event_data->>'run_id' = :r AND event_data->>'stop_reason' = 'timeout')"),
            {"r": run["id"]})).one()
    end = "complete" if done["status"] == "completed" else "fail"
    assert ended[0] == ["agent.run.create", f"agent.run.{end}"]
    assert ended[1] == 1


async def test_a_run_out_of_time_as_its_model_step_starts_leaves_nothing_running_or_held(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The run's time passes between its limit check and its model call (here while the
    step resolves its route): the call is never made, and its request is closed
    (failed) and a metered user's held credits given back, not left running and held."""
    owner, headers = await metered_user(client, admin_headers, stub, database, 100_000)
    resolve = routing.resolve_route

    async def slow_route(*args: Any, **kwargs: Any) -> Any:
        await asyncio.sleep(0.3)
        return await resolve(*args, **kwargs)

    monkeypatch.setattr(routing, "resolve_route", slow_route)
    agent = await make_agent(database, owner, config={"timeout_s": 0.2})
    done = await wait_for_run(client, headers, (await start(client, headers, agent.id))["id"])
    assert (done["status"], done["stop_reason"]) == ("completed", "timeout"), done
    async with database.transaction() as session:
        steps = (await session.execute(text(
            "SELECT s.status, s.error, r.status AS request FROM run_steps s "
            "JOIN llm_requests r ON r.id = s.llm_request_id WHERE s.run_id = :r"),
            {"r": done["id"]})).all()
    assert [(s.status, s.request) for s in steps] == [("failed", "failed")], steps
    assert "not asked" in steps[0].error and stub.requests(path="/v1/chat/completions") == []
    ledger = await settled(database, owner)
    assert (ledger["held"], ledger["reserved"], ledger["used"]) == (0, 0, 0), ledger


async def test_a_tool_comes_with_what_it_requires_in_its_users_graph_only(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    user_id, headers = user
    bob_id, bob = await make_user(database)
    await add_provider(client, admin_headers, stub)
    builtins = {t["name"]: t["id"] for t in (await client.get(
        "/api/v1/tools", params={"kind": "builtin"}, headers=headers)).json()["items"]}
    # current_time -> knowledge_search -> web_fetch, in the user's own dependency graph.
    for tool, needs in (("current_time", "knowledge_search"), ("knowledge_search", "web_fetch")):
        added = await client.post(f"/api/v1/tools/{builtins[tool]}/dependencies",
                                  headers=headers, json={"depends_on_tool_id": builtins[needs]})
        assert added.status_code == 201, added.text
    offered: dict[uuid.UUID, list[str]] = {}
    for owner, owner_headers in ((user_id, headers), (bob_id, bob)):
        agent = await make_agent(database, owner, tool_permissions=["current_time"])
        stub.script(Reply("Done."))
        done = await wait_for_run(client, owner_headers,
                                  (await start(client, owner_headers, agent.id))["id"])
        assert done["status"] == "completed", done
        sent = stub.requests(path="/v1/chat/completions")[-1].body
        offered[owner] = [t["function"]["name"] for t in sent["tools"]]
    # Nearest first, transitively; another user's edges do not reach bob's runs.
    assert offered[user_id] == ["current_time", "knowledge_search", "web_fetch"]
    assert offered[bob_id] == ["current_time"]


async def test_required_tools_in_diamonds_are_offered_once_each_without_walking_every_path(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """28 layers of two tools, each requiring both tools of the next: 2 ** 28 paths down
    the graph (the walk once followed every one of them), 57 tools to offer."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    layers = [[f"layer{depth}_{i}" for i in range(1 if depth == 0 else 2)] for depth in range(29)]
    async with database.transaction() as session:
        ids = {name: (await session.execute(text(
            "INSERT INTO tools (id, user_id, kind, name, description, input_schema) "
            "VALUES (gen_random_uuid(), :u, 'builtin', :n, 'a layer', '{\"type\": \"object\"}') "
            "RETURNING id"), {"u": user_id, "n": name})).scalar_one()
            for layer in layers for name in layer}
        for upper, lower in itertools.pairwise(layers):
            for tool in upper:
                for needed in lower:
                    await session.execute(text(
                        "INSERT INTO tool_dependencies (id, tool_id, depends_on_tool_id, user_id) "
                        "VALUES (gen_random_uuid(), :t, :d, :u)"),
                        {"t": ids[tool], "d": ids[needed], "u": user_id})
    agent = await make_agent(database, user_id, tool_permissions=["layer0_0"])
    stub.script(Reply("Done."))
    done = await wait_for_run(client, headers, (await start(client, headers, agent.id))["id"])
    assert done["status"] == "completed", done
    sent = stub.requests(path="/v1/chat/completions")[-1].body
    offered = [t["function"]["name"] for t in sent["tools"]]
    assert sorted(offered) == sorted(name for layer in layers for name in layer)  # once each
    depth = [int(name.removeprefix("layer").split("_")[0]) for name in offered]
    assert depth == sorted(depth)  # nearest first


async def test_cancel_mid_call_closes_the_run_and_its_open_step(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    stub.script(Hang())
    run = await start(client, headers, agent.id)
    await wait_for_run(client, headers, run["id"], ("running",))
    for _ in range(100):  # the model call has started
        steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
        if steps:
            break
        await asyncio.sleep(0.05)
    cancelled = await client.post(f"/api/v1/runs/{run['id']}/cancel", headers=headers)
    assert cancelled.status_code == 200, cancelled.text
    assert (cancelled.json()["status"], cancelled.json()["stop_reason"]) == ("cancelled",
                                                                            "cancelled")
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    assert [s["status"] for s in steps] == ["cancelled"]
    again = await client.post(f"/api/v1/runs/{run['id']}/cancel", headers=headers)
    assert again.status_code == 409
    await asyncio.sleep(2.5)  # the worker notices, stops, and changes nothing
    final = (await client.get(f"/api/v1/runs/{run['id']}", headers=headers)).json()
    assert final["status"] == "cancelled"


async def test_idempotency_key_returns_the_first_run(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers],
) -> None:
    user_id, headers = user
    agent = await make_agent(database, user_id)
    # A run is its runner's: the operator token (no user) is refused, not a 500.
    as_operator = await client.post(f"/api/v1/agents/{agent.id}/runs", headers=admin_headers,
                                    json={"input": "What time is it?"})
    assert as_operator.status_code == 403 and "operator token" in as_operator.json()["detail"]
    # A NUL cannot be stored in text: refused by the body (422 naming the field, as the CLI
    # refuses it), never the database's error, never a 500.
    nul = await client.post(f"/api/v1/agents/{agent.id}/runs", headers=headers,
                            json={"input": "before\u0000after"})
    assert nul.status_code == 422 and "input" in nul.text, nul.text
    first = await start(client, headers, agent.id, idempotency_key="k-1")
    second = await start(client, headers, agent.id, idempotency_key="k-1")
    assert second["id"] == first["id"] and second["input"] == "What time is it?"
    # The same key for something else is the client's mistake: said, not hidden.
    other_agent = await make_agent(database, user_id)
    for agent_id, text_ in ((agent.id, "a different input"), (other_agent.id, first["input"])):
        reused = await client.post(f"/api/v1/agents/{agent_id}/runs", headers=headers,
                                   json={"input": text_, "idempotency_key": "k-1"})
        assert reused.status_code == 422, reused.text
        assert reused.json()["run_id"] == first["id"]
    async with database.transaction() as session:
        jobs = await session.scalar(text(
            "SELECT count(*) FROM background_tasks WHERE task_type = 'agents.run'"))
        created = await session.scalar(text(
            "SELECT count(*) FROM audit_logs WHERE action = 'agent.run.create'"))
    assert jobs == 1 and created == 1  # the replay wrote neither a job nor a record


@pytest.mark.parametrize("plan", ["runs_per_day", "balance"])
async def test_an_idempotent_retry_returns_the_first_run_at_the_plan_s_limits(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database, plan: str,
) -> None:
    """The same idempotency key and input again return the first run (docs: a replay
    writes nothing), even when the plan would refuse a new run now: the first run used
    up its runs_per_day, or the balance is 0 since."""
    user_id, headers = await make_user(database)
    await subscribe(client, admin_headers, user_id, 10_000,
                    **({"runs_per_day": 1} if plan == "runs_per_day" else {}))
    agent = await make_agent(database, user_id)
    first = await start(client, headers, agent.id, text_="hi", idempotency_key="retry-1")
    if plan == "balance":
        async with database.transaction() as session:
            await session.execute(text("UPDATE subscriptions SET credits_used = credits_limit "
                                       "WHERE user_id = :u"), {"u": user_id})
    again = await start(client, headers, agent.id, text_="hi", idempotency_key="retry-1")
    assert again["id"] == first["id"]
    # A new run is refused all the same, and a reused key for another input still a 422.
    new = await client.post(f"/api/v1/agents/{agent.id}/runs", headers=headers,
                            json={"input": "hi", "idempotency_key": "retry-2"})
    assert new.status_code == (403 if plan == "runs_per_day" else 402), new.text
    reused = await client.post(f"/api/v1/agents/{agent.id}/runs", headers=headers,
                               json={"input": "other", "idempotency_key": "retry-1"})
    assert reused.status_code == 422 and reused.json()["run_id"] == first["id"], reused.text


async def test_another_tenant_sees_no_agent_and_no_run(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    user_id, headers = user
    _, other_headers = other_user
    agent = await make_agent(database, user_id)
    run = await start(client, headers, agent.id)
    denied = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
                               headers=other_headers)
    assert denied.status_code == 404
    for path in (f"/api/v1/runs/{run['id']}", f"/api/v1/runs/{run['id']}/steps",
                 f"/api/v1/runs/{run['id']}/events"):
        assert (await client.get(path, headers=other_headers)).status_code == 404, path
    assert (await client.post(f"/api/v1/runs/{run['id']}/cancel",
                              headers=other_headers)).status_code == 404
    assert (await client.get("/api/v1/runs", headers=other_headers)).json()["items"] == []
    public = await make_agent(database, user_id, is_public=True)
    assert (await client.post(f"/api/v1/agents/{public.id}/runs", json={"input": "hi"},
                              headers=other_headers)).status_code == 202
    bad = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": ""},
                            headers=headers)
    assert bad.status_code == 422


async def test_events_stream_steps_and_resume_after_last_event_id(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time")), Reply("Noon."))
    run = await start(client, headers, agent.id)
    streamed = await client.get(f"/api/v1/runs/{run['id']}/events", headers=headers,
                                timeout=30)
    assert streamed.status_code == 200
    assert streamed.headers["content-type"].startswith("text/event-stream")
    events = sse_events(streamed.text)
    ids = [line[4:] for line in streamed.text.splitlines() if line.startswith("id: ")]
    assert ids == ["1.0", "1.1", "2.0", "2.1", "3.0", "3.1", "end"]
    assert events[-1][0] == "end" and events[-1][1]["output"] == "Noon."
    resumed = await client.get(f"/api/v1/runs/{run['id']}/events",
                               headers={**headers, "Last-Event-ID": "2.0"}, timeout=30)
    ids = [line[4:] for line in resumed.text.splitlines() if line.startswith("id: ")]
    assert ids == ["2.1", "3.0", "3.1", "end"]
    assert json.loads(resumed.text.split("data: ", 1)[1].split("\n", 1)[0])["phase"] == "finished"
    # Unreadable ids start over; a step past any a run can have (one beyond the column's
    # range broke the stream after it had started) reads as "end".
    for last, expected in (("garbage", 7), ("-3", 7), ("9" * 30, 1), ("end", 1)):
        again = await client.get(f"/api/v1/runs/{run['id']}/events",
                                 headers={**headers, "Last-Event-ID": last}, timeout=30)
        ids = [line[4:] for line in again.text.splitlines() if line.startswith("id: ")]
        assert again.status_code == 200 and len(ids) == expected and ids[-1] == "end", again.text


async def test_an_openai_client_talks_to_an_agent_as_a_model(
    app: Any, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, client: httpx.AsyncClient,
) -> None:
    """The `openai` SDK, unchanged, with model "agent:<slug>": whole and streamed answers
    are the agent's runs (tools called on the way)."""
    from openai import AsyncOpenAI, NotFoundError

    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user_id, slug="clock", tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time")), Reply("It is noon."), Reply("Still noon."))
    async with app.router.lifespan_context(app), httpx.AsyncClient(
            transport=httpx.ASGITransport(app=app), base_url="http://roost.test") as http:
        sdk = AsyncOpenAI(api_key=headers["Authorization"].split(" ", 1)[1],
                          base_url="http://roost.test/v1", http_client=http)
        answer = await sdk.chat.completions.create(
            model="agent:clock", messages=[{"role": "user", "content": "What time is it?"}])
        assert answer.choices[0].message.content == "It is noon."
        run_id = answer.model_extra["roost"]["run_id"]  # type: ignore[index]
        steps = (await http.get(f"/api/v1/runs/{run_id}/steps", headers=headers)).json()
        assert [s["step_type"] for s in steps] == ["llm_call", "tool_call", "llm_call"]
        streamed = await sdk.chat.completions.create(
            model="agent:clock", stream=True,
            messages=[{"role": "user", "content": "And now?"}])
        text_ = "".join([c.choices[0].delta.content or "" async for c in streamed
                         if c.choices])
        assert text_ == "Still noon."
        with pytest.raises(NotFoundError):
            await sdk.chat.completions.create(
                model="agent:nobody", messages=[{"role": "user", "content": "hi"}])


async def test_agents_are_tools_at_mcp_for_whoever_may_run_them(
    app: Any, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], other_user: tuple[uuid.UUID, Headers], worker: Worker,
    client: httpx.AsyncClient,
) -> None:
    user_id, headers = user
    _, other_headers = other_user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user_id, slug="private-helper", description="Mine only")
    await make_agent(database, user_id, slug="shared-helper", is_public=True)
    async with in_process(app) as base:
        async with mcp_session(f"{base}/mcp", headers) as session:
            names = {t.name for t in (await session.list_tools()).tools}
            assert {"agent__private-helper", "agent__shared-helper"} <= names
            # The call waits for the run with no transaction of /mcp's left open.
            stub.script(Reply("Answered over MCP, slowly and surely, word by word.",
                              chunk_delay_ms=300))
            call = asyncio.ensure_future(
                session.call_tool("agent__private-helper", {"input": "hello"}))
            idle_seen = []
            while not call.done():
                await asyncio.sleep(0.1)
                async with database.transaction() as s:
                    # Held for the call, a transaction would sit idle for seconds; the
                    # runner's own short ones pass between statements (seen on a busy
                    # machine), so only one idle for over a second counts.
                    idle_seen.append(await s.scalar(text(
                        "SELECT count(*) FROM pg_stat_activity WHERE datname = "
                        "current_database() AND state = 'idle in transaction' "
                        "AND state_change < now() - interval '1 second'")))
            result = await call
            assert len(idle_seen) >= 3 and max(idle_seen) == 0, idle_seen
            assert not result.is_error, result
            assert result.structured_content["output"] == \
                "Answered over MCP, slowly and surely, word by word."
            assert result.structured_content["status"] == "completed"
        async with mcp_session(f"{base}/mcp", other_headers) as session:
            names = {t.name for t in (await session.list_tools()).tools}
            assert "agent__shared-helper" in names and "agent__private-helper" not in names
            refused = await session.call_tool("agent__private-helper", {"input": "hello"})
            assert refused.is_error


async def _listening(app: Any) -> None:
    """Until the app's LISTEN connection is up (its start-up runs it in the background)."""
    for _ in range(100):
        if app.state.run_listener.listening:
            return
        await asyncio.sleep(0.05)


async def test_events_carry_the_model_text_as_it_streams(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """With the app started (its LISTEN connection up), the model's text reaches the
    client while the step runs."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    words = "one two three four five six seven eight nine ten"
    stub.script(Reply(words, chunk_delay_ms=80))
    async with app.router.lifespan_context(app):
        await _listening(app)
        run = await start(client, headers, agent.id)
        streamed = await client.get(f"/api/v1/runs/{run['id']}/events", headers=headers,
                                    timeout=30)
    deltas = [data for name, data in sse_events(streamed.text) if name == "delta"]
    assert len(deltas) >= 2, streamed.text  # the text arrived in pieces, before the step ended
    assert all(d["step_number"] == 1 for d in deltas)
    assert "".join(d["text"] for d in deltas) == words
    kinds = [name for name, _ in sse_events(streamed.text)]
    assert kinds.index("delta") > kinds.index("step") and kinds[-1] == "end"


async def test_the_model_text_sent_with_its_step_s_start_reaches_the_stream(
    app: Any, client: httpx.AsyncClient, database: Database,
    user: tuple[uuid.UUID, Headers],
) -> None:
    """A step's start and its first text can reach a stream in one wake-up (an instant
    model): that text is sent after the step's start, not dropped because the stream had
    not read the step yet."""
    user_id, headers = user
    agent = await make_agent(database, user_id)
    async with app.router.lifespan_context(app):
        await _listening(app)
        run = await start(client, headers, agent.id)
        streaming = asyncio.ensure_future(client.get(
            f"/api/v1/runs/{run['id']}/events", headers=headers, timeout=30))
        await asyncio.sleep(0.5)  # the stream has read the run (no step) and waits
        notify = "SELECT pg_notify('roost_runs', :payload)"
        async with database.transaction() as s:  # both notifications arrive at commit
            await s.execute(text(
                "INSERT INTO run_steps (id, run_id, user_id, step_number, step_type, status, "
                "started_at) VALUES (gen_random_uuid(), :r, :u, 1, 'llm_call', 'running', "
                "now())"), {"r": run["id"], "u": user_id})
            await s.execute(text(notify), {"payload": f"{run['id']}:step:1:running"})
            await s.execute(text(notify), {"payload": f"{run['id']}:delta:1:Hello"})
        await asyncio.sleep(0.5)
        async with database.transaction() as s:
            await s.execute(text("UPDATE run_steps SET status = 'completed', "
                                 "finished_at = now(), output = '{}' WHERE run_id = :r"),
                            {"r": run["id"]})
            await s.execute(text("UPDATE runs SET status = 'completed', output = 'Hello', "
                                 "completed_at = now(), stop_reason = 'final' WHERE id = :r"),
                            {"r": run["id"]})
            await s.execute(text(notify), {"payload": f"{run['id']}:end:completed"})
        streamed = await asyncio.wait_for(streaming, 30)
    named = [(name, data) for name, data in sse_events(streamed.text)]
    kinds = [name for name, _ in named]
    assert [data for name, data in named if name == "delta"] == [
        {"step_number": 1, "text": "Hello"}], streamed.text
    assert kinds.index("step") < kinds.index("delta") < kinds.index("end"), kinds


async def test_a_run_queued_before_its_user_was_suspended_does_not_start(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers], test_settings: Any,
) -> None:
    """Queued while no worker ran; the account is suspended; the worker that picks the
    run up ends it failed, saying why, without asking the model (its job completes: no
    retry); the same for a deactivated account."""
    from tests.agents.test_races_runs import settled_job  # (which imports this module)

    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("Should not be asked.", times=None))
    agent = await make_agent(database, user_id)
    suspended = await start(client, headers, agent.id)
    other_id, other = await make_user(database)
    other_agent = await make_agent(database, other_id)
    deactivated = await start(client, other, other_agent.id)
    for uid, change in ((user_id, {"status": "suspended"}), (other_id, {"is_active": False})):
        changed = await client.patch(f"/api/v1/users/{uid}", headers=admin_headers, json=change)
        assert changed.status_code == 200, changed.text
    async with running_worker(app, database, test_settings):
        for run in (suspended, deactivated):
            done = await wait_for_run(client, admin_headers, run["id"])
            await settled_job(database, run["id"])
            async with database.transaction() as s:
                row = (await s.execute(text(
                    "SELECT r.status, r.error_message, b.status AS job, b.attempts "
                    "FROM runs r JOIN background_tasks b ON b.id = r.task_id "
                    "WHERE r.id = :r"), {"r": done["id"]})).one()
            assert (row.status, row.job) == ("failed", "completed"), row
            assert "suspended or deactivated" in row.error_message and row.attempts == 1, row
    assert stub.requests(path="/v1/chat/completions") == []


async def test_a_run_queued_before_its_agent_was_deactivated_does_not_start(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers], test_settings: Any,
) -> None:
    """Deactivating an agent stops it running: a run queued before (no worker yet) ends
    failed, saying why, and the model is never asked on the agent's behalf."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("Should not be asked.", times=None))
    agent = await make_agent(database, user_id)
    run = await start(client, headers, agent.id)
    off = await client.patch(f"/api/v1/agents/{agent.id}", headers=headers,
                             json={"is_active": False})
    assert off.status_code == 200, off.text
    async with running_worker(app, database, test_settings):
        done = await wait_for_run(client, headers, run["id"])
    async with database.transaction() as s:
        error = await s.scalar(text("SELECT error_message FROM runs WHERE id = :r"),
                               {"r": run["id"]})
    assert done["status"] == "failed" and "deactivated" in (error or ""), (done, error)
    assert stub.requests(path="/v1/chat/completions") == []


async def test_a_run_ended_by_deactivation_stays_ended_once_the_agent_is_on_again(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers], test_settings: Any,
) -> None:
    """Deactivating an agent ends its queued runs; turning it on again before a worker
    came leaves them ended.  Before, the worker only looked at the agent then: active
    again, it ran them and asked the model."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    stub.script(Reply("Should not be asked.", times=None))
    agent = await make_agent(database, user_id)
    run = await start(client, headers, agent.id)
    for active in (False, True):
        resp = await client.patch(f"/api/v1/agents/{agent.id}", headers=headers,
                                  json={"is_active": active})
        assert resp.status_code == 200, resp.text
    async with running_worker(app, database, test_settings):
        await no_open_jobs(database, within=25)
    done = await wait_for_run(client, headers, run["id"])
    assert done["status"] == "failed", done
    assert stub.requests(path="/v1/chat/completions") == []
    await assert_audit_chain_intact(database)


async def test_every_queued_run_reads_failed_as_soon_as_its_agent_is_deactivated(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    other_user: tuple[uuid.UUID, Headers],
) -> None:
    """Right after the PATCH that deactivates a public agent, its queued runs (its
    owner's and a stranger's) read failed, saying why, and their event streams end.
    Before, they stayed pending until a worker took them."""
    user_id, headers = user
    _, stranger = other_user
    agent = await make_agent(database, user_id, is_public=True)
    runs = [(await start(client, h, agent.id), h) for h in (headers, stranger)]
    resp = await client.patch(f"/api/v1/agents/{agent.id}", headers=headers,
                              json={"is_active": False})
    assert resp.status_code == 200, resp.text
    assert resp.json()["is_active"] is False
    for run, who in runs:
        got = (await client.get(f"/api/v1/runs/{run['id']}", headers=who)).json()
        assert got["status"] == "failed", got
        assert "deactivated" in (got.get("error_message") or ""), got
        streamed = await asyncio.wait_for(client.get(
            f"/api/v1/runs/{run['id']}/events", headers=who, timeout=30), 60)
        assert streamed.status_code == 200, streamed.text
        assert sse_events(streamed.text)[-1][0] == "end", streamed.text


@pytest.mark.parametrize("deleted", ["agent", "persona"])
async def test_a_run_queued_for_a_deleted_agent_fails_without_asking_the_model(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers], test_settings: Any, deleted: str,
) -> None:
    """Queued while no worker ran; its agent (or the persona it belongs to, which deletes
    its agents) is deleted; the worker ends the run failed, saying why, as a debate does:
    the model is not asked on the agent's behalf without its instructions."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    made = await client.post("/api/v1/personas", headers=headers, json={"name": "P"})
    assert made.status_code == 201, made.text
    persona = made.json()
    agent = await make_agent(database, user_id, preferred_model="stub-model",
                             persona_id=persona["id"])
    run = await start(client, headers, agent.id, "hi")
    url = (f"/api/v1/agents/{agent.id}" if deleted == "agent"
           else f"/api/v1/personas/{persona['id']}")
    gone = await client.delete(url, headers=headers)
    assert gone.status_code == 204, gone.text
    async with running_worker(app, database, test_settings):
        await no_open_jobs(database, within=25)
    done = await wait_for_run(client, headers, run["id"])
    async with database.transaction() as s:
        error = await s.scalar(text("SELECT error_message FROM runs WHERE id = :r"),
                               {"r": run["id"]})
    assert done["status"] == "failed" and "agent was deleted" in (error or ""), (done, error)
    assert stub.requests(path="/v1/chat/completions") == []
    await assert_audit_chain_intact(database)


async def _job_history(database: Database, run_id: str) -> tuple[int, int]:
    """The run's job's retry count, and how many dead letters it left."""
    [row] = await fetch(database, "SELECT t.retry_count, (SELECT count(*) FROM "
                        "dead_letter_queue d WHERE d.original_task_id = t.id) FROM runs r "
                        "JOIN background_tasks t ON t.id = r.task_id WHERE r.id = :r", r=run_id)
    return int(row[0]), int(row[1])


async def test_a_run_whose_model_no_provider_serves_fails_at_its_first_attempt(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """A model no provider serves is a model call that fails (stop_reason error, naming
    the model): not a crash the job retries five times and dead-letters."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, preferred_model="no-such-model-xyz")
    done = await wait_for_run(client, headers, (await start(client, headers, agent.id))["id"],
                              within=60)
    assert (done["status"], done["stop_reason"]) == ("failed", "error"), done
    assert "no-such-model-xyz" in done["error_message"], done
    assert await _job_history(database, done["id"]) == (0, 0)
    assert stub.requests(path="/v1/chat/completions") == []


async def test_a_run_after_its_only_provider_was_deleted_fails_at_its_first_attempt(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """No provider left: the run fails at its first attempt (stop_reason error, saying
    so), not after six attempts of its job and a dead letter for the operator."""
    user_id, headers = user
    provider = await add_provider(client, admin_headers, stub)
    gone = await client.delete(f"/api/v1/llm/providers/{provider['id']}", headers=admin_headers)
    assert gone.status_code == 204, gone.text
    agent = await make_agent(database, user_id)
    done = await wait_for_run(client, headers, (await start(client, headers, agent.id))["id"],
                              within=60)
    assert (done["status"], done["stop_reason"]) == ("failed", "error"), done
    assert done["error_message"].startswith("the model call failed: "), done
    assert await _job_history(database, done["id"]) == (0, 0)


@pytest.mark.parametrize(("fields", "field"), [
    ({"input": " \n\t "}, "input"), ({"input": "before\u0000after"}, "input"),
    ({"input": "x", "idempotency_key": "k\u0000"}, "idempotency_key")])
async def test_a_blank_input_or_a_nul_is_422_naming_the_field(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    fields: dict[str, str], field: str,
) -> None:
    """White space alone gives the model nothing (docs: empty input is 422); a run's input
    and key are stored as text, which holds no NUL: 422 naming the field, nothing stored."""
    user_id, headers = user
    agent = await make_agent(database, user_id)
    resp = await client.post(f"/api/v1/agents/{agent.id}/runs", json=fields, headers=headers)
    assert resp.status_code == 422, resp.text
    assert field in resp.text and "before" not in resp.text  # the value is not echoed
    assert (await client.get("/api/v1/runs", headers=headers)).json()["items"] == []


CALLER_TRACE = "4bf92f3577b34da6a3ce929d0e0e4736"


@pytest.mark.parametrize(("traceparent", "joins"), [
    (f"00-{CALLER_TRACE}-00f067aa0ba902b7-01", True),
    (f"00-{CALLER_TRACE.upper()}-00F067AA0BA902B7-01", False),
    (f"00-{CALLER_TRACE}-0000000000000000-01", False),
    (f"ff-{CALLER_TRACE}-00f067aa0ba902b7-01", False)])
async def test_with_tracing_off_a_run_joins_the_callers_trace_only_by_w3c_rules(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
    traceparent: str, joins: bool,
) -> None:
    """Tracing off, the run takes the caller's trace from a traceparent W3C Trace Context
    accepts (lower-case hex, no all-zero id, not version ff), the same rules as the request
    span's when tracing is on; any other starts a new trace."""
    user_id, headers = user
    agent = await make_agent(database, user_id)
    resp = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "x"},
                             headers={**headers, "traceparent": traceparent})
    assert resp.status_code == 202, resp.text
    trace = resp.json()["trace_id"].split("-")[1]
    assert (trace == CALLER_TRACE) is joins, trace


async def test_an_unusable_traceparent_is_ignored_and_the_run_starts_a_new_trace(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    """W3C Trace Context: an invalid traceparent (here longer than any valid one) starts a
    new trace; it never refuses the run (it was a 422)."""
    user_id, headers = user
    agent = await make_agent(database, user_id)
    resp = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "x"},
                             headers={**headers, "traceparent": "x" * 200})
    assert resp.status_code == 202, (resp.status_code, resp.text[:300])
    runs: list[dict[str, Any]] = (await client.get("/api/v1/runs", headers=headers)).json()["items"]
    assert len(runs) == 1 and runs[0]["trace_id"].startswith("00-")
    assert "x" * 32 not in runs[0]["trace_id"]


async def test_a_last_event_id_with_digits_that_are_not_ascii_starts_over(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """An open-step list holding superscript digits (one latin-1 byte each, so any client
    can send them) passed str.isdigit, then int() raised: a 500. Unreadable: the stream
    starts over, as for any other unreadable id; so do step numbers int() reads but the
    server never writes ("1_0.1" was step 10, "+2.1" and a no-break space before "2.1"
    step 2: steps missed), a phase other than 0 or 1, and none ("2" and "2." read as
    "2.0": step 1 and step 2's start were skipped)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time")), Reply("Noon."))
    run = (await client.post(f"/api/v1/agents/{agent.id}/runs", headers=headers,
                             json={"input": "time?"})).json()
    await wait_for_run(client, headers, run["id"])
    url = f"/api/v1/runs/{run['id']}/events"
    whole = await client.get(url, headers=headers)
    for value in ["3.1.\xb2", "3.1.1-\xb2", "3.1.\xb9-\xb2", "1_0.1", "+2.1", "\xa02.1", "2.7",
                  "2", "2."]:
        resp = await asyncio.wait_for(client.get(url, headers={
            **headers, "Last-Event-ID": value.encode("latin-1")}), 40)
        assert resp.status_code == 200, (value, resp.text)
        assert resp.text == whole.text, value


async def test_a_retry_after_the_agent_was_deactivated_answers_the_first_run(
    client: httpx.AsyncClient, database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    """A client whose first 202 was lost retries (same idempotency key and input) after
    the agent was deactivated: the answer is that first run (failed by the deactivation),
    not a 409 "activate it to run it" as if no run had been made."""
    user_id, headers = user
    agent = await make_agent(database, user_id)
    first = await start(client, headers, agent.id, text_="hi", idempotency_key="retry")
    resp = await client.patch(f"/api/v1/agents/{agent.id}", json={"is_active": False},
                              headers=headers)
    assert resp.status_code == 200, resp.text
    again = await client.post(f"/api/v1/agents/{agent.id}/runs",
                              json={"input": "hi", "idempotency_key": "retry"}, headers=headers)
    assert again.status_code == 202, again.text
    assert again.json()["id"] == first["id"]
    assert again.json()["status"] == "failed"
