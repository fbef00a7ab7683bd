"""Agents calling agents through Roost's own /mcp (docs/agents.md, "Agents calling
agents"): the deepest chain the nesting cap allows, and inputs that are blank."""

from __future__ import annotations

import asyncio
import json
import secrets
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import update

from roost.agents.models import Run
from roost.config import Settings
from roost.db.engine import Database
from roost.tasks.worker import Worker
from tests.agents.conftest import Headers, make_agent
from tests.chat.conftest import add_provider
from tests.support.openai_stub import StubServer
from tests.support.server import in_process

MCP_HEADERS = {"Accept": "application/json, text/event-stream",
               "Content-Type": "application/json"}


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    return Settings(data_dir=tmp_path / "data", log_json=True, llm_timeout_s=5.0,
                    llm_local_model=False, knowledge_embedding_provider="hash",
                    tools_allowed_hosts="127.0.0.1", tools_call_timeout_s=20.0,
                    agents_max_nesting=5)


def _result(reply: httpx.Response) -> dict[str, Any]:
    body = reply.text
    if reply.headers.get("content-type", "").startswith("text/event-stream"):
        body = next(line[5:] for line in body.splitlines() if line.startswith("data:"))
    return dict(json.loads(body))


async def test_the_fifth_level_of_a_chain_starts_when_the_nesting_cap_is_five(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers], worker: Worker,
) -> None:
    """With ROOST_AGENTS_MAX_NESTING 5 a run 4 deep below a run started at
    /api/v1/agents/{id}/runs (a 55-character trace id) starts a fifth-level run; one 5 deep
    is refused.  Each level added a whole UUID: the fifth's trace id (260 characters) did
    not fit the column's 255 and was refused as "at most 5 deep"."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user_id, slug="leaf")
    # A real root run's trace id (as run_routes.trace_id_for makes it); then each level's
    # run calls with the trace id the server gave it, as a calling agent's MCP client does.
    trace = f"00-{secrets.token_hex(16)}-{secrets.token_hex(8)}-01"
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as http:
        for level in range(1, 7):
            reply = await asyncio.wait_for(http.post("/mcp", headers={
                **MCP_HEADERS, **headers, "Roost-Run-Trace": trace}, json={
                "jsonrpc": "2.0", "id": level, "method": "tools/call",
                "params": {"name": "agent__leaf", "arguments": {"input": "hi"}}}), 30)
            assert reply.status_code == 200, reply.text
            result = _result(reply)["result"]
            text = result["content"][0]["text"]
            if level == 6:
                assert result["isError"] is True and "at most 5 deep" in text, text
                break
            payload = json.loads(text)
            assert payload.get("status") == "completed", (level, payload)
            async with database.transaction() as session:
                # The calling run is still running when it calls (the stub answered this
                # level at once): as such, or the next call is "the calling run has ended".
                trace = str(await session.scalar(
                    update(Run).where(Run.id == uuid.UUID(payload["run_id"]))
                    .values(status="running").returning(Run.trace_id)))


async def test_an_invisible_input_to_an_agent_tool_is_refused_as_blank_not_an_unexpected_error(
    app: Any, client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
    database: Database, user: tuple[uuid.UUID, Headers],
) -> None:
    """An input of zero-width characters to agent__<slug> gets the tool's bad-input
    answer the model can read ("'input' must be text of 1 to ... characters", as "   "
    does; POST /agents/{id}/runs answers 422).  It was "an unexpected error occurred":
    str.strip() keeps such characters and RunCreate's ValidationError escaped."""
    user_id, headers = user
    await add_provider(client, admin_headers, stub)
    await make_agent(database, user_id, slug="leaf")
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=60) as http:
        for blank in ("   ", "\u200b\u200b", "\ufeff \u200d"):
            reply = await asyncio.wait_for(http.post("/mcp", headers={
                **MCP_HEADERS, **headers}, json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "agent__leaf", "arguments": {"input": blank}}}), 30)
            assert reply.status_code == 200, reply.text
            result = _result(reply)["result"]
            assert result["isError"] is True, result
            text = result["content"][0]["text"]
            assert "unexpected error" not in text, (blank, text)
            assert "'input'" in text, (blank, text)
