"""The memory tools called by a model with bad arguments: a failed step naming the tool's
own argument."""

from __future__ import annotations

import uuid
from typing import Any

import httpx

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import Headers, make_agent, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls


async def test_a_blank_memory_search_query_is_refused_naming_the_tools_argument(
    admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, client: httpx.AsyncClient,
) -> None:
    """A blank query ("   ", past min_length=1) fails the step naming the tool's argument
    (``query``), as every other bad argument does; it named ``q``, a parameter of the REST
    search endpoint the model never saw."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, tool_permissions=["memory_search"])
    stub.script(ToolCalls(Call("memory_search", {"query": "   "})), Reply("Done."))
    created = await client.post(f"/api/v1/agents/{agent.id}/runs", headers=headers,
                                json={"input": "Search."})
    assert created.status_code in (201, 202), created.text
    run = await wait_for_run(client, headers, created.json()["id"])
    assert (run["status"], run["output"]) == ("completed", "Done."), run
    steps: list[dict[str, Any]] = (
        await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    tools = [s for s in steps if s["step_type"] == "tool_call"]
    assert [s["status"] for s in tools] == ["failed"], tools
    assert "query" in tools[0]["error"] and "blank" in tools[0]["error"], tools[0]["error"]
