"""A workflow deleted while one of its runs waits on an agent node's agent run."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import make_agent, test_settings, user, worker
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Reply
from tests.support.sql import scalar
from tests.workflows.graphs import edge, node
from tests.workflows.test_runs import publish, start

__all__ = ["test_settings", "user", "worker"]

Headers = dict[str, str]
API = "/api/v1/workflows"


def graph(agent: str, text: str) -> tuple[list[Any], list[Any]]:
    return ([node("s", "start", inputs=["q"]), node("a", "agent", agent=agent, input=text),
             node("e", "end", output="{{ a.output }}")],
            [edge("1", "s", "a"), edge("2", "a", "e")])


async def _child(database: Database, user_id: uuid.UUID,
                 until: Any = lambda status: True) -> tuple[uuid.UUID, str]:
    deadline = asyncio.get_running_loop().time() + 25
    while True:
        row = await scalar(database, "SELECT id || ' ' || status FROM runs WHERE "
                                     "kind = 'agent' AND user_id = :u", u=user_id)
        if row is not None:
            child_id, status = row.split(" ")
            if until(status):
                return uuid.UUID(child_id), status
        assert asyncio.get_running_loop().time() < deadline, row
        await asyncio.sleep(0.1)


async def test_deleting_workflow_stops_in_flight_agent_run(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """Deleting the workflow cancels the agent run its run's agent node started, as a
    cancel does.  The workflow run was deleted but its agent run went on calling the model
    and completed, an orphan (the node's job held its worker slot polling it until then)."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id)
    workflow_id = await publish(client, headers, *graph(agent.slug, "go {{ q }}"))
    stub.script(Reply("slow", delay_ms=4000))
    await start(client, headers, workflow_id, inputs={"q": "x"})
    await asyncio.wait_for(_child(database, user_id), 30)
    deleted = await asyncio.wait_for(client.delete(f"{API}/{workflow_id}", headers=headers), 30)
    assert deleted.status_code == 204, deleted.text
    _, status = await asyncio.wait_for(_child(database, user_id, lambda s: s in (
        "completed", "failed", "cancelled")), 30)
    assert status == "cancelled", status
