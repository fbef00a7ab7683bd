"""Crash recovery of a run's once-per-run read (docs/agents.md, "Crash recovery"): a
retrieval a dead worker left running is done again by the worker that resumes the run, so
its model is asked with the passages (it was asked without, and the run completed)."""

from __future__ import annotations

import asyncio
import uuid

import httpx
from fastapi import FastAPI
from sqlalchemy import text

from roost.agents.models import RunStep
from roost.config import Settings
from roost.db.base import utcnow
from roost.db.engine import Database
from roost.knowledge.config import KnowledgeConfig
from tests.agents.api import Headers, create_agent, named_user
from tests.agents.conftest import running_worker, wait_for_run
from tests.agents.test_stranger_retrieval import cfg, test_settings
from tests.chat.conftest import add_provider
from tests.knowledge.support import drain_jobs, upload
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply

# The settings and knowledge config of the retrieval tests: hash embeddings, small chunks.
__all__ = ["cfg", "test_settings"]


async def test_retrieval_interrupted_by_a_dead_worker_is_done_again(
    app: FastAPI, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, test_settings: Settings, cfg: KnowledgeConfig,
) -> None:
    """A worker died during a run's retrieval (its ``rag_retrieval`` step left ``running``,
    as a SIGKILL mid-search leaves it): the resumed run marks it interrupted and retrieves
    again, a new step, and the model is asked with the document's passage."""
    a_id, _, alice = await named_user(database, "alice")
    up = await upload(client, alice, "a.txt", b"zebra safe code is 55-RESUMED")
    assert up.status_code == 202, up.text
    doc = str(up.json()["document"]["id"])
    await drain_jobs(database, cfg)
    await add_provider(client, admin_headers, stub)
    agent = await create_agent(client, alice, document_ids=[doc])
    r = await client.post(f"/api/v1/agents/{agent['id']}/runs", headers=alice,
                          json={"input": "zebra safe code please"})
    assert r.status_code == 202, r.text
    run_id = r.json()["id"]
    async with database.transaction() as s:  # what the dead worker had committed
        await s.execute(text("UPDATE runs SET status = 'running', started_at = now() "
                             "WHERE id = :r"), {"r": run_id})
        s.add(RunStep(run_id=uuid.UUID(run_id), user_id=a_id, step_number=1,
                      step_type="rag_retrieval", status="running", started_at=utcnow(),
                      input={"query": "zebra safe code please", "k": 4, "document_ids": [doc]}))
    stub.script(Reply("ok"))
    async with running_worker(app, database, test_settings, knowledge=cfg):
        run = await asyncio.wait_for(wait_for_run(client, alice, run_id, within=60), 90)
    assert run["status"] == "completed", run
    asked = stub.requests(path="/v1/chat/completions")
    assert asked, "the model was not asked"
    steps = (await client.get(f"/api/v1/runs/{run_id}/steps", headers=alice)).json()
    items = steps["items"] if isinstance(steps, dict) else steps
    assert "55-RESUMED" in str(asked[-1].body), [(s["step_type"], s["status"]) for s in items]
    assert [(s["step_type"], s["status"]) for s in items][:2] == [
        ("rag_retrieval", "interrupted"), ("rag_retrieval", "completed")]
