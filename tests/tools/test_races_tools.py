"""Overlapping operations on an MCP server and its tools: syncs at once (each a 200, no
tool twice), the server deleted while it syncs (the sync locks the server's row: it
finished first, a 200, or finds the server gone, a 404; either way the server and its
tools are gone after both), and deleted while its tool is called, directly or by an
agent run (the call is recorded, the run's job not retried).  None answers a 5xx."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from roost.tools import servers
from tests.agents.conftest import make_agent, wait_for_run, worker
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls
from tests.support.races import no_5xx, race_settings, wait_for_steps
from tests.support.sql import fetch, scalar
from tests.tools.test_tools_api import tool_id

__all__ = ["worker"]  # a fixture

pytestmark = pytest.mark.asyncio(loop_scope="session")

Headers = dict[str, str]


@pytest.fixture
def test_settings(test_settings: Settings) -> Settings:
    # Agent runs too: the stub provider, no local model.
    return race_settings(test_settings, llm_timeout_s=5.0, llm_local_model=False)


async def new_server(client: httpx.AsyncClient, headers: Headers, url: str) -> str:
    created = await client.post("/api/v1/mcp-servers", headers=headers, json={
        "name": f"echo-{uuid.uuid4().hex[:6]}", "transport": "streamable_http", "url": url})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def sync(client: httpx.AsyncClient, headers: Headers, server_id: str) -> httpx.Response:
    return await client.post(f"/api/v1/mcp-servers/{server_id}/sync", headers=headers,
                             timeout=30)


async def synced_server(client: httpx.AsyncClient, headers: Headers, url: str) -> str:
    server = await new_server(client, headers, url)
    synced = await sync(client, headers, server)
    assert synced.status_code == 200, synced.text
    return server


async def test_two_syncs_of_a_new_server_at_once_both_answer_and_list_each_tool_once(
    client: httpx.AsyncClient, database: Database, http_mcp_url: str,
) -> None:
    _, headers = await make_user(database)
    server = await new_server(client, headers, http_mcp_url)
    a, b = await asyncio.gather(sync(client, headers, server), sync(client, headers, server))
    no_5xx(a, b)
    twice = await fetch(database, "SELECT name, count(*) FROM tools WHERE mcp_server_id = :s "
                                  "GROUP BY name HAVING count(*) > 1", s=server)
    assert not twice, twice
    # Two syncs of one server are the same request: neither fails for the other.
    assert (a.status_code, b.status_code) == (200, 200), (a.text, b.text)


async def test_three_syncs_of_a_synced_server_at_once_all_answer(
    client: httpx.AsyncClient, database: Database, http_mcp_url: str,
) -> None:
    _, headers = await make_user(database)
    server = await synced_server(client, headers, http_mcp_url)
    answers = await asyncio.gather(*(sync(client, headers, server) for _ in range(3)))
    no_5xx(*answers)
    assert all(r.status_code == 200 for r in answers), [r.text for r in answers]


async def test_the_server_deleted_while_it_syncs_leaves_no_tool_behind(
    client: httpx.AsyncClient, database: Database, http_mcp_url: str,
) -> None:
    _, headers = await make_user(database)
    for i in range(10):
        server = await new_server(client, headers, http_mcp_url)
        syncing = asyncio.ensure_future(sync(client, headers, server))
        await asyncio.sleep(0.03 * i)  # the delete at a different moment of each sync
        deleted = await client.delete(f"/api/v1/mcp-servers/{server}", headers=headers)
        synced = await syncing
        no_5xx(deleted, synced)
        assert deleted.status_code == 204
        assert synced.status_code in (200, 404), synced.text
    assert await scalar(database, "SELECT count(*) FROM tools WHERE kind = 'mcp'") == 0


async def test_the_server_deleted_during_a_call_the_call_is_recorded(
    client: httpx.AsyncClient, database: Database, http_mcp_url: str,
) -> None:
    _, headers = await make_user(database)
    server = await synced_server(client, headers, http_mcp_url)
    sleep_id = await tool_id(client, headers, server, "sleep")
    calling = asyncio.ensure_future(client.post(
        f"/api/v1/tools/{sleep_id}/call", headers=headers, json={"arguments": {"seconds": 1.5}},
        timeout=30))
    await asyncio.sleep(0.5)
    deleted = await client.delete(f"/api/v1/mcp-servers/{server}", headers=headers)
    called = await calling
    no_5xx(deleted, called)
    assert deleted.status_code == 204
    [row] = await fetch(database, "SELECT count(*) AS runs, count(*) FILTER "
                                  "(WHERE status = 'running') AS running FROM tool_runs")
    assert (row.runs, row.running) == (1, 0), "the call that ran is recorded, and closed"


async def test_the_server_deleted_while_an_agent_run_calls_its_tool_the_run_ends_once(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    http_mcp_url: str, worker: Worker,
) -> None:
    user_id, headers = await make_user(database)
    await add_provider(client, admin_headers, stub)
    server = await synced_server(client, headers, http_mcp_url)
    sleep_id = await tool_id(client, headers, server, "sleep")
    agent = await make_agent(database, user_id, tool_permissions=[sleep_id])
    stub.script(ToolCalls(Call("sleep", {"seconds": 2})), Reply("Slept."))
    run = (await client.post(f"/api/v1/agents/{agent.id}/runs", json={"input": "sleep"},
                             headers=headers)).json()
    await wait_for_steps(client, headers, run["id"], 2)  # the tool step has started
    deleted = await client.delete(f"/api/v1/mcp-servers/{server}", headers=headers)
    no_5xx(deleted)
    assert deleted.status_code == 204
    done = await wait_for_run(client, headers, run["id"])
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    [row] = await fetch(
        database,
        "SELECT b.attempts, b.status, "
        " (SELECT count(*) FROM tool_runs t WHERE t.run_id = r.id) AS tool_runs, "
        " (SELECT count(*) FROM tool_runs t WHERE t.run_id = r.id AND t.status = 'running')"
        "   AS running "
        "FROM runs r JOIN background_tasks b ON b.id = r.task_id WHERE r.id = :r", r=run["id"])
    summary: Any = (row, done["status"], [(s["step_type"], s["status"], s["error"])
                                          for s in steps])
    assert done["status"] in ("completed", "failed"), summary
    assert row.running == 0 and row.tool_runs == 1, summary
    assert row.attempts == 1, summary  # the run's own writes did not fail and retry
    assert len(stub.requests(path="/v1/chat/completions")) == 2, summary


async def test_the_server_deleted_while_its_sync_writes_both_end_and_nothing_is_left(
    client: httpx.AsyncClient, database: Database, http_mcp_url: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The sync's writing transaction locks the server's row: a delete arriving then waits
    for it (the sync's 200, then the delete) or, first, leaves the sync a 404."""
    _, headers = await make_user(database)
    server = await new_server(client, headers, http_mcp_url)
    original = servers._upsert_tools
    writing = asyncio.Event()

    async def slow_upsert(*args: Any, **kwargs: Any) -> Any:
        writing.set()
        await asyncio.sleep(1.0)
        return await original(*args, **kwargs)

    monkeypatch.setattr(servers, "_upsert_tools", slow_upsert)
    syncing = asyncio.ensure_future(sync(client, headers, server))
    await asyncio.wait_for(writing.wait(), 20)
    deleted = await client.delete(f"/api/v1/mcp-servers/{server}", headers=headers)
    synced = await syncing
    no_5xx(deleted, synced)
    assert deleted.status_code == 204, deleted.text
    assert synced.status_code in (200, 404), synced.text
    gone = await client.get(f"/api/v1/mcp-servers/{server}", headers=headers)
    assert gone.status_code == 404, gone.text
    listed = await client.get("/api/v1/tools", params={"server_id": server}, headers=headers)
    assert listed.json()["items"] == [], listed.text
    assert await scalar(database, "SELECT count(*) FROM tools WHERE mcp_server_id = :s",
                        s=server) == 0


async def test_inverse_dependency_edges_added_at_once_never_close_a_cycle(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """a -> b and b -> a sent together each found no path back and both were stored (a
    2-cycle); the writers of a user's graph now take turns: one 201, one 409."""
    _, alice = await make_user(database)
    tools = (await client.get("/api/v1/tools", params={"kind": "builtin"}, headers=alice)).json()
    ids = sorted(t["id"] for t in tools["items"])
    pairs = [(ids[i], ids[j]) for i in range(len(ids)) for j in range(i + 1, len(ids))][:6]
    for a, b in pairs:
        got = await asyncio.gather(
            client.post(f"/api/v1/tools/{a}/dependencies", headers=alice,
                        json={"depends_on_tool_id": b}),
            client.post(f"/api/v1/tools/{b}/dependencies", headers=alice,
                        json={"depends_on_tool_id": a}),
        )
        no_5xx(*got)
        assert sorted(r.status_code for r in got) == [201, 409], [r.text for r in got]
