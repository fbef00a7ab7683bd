"""An agent manages the user's task board with its built-in tools (a real run against the
OpenAI-compatible stub): it adds a task, lists the board, raises a task's urgency."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import make_agent, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls
from tests.workspace.conftest import Headers, User, board, make_project, make_task

TOOLS = ["tasks_list", "task_add", "task_update"]


async def _run(client: httpx.AsyncClient, headers: Headers, agent_id: uuid.UUID,
               text_: str) -> dict[str, Any]:
    created = await client.post(f"/api/v1/agents/{agent_id}/runs", headers=headers,
                                json={"input": text_})
    assert created.status_code in (201, 202), created.text
    return await wait_for_run(client, headers, created.json()["id"])


async def test_an_agent_adds_lists_and_reprioritises_tasks(
    admin_headers: Headers, stub: StubServer, database: Database, user: User,
    other_user: User, worker: Worker, client: httpx.AsyncClient,
) -> None:
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=TOOLS)
    older = await make_task(client, headers, "Renew passport", priority="high")

    stub.script(ToolCalls(Call("task_add", {"title": "Book dentist", "priority": "low"})),
                Reply("Added."))
    run = await _run(client, headers, agent.id, "Remind me to book the dentist.")
    assert run["status"] == "completed", run
    assert await board(client, headers) == ["Renew passport", "Book dentist"]
    dentist = (await client.get("/api/v1/tasks-board", headers=headers)).json()["items"][1]

    stub.script(ToolCalls(Call("tasks_list", {})),
                ToolCalls(Call("task_update", {"id": dentist["id"], "urgency_weight": 9})),
                Reply("The dentist is now first."))
    run = await _run(client, headers, agent.id, "The dentist is urgent.")
    assert run["status"] == "completed", run
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    listed = next(s for s in steps if s["step_type"] == "tool_call")["output"]
    assert "Renew passport" in str(listed) and "Book dentist" in str(listed)
    assert await board(client, headers) == ["Book dentist", "Renew passport"]

    # Bad arguments and another user's task are the tool's error, not a crash of the run.
    _, other_headers = other_user
    theirs = await make_task(client, other_headers, "Not yours")
    stub.script(ToolCalls(Call("task_update", {"id": theirs["id"], "status": "done"})),
                ToolCalls(Call("task_add", {"title": "x", "completion_percentage": 101})),
                Reply("Could not."))
    run = await _run(client, headers, agent.id, "Close their task.")
    assert run["status"] == "completed", run
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    calls = [s for s in steps if s["step_type"] == "tool_call"]
    assert [s["status"] for s in calls] == ["failed", "failed"], calls
    assert calls[0]["error"] == f"task {theirs['id']} does not exist"
    assert "completion_percentage" in calls[1]["error"]  # the input schema's check
    still = (await client.get(f"/api/v1/tasks-board/{theirs['id']}",
                              headers=other_headers)).json()
    assert still["status"] == "todo"
    assert older["id"] in {t["id"] for t in
                           (await client.get("/api/v1/tasks-board", headers=headers)).json()["items"]}


async def test_task_update_clears_a_due_date_and_a_project(
    admin_headers: Headers, stub: StubServer, database: Database, user: User,
    worker: Worker, client: httpx.AsyncClient,
) -> None:
    """"The deadline is off, and it is no longer part of that project": task_update with
    ``due_date: null`` and ``project_id: null`` clears them, as PATCH does (its schema
    declared them strings only, so the call failed before the service saw it)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["task_update"])
    project = await make_project(client, headers)
    task = await make_task(client, headers, "Report", due_date="2030-01-01T00:00:00Z",
                           project_id=project["id"], category="work")
    stub.script(ToolCalls(Call("task_update", {"id": task["id"], "due_date": None,
                                               "project_id": None, "category": None})),
                Reply("Done."))
    run = await _run(client, headers, agent.id, "No deadline, no project.")
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    calls = [s for s in steps if s["step_type"] == "tool_call"]
    assert [s["status"] for s in calls] == ["completed"], [(s["status"], s["error"]) for s in calls]
    got = (await client.get(f"/api/v1/tasks-board/{task['id']}", headers=headers)).json()
    assert (got["due_date"], got["project_id"], got["category"]) == (None, None, None), got
