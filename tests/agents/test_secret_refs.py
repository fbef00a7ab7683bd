"""Persona secrets by reference: an MCP server's env names ``${secret:key}``; an agent of a
persona without that secret is refused at configuration time; a run of the persona's
agent gets the value at call time; a direct call gets a clear refusal; nothing stores
the value."""

from __future__ import annotations

import hashlib
import sys
import uuid
from pathlib import Path

import httpx

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.api import columns_holding, create_agent, create_persona
from tests.agents.conftest import Headers, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls

ECHO_SERVER = Path(__file__).resolve().parents[1] / "tools" / "mcp_echo_server.py"
TOKEN = "tok-5e7a9c31-only-the-server-may-see-this"


async def test_a_server_env_takes_the_persona_secret_at_call_time_only(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    _, headers = user
    await add_provider(client, admin_headers, stub)
    server = await client.post("/api/v1/mcp-servers", headers=admin_headers, json={
        "name": "secretive", "transport": "stdio", "command": sys.executable,
        "args": [str(ECHO_SERVER)], "is_global": True,
        "env": {"ECHO_TOKEN": "Bearer ${secret:echo_token}"}})
    assert server.status_code == 201, server.text
    synced = await client.post(f"/api/v1/mcp-servers/{server.json()['id']}/sync",
                               headers=admin_headers)
    assert synced.status_code == 200, synced.text
    persona = await create_persona(client, headers)

    # Configuration time: the persona lacks the secret, so the agent is refused.
    refused = await client.post("/api/v1/agents", headers=headers, json={
        "name": "Env", "slug": "env-reader", "persona_id": persona["id"],
        "tool_permissions": ["env_sha256"]})
    assert refused.status_code == 422 and "echo_token" in refused.json()["detail"]
    unbound = await client.post("/api/v1/agents", headers=headers, json={
        "name": "Env", "slug": "env-reader", "tool_permissions": ["env_sha256"]})
    assert unbound.status_code == 422 and "persona" in unbound.json()["detail"]

    stored = await client.put(f"/api/v1/personas/{persona['id']}/secrets", headers=headers,
                              json={"secret_type": "mcp_env", "key_name": "echo_token",
                                    "value": TOKEN})
    assert stored.status_code == 200, stored.text
    agent = await create_agent(client, headers, slug="env-reader", persona_id=persona["id"],
                               tool_permissions=["env_sha256"])

    stub.script(ToolCalls(Call("env_sha256", {"name": "ECHO_TOKEN"})), Reply("checked"))
    run = (await client.post(f"/api/v1/agents/{agent['id']}/runs", json={"input": "check"},
                             headers=headers)).json()
    done = await wait_for_run(client, headers, run["id"])
    assert done["status"] == "completed", done
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    expected = hashlib.sha256(f"Bearer {TOKEN}".encode()).hexdigest()
    assert steps[1]["status"] == "completed" and expected in str(steps[1]["output"])

    # A direct call has no persona to take the secret from: refused, recorded, clear.
    direct = await client.post("/api/v1/tools/by-name/env_sha256/call", headers=admin_headers,
                               json={"arguments": {"name": "ECHO_TOKEN"}})
    assert direct.status_code == 409, direct.text
    assert "echo_token" in direct.json()["detail"] and "persona" in direct.json()["detail"]
    assert await columns_holding(database, TOKEN) == []
