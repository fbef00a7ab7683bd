"""Workflows for a metered user: a run of an LLM node, a tool node and an agent node (whose
agent calls a tool) completes and pays for each model and tool call, every credit hold
settled; when the balance cannot cover a node's call (the LLM node's, the tool node's or
the agent's), the run fails saying so, nothing left held."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from roost.workflows import jobs as _workflow_jobs  # noqa: F401 - workflows.node, for the worker
from tests.agents.conftest import make_agent, worker  # noqa: F401
from tests.billing.metered import Headers, assert_settled, metered_settings, metered_user, settled
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls
from tests.workflows.graphs import edge, node

API = "/api/v1/workflows"
RUNS = "/api/v1/workflow-runs"
TERMINAL = ("completed", "failed", "cancelled")


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return metered_settings(tmp_path)


async def publish(client: httpx.AsyncClient, headers: Headers, nodes: list[Any],
                  edges: list[Any]) -> str:
    created = await client.post(API, headers=headers,
                                json={"name": "Flow", "nodes": nodes, "edges": edges})
    assert created.status_code == 201, created.text
    workflow_id: str = created.json()["id"]
    published = await client.post(f"{API}/{workflow_id}/publish", headers=headers)
    assert published.status_code == 201, published.text
    return workflow_id


async def run_to_end(client: httpx.AsyncClient, headers: Headers, workflow_id: str,
                     within: float = 45, **body: Any) -> dict[str, Any]:
    """A run of the workflow started and waited for until it is finished."""
    answer = await client.post(f"{API}/{workflow_id}/runs", headers=headers, json=body)
    assert answer.status_code == 202, answer.text
    run_id = answer.json()["id"]
    deadline = asyncio.get_running_loop().time() + within
    while True:
        run: dict[str, Any] = (await client.get(f"{RUNS}/{run_id}", headers=headers)).json()
        if run["status"] in TERMINAL:
            return run
        assert asyncio.get_running_loop().time() < deadline, run
        await asyncio.sleep(0.1)


def llm_tool_agent(agent_slug: str) -> tuple[list[Any], list[Any]]:
    return ([node("start", "start", inputs=["q"]),
             node("ask", "llm", prompt="Answer briefly: {{ q }}", model="stub-model",
                  max_tokens=200),
             node("stamp", "tool", tool="current_time", arguments={"timezone": "UTC"}),
             node("helper", "agent", agent=agent_slug, input="Please: {{ ask.output }}"),
             node("done", "end", output="{{ ask.output }} / {{ helper.output }}")],
            [edge("e1", "start", "ask"), edge("e2", "ask", "stamp"),
             edge("e3", "stamp", "helper"), edge("e4", "helper", "done")])


async def test_a_workflow_of_llm_tool_and_agent_nodes_completes_and_pays_for_each_call(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 100)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"],
                             config={"max_output_tokens": 500})
    workflow_id = await publish(client, headers, *llm_tool_agent(agent.slug))
    stub.script(Reply("forty-two"), ToolCalls(Call("current_time", {"timezone": "UTC"})),
                Reply("Noon."))
    done = await run_to_end(client, headers, workflow_id, inputs={"q": "meaning?"})
    assert done["status"] == "completed", done
    assert done["output"] == "forty-two / Noon.", done
    state = await settled(database, user_id)
    # 3 model calls (>= 1 credit each) and 2 tool calls (1 each)
    assert state["held"] == 0 and state["reserved"] == 0 and state["used"] >= 5, state


async def test_a_workflow_without_credits_fails_before_any_model_call(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811
) -> None:
    user_id, headers = await metered_user(client, admin_headers, stub, database, 0)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    workflow_id = await publish(client, headers, *llm_tool_agent(agent.slug))
    done = await run_to_end(client, headers, workflow_id, inputs={"q": "meaning?"})
    assert done["status"] == "failed", done
    assert "not enough credits" in (done.get("error_message") or str(done)), done
    assert stub.requests(path="/v1/chat/completions") == []
    assert await settled(database, user_id) == {"used": 0, "reserved": 0, "held": 0}


async def test_a_workflow_whose_credits_run_out_at_the_tool_node_fails_there(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811
) -> None:
    """The LLM node's small call is covered (1 credit), the tool node's is not."""
    user_id, headers = await metered_user(client, admin_headers, stub, database, 1)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"])
    workflow_id = await publish(client, headers, *llm_tool_agent(agent.slug))
    stub.script(Reply("forty-two"))
    done = await run_to_end(client, headers, workflow_id, inputs={"q": "meaning?"})
    assert done["status"] == "failed", done
    failed = [s for s in done["steps"] if s["status"] == "failed"]
    assert [s["node_id"] for s in failed] == ["stamp"], done
    assert "not enough credits" in str(done), done
    state = await settled(database, user_id)
    assert state["held"] == 0 and state["reserved"] == 0 and state["used"] == 1, state


async def test_a_workflow_whose_credits_run_out_in_the_agent_node_fails_saying_so(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,  # noqa: F811
) -> None:
    """LLM node (1) and tool node (1) covered, then the agent's model call (about 1 for
    max_output_tokens=500, plus its prompt) is not."""
    user_id, headers = await metered_user(client, admin_headers, stub, database, 2)
    agent = await make_agent(database, user_id, tool_permissions=["current_time"],
                             config={"max_output_tokens": 500})
    workflow_id = await publish(client, headers, *llm_tool_agent(agent.slug))
    stub.script(Reply("forty-two"))
    done = await run_to_end(client, headers, workflow_id, inputs={"q": "meaning?"})
    assert done["status"] == "failed", done
    assert "credits" in str(done), done
    await assert_settled(database, user_id)
