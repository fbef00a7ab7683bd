"""Tool calls, agents and runs against a plan: tool calls hold and pay credits (402 at the
limit) and count in their run's cost and max_cost budget, and the plan's max_agents,
runs_per_day and max_documents answer 403 naming the limit, also to many creates at once."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from sqlalchemy import text

from roost.db.engine import Database
from roost.tasks.worker import Worker
from roost.tools import builtins, calls
from tests.agents.conftest import make_agent, test_settings, wait_for_run, worker  # noqa: F401
from tests.agents.test_runs import start
from tests.billing.metered import Headers, assert_settled, metered_user, subscribe
from tests.chat.conftest import add_provider
from tests.prompts.conftest import make_group
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls
from tests.support.sql import fetch


async def test_tool_calls_pay_credits_and_stop_at_the_limit(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    user_id, headers = await make_user(database)
    sub = await subscribe(client, admin_headers, user_id, 2)
    call = {"arguments": {"timezone": "UTC"}}
    bad = await client.post("/api/v1/tools/by-name/current_time/call", headers=headers,
                            json={"arguments": {"timezone": "Mars/Olympus"}})
    assert bad.status_code == 422  # the tool's own error: its hold goes back
    for _ in range(2):
        ok = await client.post("/api/v1/tools/by-name/current_time/call", headers=headers,
                               json=call)
        assert ok.status_code == 200, ok.text
    refused = await client.post("/api/v1/tools/by-name/current_time/call", headers=headers,
                                json=call)
    assert refused.status_code == 402 and "not enough credits" in refused.json()["detail"]
    async with database.transaction() as s:
        row = (await s.execute(text(
            "SELECT s.credits_used, s.credits_reserved, "
            "(SELECT count(*) FROM usage_records u WHERE u.subscription_id = s.id "
            " AND u.request_type = 'tool' AND u.success) AS billed, "
            "(SELECT count(*) FROM tool_runs t WHERE t.user_id = :u) AS runs, "
            "(SELECT count(*) FROM clickhouse_analytics a WHERE a.user_id = :u "
            " AND a.event_type = 'tool.call') AS events "
            "FROM subscriptions s WHERE s.id = :id"), {"id": sub, "u": user_id})).one()
    assert (row.credits_used, row.credits_reserved, row.billed) == (2, 0, 2)
    assert row.runs == 3 and row.events == 3  # the refused call ran nothing


async def test_a_warm_call_by_id_still_pays_when_its_user_is_metered(
    caches_deaf: None, client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    """The process's caches answer a warm call by id without a statement before the tool
    only when nothing is to be held: a metered user's calls still hold and pay."""
    user_id, headers = await make_user(database)
    sub = await subscribe(client, admin_headers, user_id, 5)
    path = f"/api/v1/tools/{builtins.CURRENT_TIME_ID}/call"
    for _ in range(3):  # the first fills the caches, the others are answered from them
        ok = await client.post(path, headers=headers, json={"arguments": {"timezone": "UTC"}})
        assert ok.status_code == 200, ok.text
    assert len(calls.KNOWN_TOOLS) >= 1
    async with database.transaction() as s:
        used = await s.scalar(text("SELECT credits_used FROM subscriptions WHERE id = :id"),
                              {"id": sub})
    assert used == 3


async def test_plan_limits_on_agents_and_runs_per_day(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    user_id, headers = await make_user(database)
    await subscribe(client, admin_headers, user_id, 100, max_agents=1, runs_per_day=1)
    first = await client.post("/api/v1/agents", headers=headers,
                              json={"name": "One", "slug": "one"})
    assert first.status_code == 201, first.text
    second = await client.post("/api/v1/agents", headers=headers,
                               json={"name": "Two", "slug": "two"})
    assert second.status_code == 403
    assert second.json()["limit"] == "max_agents" and "allows 1 agents" in second.text

    agent_id = first.json()["id"]
    run = await client.post(f"/api/v1/agents/{agent_id}/runs", headers=headers,
                            json={"input": "hello"})
    assert run.status_code == 202, run.text
    again = await client.post(f"/api/v1/agents/{agent_id}/runs", headers=headers,
                              json={"input": "hello again"})
    assert again.status_code == 403 and again.json()["limit"] == "runs_per_day"
    async with database.transaction() as s:
        assert await s.scalar(text("SELECT count(*) FROM runs WHERE user_id = :u"),
                              {"u": user_id}) == 1


async def test_count_limits_hold_when_many_are_created_at_once(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    """max_agents, runs_per_day and max_documents of 1 each let exactly one of 8 parallel
    creates through (the others: 403 naming the limit), not all 8 counting 0 at once."""
    user_id, headers = await make_user(database)
    await subscribe(client, admin_headers, user_id, 1000, max_agents=1, runs_per_day=1,
                    max_documents=1)
    agents = await asyncio.gather(*(
        client.post("/api/v1/agents", headers=headers, json={"name": f"A{i}", "slug": f"a{i}"})
        for i in range(8)))
    assert sorted(r.status_code for r in agents) == [201] + [403] * 7, \
        [r.text for r in agents]
    agent_id = next(r.json()["id"] for r in agents if r.status_code == 201)
    runs = await asyncio.gather(*(
        client.post(f"/api/v1/agents/{agent_id}/runs", headers=headers,
                    json={"input": f"hi {i}"}) for i in range(8)))
    assert sorted(r.status_code for r in runs) == [202] + [403] * 7, [r.text for r in runs]
    documents = await asyncio.gather(*(
        client.post("/api/v1/knowledge/documents", headers=headers,
                    files={"file": (f"d{i}.txt", b"some words", "text/plain")})
        for i in range(8)))
    assert sorted(r.status_code for r in documents) == [202] + [403] * 7, \
        [r.text for r in documents]
    assert {r.json()["limit"] for r in (*agents, *runs, *documents)
            if r.status_code == 403} == {"max_agents", "runs_per_day", "max_documents"}
    async with database.transaction() as s:
        counts = (await s.execute(text(
            "SELECT (SELECT count(*) FROM agents WHERE user_id = :u) AS agents, "
            "(SELECT count(*) FROM runs WHERE user_id = :u) AS runs, "
            "(SELECT count(*) FROM documents WHERE user_id = :u) AS documents"),
            {"u": user_id})).one()
    assert tuple(counts) == (1, 1, 1)


async def test_a_run_whose_model_call_the_balance_cannot_cover_fails_saying_so(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811 - the fixture
) -> None:
    user_id, headers = await make_user(database)
    await add_provider(client, admin_headers, stub)
    # One credit: the run may start, but its model call holds about 2 (its output cap).
    await subscribe(client, admin_headers, user_id, 1)
    agent = await make_agent(database, user_id)
    run = await client.post(f"/api/v1/agents/{agent.id}/runs", headers=headers,
                            json={"input": "What time is it?"})
    assert run.status_code == 202, run.text
    done = await wait_for_run(client, headers, run.json()["id"])
    assert done["status"] == "failed"
    assert "not enough credits" in done["error_message"]
    assert stub.requests(path="/v1/chat/completions") == []


async def test_a_metered_run_with_tool_calls_completes_and_pays_for_each(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811 - the fixture
) -> None:
    """Each hold of a metered run (model calls on a side connection, tool calls in the
    run's transaction) is taken while the run's own transaction may hold the payer's row
    (a settlement): none waits for it; every hold is settled at the end."""
    user_id, headers = await make_user(database)
    await add_provider(client, admin_headers, stub)
    sub = await subscribe(client, admin_headers, user_id, 100)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})),
                ToolCalls(Call("current_time", {"timezone": "Asia/Tokyo"})), Reply("Noon."))
    run = await client.post(f"/api/v1/agents/{agent.id}/runs", headers=headers,
                            json={"input": "What time is it?"})
    assert run.status_code == 202, run.text
    done = await wait_for_run(client, headers, run.json()["id"], within=20)
    assert done["status"] == "completed" and done["output"] == "Noon.", done
    async with database.transaction() as s:
        row = (await s.execute(text(
            "SELECT credits_used, credits_reserved, "
            "(SELECT count(*) FROM credit_reservations r WHERE r.subscription_id = s.id "
            " AND r.status = 'held') AS held, "
            "(SELECT count(*) FROM usage_records u WHERE u.subscription_id = s.id "
            " AND u.request_type = 'tool') AS tools "
            "FROM subscriptions s WHERE s.id = :s"), {"s": sub})).one()
    assert row.credits_reserved == 0 and row.held == 0 and row.tools == 2
    assert row.credits_used >= 2


async def test_a_run_out_of_credits_mid_run_keeps_the_steps_it_took(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811 - the fixture
) -> None:
    """A metered user's run that calls a tool (its hold taken while the model call's
    settlement holds the payer's row: it waited on another connection until the statement
    timeout), then cannot pay for its second model call: the tool step and its tool run
    stay recorded (the refusal rolls back nothing already done), no hold is left."""
    user_id, headers = await make_user(database)
    await add_provider(client, admin_headers, stub)
    await subscribe(client, admin_headers, user_id, 3)  # one model call and a tool call
    agent = await make_agent(database, user_id, tool_permissions=["current_time"],
                             config={"max_output_tokens": 1000})
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("Noon."))
    run = await client.post(f"/api/v1/agents/{agent.id}/runs", headers=headers,
                            json={"input": "What time is it?"})
    assert run.status_code == 202, run.text
    done = await wait_for_run(client, headers, run.json()["id"])
    assert done["status"] == "failed" and "not enough credits" in done["error_message"], done
    steps = (await client.get(f"/api/v1/runs/{done['id']}/steps", headers=headers)).json()
    assert [(s["step_type"], s["status"]) for s in steps] == [
        ("llm_call", "completed"), ("tool_call", "completed")]
    assert steps[1]["tool_run_id"] and steps[1]["output"]["timezone"] == "UTC"
    async with database.transaction() as s:
        runs = (await s.execute(text(
            "SELECT status FROM tool_runs WHERE run_id = :r"), {"r": done["id"]})).all()
        held = await s.scalar(text(
            "SELECT count(*) FROM credit_reservations r JOIN subscriptions s "
            "ON s.id = r.subscription_id WHERE s.user_id = :u AND r.status = 'held'"),
            {"u": user_id})
    assert [r[0] for r in runs] == ["success"] and held == 0
    assert len(stub.requests(path="/v1/chat/completions")) == 1


async def test_a_groups_subscription_pays_for_its_members_calls(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    ann, ann_h = await make_user(database)
    ben, ben_h = await make_user(database)
    _, outsider_h = await make_user(database)
    group = await make_group(database, (ann, "member"), (ben, "member"))
    resp = await client.post("/api/v1/billing/plans", headers=admin_headers, json={
        "key": "team3", "name": "Team", "price": "5.00", "included_credits": 3})
    assert resp.status_code == 201, resp.text
    resp = await client.post("/api/v1/billing/subscriptions", headers=admin_headers,
                             json={"group_id": str(group), "plan": "team3"})
    assert resp.status_code == 201, resp.text
    call = {"arguments": {"timezone": "UTC"}}
    answers = [await client.post("/api/v1/tools/by-name/current_time/call", headers=h, json=call)
               for h in (ann_h, ben_h, ann_h, ben_h)]
    assert [a.status_code for a in answers] == [200, 200, 200, 402]
    # Someone outside the group is not metered by it (nor refused).
    free = await client.post("/api/v1/tools/by-name/current_time/call", headers=outsider_h,
                             json=call)
    assert free.status_code == 200
    shared = await client.get("/api/v1/billing/subscription", headers=ben_h)
    assert shared.status_code == 200 and shared.json()["balance"] == 0
    assert (await client.get("/api/v1/billing/subscription",
                             headers=outsider_h)).status_code == 404


async def test_a_runs_cost_sums_its_usage_rows_credits_tool_calls_included(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811 - the fixture
) -> None:
    """A run's ``cost`` is its credits, all steps: the ledger's rows naming the run sum to
    it, the paid tool call's credit included (its step's cost was 0 and the run's the model
    calls' alone)."""
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("Noon."))
    run = await start(client, headers, agent.id)
    done = await wait_for_run(client, headers, run["id"])
    assert done["status"] == "completed", done
    ledger = await assert_settled(database, user_id)
    [row] = await fetch(database, "SELECT coalesce(sum(credits_used), 0) AS credits, "
                        "count(*) FILTER (WHERE request_type = 'tool') AS tools "
                        "FROM usage_records WHERE run_id = :r", r=uuid.UUID(run["id"]))
    assert row.tools == 1 and row.credits == ledger["used"], (row, ledger)
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    tool_step = next(s for s in steps if s["step_type"] == "tool_call")
    assert float(tool_step["cost"]) == 1, tool_step
    assert float(done["cost"]) == row.credits, (done["cost"], row.credits)


async def test_max_cost_counts_the_credits_of_the_runs_tool_calls(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811 - the fixture
) -> None:
    """config.max_cost stops a run once its credits, all steps, reach it: a model call and a
    paid tool call spend more than a budget of the model call's credits and a half, so the
    run stops with ``budget`` (it asked the model again: tool credits never counted)."""
    user_id, headers = await make_user(database)
    await add_provider(client, admin_headers, stub)
    await subscribe(client, admin_headers, user_id, 100)
    # First, what one model call of this agent costs in credits.
    probe = await make_agent(database, user_id)
    stub.script(Reply("Hi."))
    first = await wait_for_run(client, headers, (await start(client, headers, probe.id))["id"])
    one_call = float(first["cost"])
    assert one_call >= 1, first
    agent = await make_agent(database, user_id, tool_permissions=["current_time"],
                             config={"max_cost": one_call + 0.5})
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Reply("Noon."))
    done = await wait_for_run(client, headers, (await start(client, headers, agent.id))["id"])
    assert (done["status"], done["stop_reason"]) == ("completed", "budget"), done
    assert len(stub.requests(path="/v1/chat/completions")) == 2  # the probe's and one



async def test_a_groups_plan_counts_every_member_it_pays_for(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
) -> None:
    """A group's plan of ``max_agents: 2`` and ``runs_per_day: 1`` is two agents and one
    run a day for the group, not for each member (each member's scope shows only their
    own agents and runs); a member with a subscription of their own is counted by theirs
    alone, and the group's count leaves them out."""
    ann, ann_h = await make_user(database)
    ben, ben_h = await make_user(database)
    cat, cat_h = await make_user(database)
    group = await make_group(database, (ann, "member"), (ben, "member"), (cat, "member"))
    resp = await client.post("/api/v1/billing/plans", headers=admin_headers, json={
        "key": "team2", "name": "Team", "price": "5.00", "included_credits": 100,
        "limits": {"max_agents": 2, "runs_per_day": 1}})
    assert resp.status_code == 201, resp.text
    resp = await client.post("/api/v1/billing/subscriptions", headers=admin_headers,
                             json={"group_id": str(group), "plan": "team2"})
    assert resp.status_code == 201, resp.text
    await subscribe(client, admin_headers, cat, 100, max_agents=5)  # Cat pays her own way

    made = [await client.post("/api/v1/agents", headers=h, json={"name": n, "slug": n})
            for h, n in ((cat_h, "c1"), (cat_h, "c2"), (ann_h, "a1"), (ben_h, "b1"),
                         (ben_h, "b2"))]
    assert [r.status_code for r in made] == [201, 201, 201, 201, 403], [r.text for r in made]
    assert made[-1].json()["limit"] == "max_agents" and "(2 already)" in made[-1].text

    run = await client.post(f"/api/v1/agents/{made[2].json()['id']}/runs", headers=ann_h,
                            json={"input": "hello"})
    assert run.status_code == 202, run.text
    again = await client.post(f"/api/v1/agents/{made[3].json()['id']}/runs", headers=ben_h,
                              json={"input": "hello"})
    assert again.status_code == 403 and again.json()["limit"] == "runs_per_day", again.text
