"""A worker process killed with SIGKILL mid-workflow: another worker takes the job over
when its lease expires and runs the unfinished node again; completed nodes never run
again (checked in SQL and in what the model was asked)."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.db.engine import Database
from tests.agents.conftest import other_user, test_settings, user
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Hang, Reply
from tests.support.sql import fetch, scalar
from tests.support.workers import worker_processes
from tests.workflows.graphs import edge, node
from tests.workflows.test_runs import Headers, publish, start

__all__ = ["other_user", "test_settings", "user"]


@pytest.fixture
def workers(pg_server: Any, db_name: str, tmp_path: Path) -> Iterator[Any]:
    with worker_processes(pg_server.libpq_url(db_name), tmp_path) as start:
        yield start


async def _until(what: str, check: Any, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def test_a_killed_worker_mid_workflow_resumes_without_rerunning_completed_nodes(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], workers: Any,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    nodes = [node("s", "start", inputs=["topic"]),
             node("outline", "llm", prompt="Outline {{ topic }}"),
             node("fan", "parallel"),
             node("draft", "llm", prompt="Draft from {{ outline.output }}"),
             node("title", "template", template="{{ topic | title }}"),
             node("both", "join"),
             node("polish", "llm", prompt="Polish {{ draft.output }}"),
             node("e", "end", output="{{ title.output }}: {{ polish.output }}")]
    edges = [edge("1", "s", "outline"), edge("2", "outline", "fan"), edge("3", "fan", "draft"),
             edge("4", "fan", "title"), edge("5", "draft", "both"), edge("6", "title", "both"),
             edge("7", "both", "polish"), edge("8", "polish", "e")]
    workflow_id = await publish(client, headers, nodes, edges)
    stub.script(Reply("an outline"), Hang(), Reply("a draft"), Reply("polished"))
    run = await start(client, headers, workflow_id, inputs={"topic": "durable workflows"})

    first = workers()

    async def drafting() -> bool:
        return bool(await scalar(database, "SELECT status = 'running' FROM run_steps "
                                           "WHERE run_id = :r AND node_id = 'draft'",
                                 r=run["id"]))
    await _until("the draft node to be running", drafting)
    first.kill()  # SIGKILL while the model "thinks": no graceful shutdown
    assert await scalar(database, "SELECT status FROM runs WHERE id = :r",
                        r=run["id"]) == "running"

    workers()  # the job's lease expires; the second worker takes it over

    async def finished() -> bool:
        return bool(await scalar(database, "SELECT status IN ('completed', 'failed') FROM runs "
                                           "WHERE id = :r", r=run["id"]))
    await _until("the run to finish", finished, within=90)
    final = (await fetch(database, "SELECT status, output FROM runs WHERE id = :r",
                         r=run["id"]))[0]
    assert (final.status, final.output) == ("completed", "Durable Workflows: polished")
    steps = await fetch(database, "SELECT node_id, status, count(*) OVER (PARTITION BY node_id) "
                                  "AS n FROM run_steps WHERE run_id = :r", r=run["id"])
    # One step per node, all completed: the completed ones were not run again.
    assert {(s.node_id, s.status, s.n) for s in steps} == {
        (n, "completed", 1) for n in ("s", "outline", "fan", "draft", "title", "both",
                                      "polish", "e")}
    prompts = [r.body["messages"][-1]["content"]
               for r in stub.requests(path="/v1/chat/completions")]
    assert prompts.count("Outline durable workflows") == 1
    assert prompts.count("Draft from an outline") == 2  # cut off by the kill, then again
    attempts = await scalar(database, "SELECT attempts FROM background_tasks WHERE id = "
                                      "(SELECT task_id FROM run_steps WHERE run_id = :r "
                                      "AND node_id = 'draft')", r=run["id"])
    assert attempts >= 2
