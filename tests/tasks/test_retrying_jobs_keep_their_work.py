"""A job whose attempt failed waits for its retry (docs/tasks.md: `failed` is "the last
attempt raised; retried at scheduled_at"): the sweeps that close the work of jobs that
ended leave its debate, agent run or workflow run open (each was failed "with no retries
left" during the backoff, and the retry found it closed)."""

from __future__ import annotations

import uuid

import httpx
from sqlalchemy import text

from roost.agents import jobs as agent_jobs
from roost.db.engine import Database
from roost.debates import jobs as debate_jobs
from roost.workflows import runs as wf_runs
from tests.agents.conftest import make_agent, test_settings, user
from tests.debates.conftest import start
from tests.workflows.graphs import edge, node

__all__ = ["test_settings", "user"]

Headers = dict[str, str]
PARTICIPANTS = [{"id": "x", "model": "stub-model"}, {"id": "y", "model": "stub-model"}]

# A job whose attempt failed and waits for its backoff retry (docs/tasks.md: `failed` is
# "the last attempt raised; retried at scheduled_at").
RETRYING = ("UPDATE background_tasks SET status = 'failed', retry_count = 1, "
            "scheduled_at = now() + interval '20 seconds', error_message = 'ProviderError: 503' "
            "WHERE id = :t")


async def test_a_debate_whose_job_waits_for_its_retry_is_not_failed_by_the_sweep(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """A debate whose job failed once (a provider 503) and waits for its retry stays open."""
    _, headers = user
    created = await start(client, headers, topic="Best pet?", positions=["a", "b"],
                          participants=PARTICIPANTS)
    async with database.transaction() as session:
        await session.execute(text(RETRYING), {"t": created["task_id"]})
        await session.execute(text("UPDATE debate_sessions SET created_at = now() - "
                                   "interval '1 minute' WHERE id = :d"), {"d": created["id"]})
    swept = await debate_jobs.sweep(database)
    debate = (await client.get(f"/api/v1/debates/{created['id']}", headers=headers)).json()
    assert swept == [], debate
    assert debate["status"] not in ("failed",), debate


async def test_an_agent_run_whose_job_waits_for_its_retry_is_not_failed_by_the_sweep(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """An agent run whose job waits for its retry stays pending."""
    user_id, headers = user
    agent = await make_agent(database, user_id)
    resp = await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "hi"},
                             headers=headers)
    assert resp.status_code == 202, resp.text
    run = resp.json()
    async with database.transaction() as session:
        task_id = await session.scalar(text("SELECT task_id FROM runs WHERE id = :r"),
                                       {"r": run["id"]})
        await session.execute(text(RETRYING), {"t": task_id})
        await session.execute(text("UPDATE runs SET updated_at = now() - interval '1 minute' "
                                   "WHERE id = :r"), {"r": run["id"]})
    swept = await agent_jobs.sweep(database)
    after = (await client.get(f"/api/v1/runs/{run['id']}", headers=headers)).json()
    assert swept == [], after
    assert after["status"] == "pending", after


async def test_a_workflow_run_whose_node_job_waits_for_its_retry_is_not_failed_by_the_sweep(
    client: httpx.AsyncClient, user: tuple[uuid.UUID, Headers], database: Database,
) -> None:
    """A workflow run whose llm node's job waits for its retry stays running."""
    _, headers = user
    created = await client.post("/api/v1/workflows", headers=headers, json={
        "name": "Flow",
        "nodes": [node("start", "start", inputs=["question"]),
                  node("ask", "llm", prompt="Answer: {{ question }}", model="stub-model"),
                  node("end", "end", output="{{ ask.output }}")],
        "edges": [edge("e1", "start", "ask"), edge("e2", "ask", "end")]})
    assert created.status_code == 201, created.text
    workflow_id = created.json()["id"]
    published = await client.post(f"/api/v1/workflows/{workflow_id}/publish", headers=headers)
    assert published.status_code == 201, published.text
    started = await client.post(f"/api/v1/workflows/{workflow_id}/runs", headers=headers,
                                json={"inputs": {"question": "q"}})
    assert started.status_code == 202, started.text
    run = started.json()
    (ask,) = [s for s in run["steps"] if s["node_id"] == "ask"]
    async with database.transaction() as session:
        await session.execute(text(RETRYING), {"t": ask["task_id"]})
        await session.execute(text("UPDATE runs SET updated_at = now() - interval '1 minute' "
                                   "WHERE id = :r"), {"r": run["id"]})
    async with database.transaction() as session:
        swept = await wf_runs.sweep(session)
    after = (await client.get(f"/api/v1/workflow-runs/{run['id']}", headers=headers)).json()
    assert swept == [], after
    assert after["status"] == "running", after
