"""An account deleted while its tool call runs, through the REST API or /mcp: the call
ends with a clear answer (never a 5xx nor a database message), no tool run is left
running, and the account's credentials are refused after; a global MCP server keeps
serving everyone after the administrator who registered it is deleted."""

from __future__ import annotations

import asyncio
import uuid

import httpx
import pytest
from fastapi import FastAPI

from roost.db.engine import Database
from tests.agents.test_races_runs import slow_current_time
from tests.support.identity import make_user
from tests.support.lifecycle import end_account
from tests.support.mcp_client import mcp_session
from tests.support.races import no_5xx
from tests.support.server import in_process
from tests.support.sql import scalar
from tests.tools.test_tools_api import tool_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

Headers = dict[str, str]
MCP_ACCEPT = {"Accept": "application/json, text/event-stream"}
TOOLS_LIST = {"jsonrpc": "2.0", "id": 1, "method": "tools/list"}


async def test_an_account_deleted_while_its_tool_call_runs_gets_a_clear_answer(
    client: httpx.AsyncClient, admin_headers: Headers, database: Database,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id, headers = await make_user(database)
    started = slow_current_time(monkeypatch, 1.5)
    call = asyncio.ensure_future(client.post(
        "/api/v1/tools/by-name/current_time/call", headers=headers,
        json={"arguments": {"timezone": "UTC"}}, timeout=30))
    await asyncio.wait_for(started.wait(), 10)
    await end_account(client, admin_headers, user_id)
    answer = await call
    no_5xx(answer)
    assert answer.status_code == 409, answer.text  # its record refers to no one now
    assert await scalar(database, "SELECT count(*) FROM tool_runs WHERE status = 'running'") == 0


async def test_an_account_deleted_while_its_mcp_tool_call_runs_gets_an_error_result(
    app: FastAPI, database: Database, admin_headers: Headers, monkeypatch: pytest.MonkeyPatch,
) -> None:
    user_id, headers = await make_user(database)
    started = slow_current_time(monkeypatch, 1.5)
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        async with mcp_session(f"{base}/mcp", headers) as session:
            call = asyncio.ensure_future(session.call_tool("current_time", {"timezone": "UTC"}))
            await asyncio.wait_for(started.wait(), 10)
            await end_account(http, admin_headers, user_id)
            result = await asyncio.wait_for(call, 20)
            assert result.is_error, result
            [said] = [c.text for c in result.content if c.type == "text"]
            assert "deleted meanwhile" in said and "foreign key" not in said, said
        after = await http.post("/mcp", headers={**headers, **MCP_ACCEPT}, json=TOOLS_LIST)
        assert after.status_code == 401, after.text
    assert await scalar(database, "SELECT count(*) FROM tool_runs WHERE status = 'running'") == 0


async def test_a_global_mcp_server_outlives_the_administrator_who_registered_it(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers, http_mcp_url: str,
) -> None:
    admin_id, admin = await make_user(database, admin=True)
    _, alice = await make_user(database)
    created = await client.post("/api/v1/mcp-servers", headers=admin, json={
        "name": f"shared-{uuid.uuid4().hex[:6]}", "transport": "streamable_http",
        "url": http_mcp_url, "is_global": True})
    assert created.status_code == 201, created.text
    server_id = created.json()["id"]
    synced = await client.post(f"/api/v1/mcp-servers/{server_id}/sync", headers=admin)
    assert synced.status_code == 200, synced.text
    echo = await tool_id(client, alice, server_id, "echo")
    call = f"/api/v1/tools/{echo}/call"
    first = await client.post(call, headers=alice, json={"arguments": {"text": "x"}})
    assert first.status_code == 200, first.text
    await end_account(client, admin_headers, admin_id)
    again = await client.post(call, headers=alice, json={"arguments": {"text": "x"}})
    assert again.status_code == 200, again.text
    # Still the operator's to manage.
    assert (await client.get(f"/api/v1/mcp-servers/{server_id}",
                             headers=admin_headers)).status_code == 200
    assert (await client.delete(f"/api/v1/mcp-servers/{server_id}",
                                headers=admin_headers)).status_code == 204
