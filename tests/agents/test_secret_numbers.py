"""Persona secrets by reference quoted back by an MCP server as a JSON number."""

from __future__ import annotations

import json
import uuid
from pathlib import Path

import httpx

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.api import columns_holding, create_agent, persona_with_secret_server
from tests.agents.conftest import Headers, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls

NUMBERS = '''
import os
from mcp.server.mcpserver import MCPServer
server = MCPServer("numbers", version="1.0")

@server.tool(description="The account the server is configured for.")
def account() -> dict[str, int]:
    return {"account": int(os.environ.get("T", "0"))}

if __name__ == "__main__":
    server.run()
'''
ACCOUNT = "873401992615"


async def test_a_numeric_secret_echoed_as_a_json_number_is_hidden(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, tmp_path: Path,
) -> None:
    """A stdio server given T=${secret:tok} (an account number, 873401992615) answering the
    structured output {"account": 873401992615}: the number is recorded as
    [secret tok] too (the text content was hidden, the structuredContent's number landed
    in the run's steps and the database)."""
    _, headers = user
    script = tmp_path / "echo_account.py"
    script.write_text(NUMBERS)
    await add_provider(client, admin_headers, stub)
    persona = await persona_with_secret_server(
        client, admin_headers, headers, name="numbers", script=script,
        env={"T": "${secret:tok}"}, secret=ACCOUNT)
    agent = await create_agent(client, headers, slug="numbers", persona_id=persona["id"],
                               tool_permissions=["account"])
    stub.script(ToolCalls(Call("account", {})), Reply("ok"))
    run = (await client.post(f"/api/v1/agents/{agent['id']}/runs", json={"input": "go"},
                             headers=headers)).json()
    done = await wait_for_run(client, headers, run["id"])
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).text
    assert done["status"] == "completed", (done, steps)
    calls = [s for s in json.loads(steps) if s["step_type"] == "tool_call"]
    assert calls and "[secret tok]" in json.dumps(calls), steps  # the text was hidden
    assert ACCOUNT not in steps, steps
    assert await columns_holding(database, ACCOUNT) == []

