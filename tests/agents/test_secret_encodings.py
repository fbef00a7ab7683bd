"""Persona secrets by reference, quoted back by an MCP server in common encodings: hidden
in every form (roost.tools.secretrefs.encoded_forms)."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from urllib.parse import quote_plus

import httpx

from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.api import columns_holding, create_agent, persona_with_secret_server
from tests.agents.conftest import Headers, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls

QUOTER = '''
import json, os, urllib.parse
from mcp.server.mcpserver import MCPServer
server = MCPServer("quoter", version="1.0")

@server.tool(description="Report the configuration as JSON.")
def config_json() -> str:
    return json.dumps({"token": os.environ.get("T", "")})

@server.tool(description="The URL it would call.")
def config_url() -> str:
    return "https://api.example/v1?token=" + urllib.parse.quote_plus(os.environ.get("T", ""))

if __name__ == "__main__":
    server.run()
'''
SPICY = "cl\u00e9 secr\u00e8te/\u043a\u043b\u044e\u0447 9d1e7a"


async def test_a_secret_quoted_back_in_python_json_or_a_query_string_is_hidden(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    user: tuple[uuid.UUID, Headers], worker: Worker, tmp_path: Path,
) -> None:
    """A server quoting back what it was sent has every substituted value hidden as
    [secret <name>] before it is recorded or shown to the model.  A stdio server given
    T=${secret:tok} whose tool answers json.dumps({"token": T}) (Python's default JSON,
    \\uXXXX escapes) or a URL built with urllib.parse.quote_plus (space as '+') put the
    value in the run's steps: only json.dumps(ensure_ascii=False) and quote(safe="") forms
    were hidden."""
    _, headers = user
    script = tmp_path / "quoter.py"
    script.write_text(QUOTER)
    await add_provider(client, admin_headers, stub)
    persona = await persona_with_secret_server(
        client, admin_headers, headers, name="quoter", script=script,
        env={"T": "${secret:tok}"}, secret=SPICY)
    agent = await create_agent(client, headers, slug="quoter", persona_id=persona["id"],
                               tool_permissions=["config_json", "config_url"])
    stub.script(ToolCalls(Call("config_json", {}), Call("config_url", {})), Reply("ok"))
    run = (await client.post(f"/api/v1/agents/{agent['id']}/runs", json={"input": "go"},
                             headers=headers)).json()
    done = await wait_for_run(client, headers, run["id"])
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).text
    assert done["status"] == "completed", (done, steps)
    escaped = json.dumps(SPICY)[1:-1]  # Python's default: ensure_ascii, \\uXXXX escapes
    plus = quote_plus(SPICY)  # a query string: space as '+'
    texts = "\n".join(c["text"] for step in json.loads(steps) if step["step_type"] == "tool_call"
                      for c in step["output"]["content"])
    assert escaped not in texts and plus not in texts, texts
    assert texts.count("[secret tok]") == 2, texts
    assert await columns_holding(database, escaped) == []
    assert await columns_holding(database, plus) == []
