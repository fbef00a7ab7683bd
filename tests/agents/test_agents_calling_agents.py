"""Agents calling agents through Roost's own /mcp (docs/mcp.md, "Agents calling agents"):
an agent whose MCP servers include Roost's /mcp (with its owner's key) may call
``agent__<slug>`` tools; a run started by a run's call is chained under it by trace id
(``Roost-Run-Trace``), nested at most ``ROOST_AGENTS_MAX_NESTING`` deep and cancelled
with it. The agent here calls itself: the model (the stub) always asks for the tool."""

from __future__ import annotations

import asyncio
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings
from roost.context import outgoing_run_trace
from roost.db.engine import Database
from roost.tasks.worker import Worker
from roost.tools import mcpclient
from tests.agents.conftest import TERMINAL, Headers, make_agent
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, ToolCalls
from tests.support.server import in_process

NESTED = "/mcp-"


@pytest.fixture
def test_settings(tmp_path: Path, request: pytest.FixtureRequest) -> Settings:
    nesting = getattr(request, "param", 3)
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_timeout_s=5.0,
                    llm_local_model=False, knowledge_embedding_provider="hash",
                    tools_allowed_hosts="127.0.0.1", tools_call_timeout_s=20.0,
                    agents_max_nesting=nesting)


async def _self_server(client: httpx.AsyncClient, headers: Headers, base: str) -> None:
    created = await client.post("/api/v1/mcp-servers", headers=headers, json={
        "name": "self", "transport": "streamable_http", "url": f"{base}/mcp",
        "headers": {"Authorization": headers["Authorization"]}})
    assert created.status_code == 201, created.text
    synced = await client.post(f"/api/v1/mcp-servers/{created.json()['id']}/sync",
                               headers=headers)
    assert synced.status_code == 200, synced.text


async def _start_chain(client: httpx.AsyncClient, headers: Headers, base: str,
                       agent_id: uuid.UUID) -> dict[str, Any]:
    """Roost's own /mcp registered for the user, then a run of the looping agent."""
    await _self_server(client, headers, base)
    first = await client.post(f"/api/v1/agents/{agent_id}/runs", headers=headers,
                              json={"input": "go"})
    assert first.status_code == 202, first.text
    return dict(first.json())


async def _runs(database: Database, agent_id: uuid.UUID) -> list[Any]:
    async with database.transaction() as session:
        return list((await session.execute(text(
            "SELECT id, status, source, trace_id FROM runs WHERE agent_id = :a "
            "ORDER BY created_at"), {"a": agent_id})).all())


async def _until(what: str, check: Any, within: float = 60.0) -> None:
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not await check():
        assert loop.time() < deadline, f"waited {within:g} s for {what}"
        await asyncio.sleep(0.2)


async def _looping_agent(client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
                         database: Database, user_id: uuid.UUID) -> Any:
    await add_provider(client, admin_headers, stub)
    agent = await make_agent(database, user_id, slug="loop", tool_permissions=["agent__loop"],
                             config={"max_steps": 2})
    stub.script(ToolCalls(Call("agent__loop", {"input": "again"}), times=None))
    return agent


@pytest.mark.parametrize("test_settings", [1], indirect=True)
async def test_a_chain_of_agents_calling_agents_stops_at_the_nesting_cap(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """Nesting 1: the user's run starts runs through /mcp, whose own calls are refused
    with a reason the model reads; every run ends (no runs piling up without end)."""
    user_id, headers = user
    agent = await _looping_agent(client, admin_headers, stub, database, user_id)
    async with in_process(app) as base:
        first = await _start_chain(client, headers, base, agent.id)

        async def all_ended() -> bool:
            runs = await _runs(database, agent.id)
            return len(runs) > 1 and all(r.status in TERMINAL for r in runs)

        await _until("every run of the chain to end", all_ended)
    runs = await _runs(database, agent.id)
    root = next(r for r in runs if str(r.id) == first["id"])
    nested = [r for r in runs if r is not root]
    assert root.trace_id.count(NESTED) == 0
    assert nested and all(r.source == "mcp" for r in nested)
    # Each is chained under the run that called (the header carried its trace id).
    assert all(r.trace_id.startswith(f"{root.trace_id}{NESTED}") and r.trace_id.count(NESTED) == 1
               for r in nested)
    async with database.transaction() as session:
        refused = (await session.execute(text(
            "SELECT concat(s.error, s.output::text) FROM run_steps s WHERE s.run_id = ANY(:ids) "
            "AND s.step_type = 'tool_call'"), {"ids": [r.id for r in nested]})).scalars().all()
    assert refused and all("at most 1 deep" in (out or "") for out in refused), refused


async def test_cancelling_a_run_cancels_the_runs_it_started_through_mcp(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """The user cancels the run they started while it waits for the runs it started
    (three deep): those are cancelled in the same transaction, and none starts after."""
    user_id, headers = user
    agent = await _looping_agent(client, admin_headers, stub, database, user_id)
    async with in_process(app) as base:
        first = await _start_chain(client, headers, base, agent.id)

        async def chained() -> bool:
            return len(await _runs(database, agent.id)) >= 3

        await _until("the run to start runs through /mcp", chained)
        cancel = await client.post(f"/api/v1/runs/{first['id']}/cancel", headers=headers)
        assert cancel.status_code == 200, cancel.text
        after_cancel = await _runs(database, agent.id)
        assert all(r.status in TERMINAL for r in after_cancel), after_cancel
        await asyncio.sleep(3)  # the calls in flight at the cancel get their answers
        later = await _runs(database, agent.id)
    assert len(later) == len(after_cancel)
    assert all(r.status == "cancelled" for r in later if r.status != "completed")


def test_the_header_names_the_calling_run_and_replaces_the_owners() -> None:
    """A run's calls carry its trace id, replacing a header of that name the server's
    owner set; a trace id no header can carry (a workflow node id with non-ASCII letters
    in it) is not sent, rather than failing the call; outside a run nothing is added."""
    spec = mcpclient.ServerSpec(name="s", transport="streamable_http", url="http://x/mcp",
                                headers={"roost-run-trace": "forged", "X-A": "1"})
    assert mcpclient._headers(spec) == {"roost-run-trace": "forged", "X-A": "1"}
    for trace, sent in (("run-1/mcp-2", {"Roost-Run-Trace": "run-1/mcp-2", "X-A": "1"}),
                        ("workflow-1/nœud/2/3", {"roost-run-trace": "forged", "X-A": "1"})):
        token = outgoing_run_trace.set(trace)
        try:
            assert mcpclient._headers(spec) == sent
        finally:
            outgoing_run_trace.reset(token)
