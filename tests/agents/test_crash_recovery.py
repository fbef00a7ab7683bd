"""A worker process killed with SIGKILL mid-run: another worker resumes the run from its
last committed step; completed steps are not repeated (checked in SQL); an interrupted
model call is asked again; a non-idempotent tool call is not, and the model is told; an
idempotent one is retried with the arguments the model sent."""

from __future__ import annotations

import asyncio
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.agents import jobs as agent_jobs
from roost.agents import runner
from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import Headers, make_agent, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Hang, Reply, ToolCalls
from tests.support.sql import fetch, scalar
from tests.support.workers import REPO, worker_processes

ECHO_SERVER = REPO / "tests" / "tools" / "mcp_echo_server.py"


@pytest.fixture
def workers(pg_server: Any, db_name: str, tmp_path: Path) -> Iterator[Any]:
    with worker_processes(pg_server.libpq_url(db_name), tmp_path) as start:
        yield start


async def _wait(what: str, check: Any, within: float = 60) -> Any:
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        value = await check()
        if value:
            return value
        await asyncio.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


async def _step_running(database: Database, run_id: str, number: int) -> bool:
    status = await scalar(database, "SELECT status FROM run_steps WHERE run_id = :r "
                                    "AND step_number = :n", r=run_id, n=number)
    return bool(status == "running")


async def _finished(database: Database, run_id: str) -> bool:
    status = await scalar(database, "SELECT status FROM runs WHERE id = :r", r=run_id)
    return status in ("completed", "failed", "cancelled")


async def test_a_killed_worker_mid_model_call_resumes_without_repeating_steps(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], workers: Any,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    stub.script(ToolCalls(Call("current_time", {"timezone": "UTC"})), Hang(),
                Reply("Resumed and done."))
    run = (await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "time?"},
                             headers=headers)).json()
    first = workers()
    await _wait("the second model call", lambda: _step_running(database, run["id"], 3))
    first.kill()  # SIGKILL while the model "thinks": no graceful shutdown
    assert await scalar(database, "SELECT status FROM runs WHERE id = :r", r=run["id"]) == "running"

    workers()  # the lease expires; the second worker resumes the run
    await _wait("the resumed run to finish", lambda: _finished(database, run["id"]), within=90)
    steps = await fetch(database, "SELECT step_number, step_type, status FROM run_steps "
                                  "WHERE run_id = :r ORDER BY step_number", r=run["id"])
    assert [tuple(s) for s in steps] == [
        (1, "llm_call", "completed"), (2, "tool_call", "completed"),
        (3, "llm_call", "interrupted"), (4, "llm_call", "completed")]
    final = (await fetch(database, "SELECT * FROM runs WHERE id = :r", r=run["id"]))[0]
    assert (final.status, final.stop_reason, final.output) == ("completed", "final",
                                                               "Resumed and done.")
    # The completed tool call ran exactly once; the job was claimed twice.
    assert await scalar(database, "SELECT count(*) FROM tool_runs WHERE run_id = :r",
                        r=run["id"]) == 1
    assert await scalar(database, "SELECT attempts FROM background_tasks WHERE id = :t",
                        t=final.task_id) >= 2
    assert len(stub.requests(path="/v1/chat/completions")) == 3


async def test_a_non_idempotent_tool_cut_off_by_a_crash_is_not_run_again(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], workers: Any,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    server = await client.post("/api/v1/mcp-servers", headers=admin_headers, json={
        "name": "echo", "transport": "stdio", "command": sys.executable,
        "args": [str(ECHO_SERVER)], "is_global": True})
    assert server.status_code == 201, server.text
    synced = await client.post(f"/api/v1/mcp-servers/{server.json()['id']}/sync",
                               headers=admin_headers)
    assert synced.status_code == 200, synced.text
    agent = await make_agent(database, user_id, tool_permissions=["sleep"])
    stub.script(ToolCalls(Call("sleep", {"seconds": 60})), Reply("The tool was cut off."))
    run = (await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "wait"},
                             headers=headers)).json()
    first = workers()
    await _wait("the tool call", lambda: _step_running(database, run["id"], 2))
    first.kill()
    workers()
    await _wait("the resumed run to finish", lambda: _finished(database, run["id"]), within=90)
    steps = await fetch(database, "SELECT step_number, step_type, status, error FROM run_steps "
                                  "WHERE run_id = :r ORDER BY step_number", r=run["id"])
    assert [(s.step_number, s.step_type, s.status) for s in steps] == [
        (1, "llm_call", "completed"), (2, "tool_call", "interrupted"),
        (3, "llm_call", "completed")]
    assert "not marked idempotent" in steps[1].error
    told = stub.requests(path="/v1/chat/completions")[1].body["messages"][-1]
    assert told["role"] == "tool" and "interrupted" in told["content"]
    assert await scalar(database, "SELECT count(*) FROM tool_runs WHERE run_id = :r",
                        r=run["id"]) == 0


async def test_an_idempotent_call_retried_after_a_crash_gets_its_whole_arguments(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """An idempotent tool call cut off by a crash is retried with the arguments the model
    sent (from its model step's answer), not the copy kept in the step's input, which is
    cut to 16 000 characters: longer arguments (valid JSON, white space) stay valid."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    arguments = '{"timezone": "UTC"' + " " * 20_000 + "}"
    stub.script(ToolCalls(Call("current_time", arguments)), Reply("done"), Reply("done"))
    run = (await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "time?"},
                             headers=headers)).json()
    done = await wait_for_run(client, headers, run["id"])
    assert done["status"] == "completed", done
    async with database.transaction() as session:  # as a worker killed mid-tool-call leaves it
        await session.execute(text("DELETE FROM run_steps WHERE run_id = :r AND step_number = 3"),
                              {"r": run["id"]})
        await session.execute(text(
            "UPDATE run_steps SET status = 'running', output = NULL, finished_at = NULL, "
            "tool_run_id = NULL WHERE run_id = :r AND step_number = 2"), {"r": run["id"]})
        await session.execute(text(
            "UPDATE runs SET status = 'running', stop_reason = NULL, completed_at = NULL, "
            "output = NULL WHERE id = :r"), {"r": run["id"]})
    env = agent_jobs.env_override  # the worker's, as the next attempt of the job has it
    assert env is not None
    assert await runner.execute(env, uuid.UUID(run["id"])) == "completed"
    steps = await fetch(database, "SELECT step_number, status, error FROM run_steps "
                                  "WHERE run_id = :r ORDER BY step_number", r=run["id"])
    assert [(s.step_number, s.status) for s in steps] == [
        (1, "completed"), (2, "completed"), (3, "completed")], steps
