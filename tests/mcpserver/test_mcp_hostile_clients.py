"""/mcp as a sloppy or hostile MCP client uses it: no endless GET stream (stateless,
nothing to stream, outside the stream quota), bad values answered as the REST API
answers them, arguments the advertised schemas forbid refused, a failing ``tools/list``
answered without the database's message, a client that goes away taking its agent run
with it, and batches and request ids JSON-RPC does not allow refused as invalid."""

from __future__ import annotations

import asyncio
import contextlib
import json
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from mcp import types
from sqlalchemy import func, select, text
from sqlalchemy.ext.asyncio import AsyncSession

from roost.agents import mcpserving as agents_mcpserving
from roost.agents.models import Agent, Run
from roost.app import create_app
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.principal import Principal
from roost.tools import mcpserving as tools_mcpserving
from tests.identity.limits import limit_settings
from tests.support.identity import make_user
from tests.support.mcp_client import mcp_session
from tests.support.server import in_process

MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


def tool_call(name: str, arguments: dict[str, Any], id_: Any = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": id_, "method": "tools/call",
            "params": {"name": name, "arguments": arguments}}


async def add_agent(database: Database, owner: uuid.UUID, slug: str) -> None:
    async with database.transaction() as session:
        session.add(Agent(user_id=owner, name="Helper", slug=slug, system_prompt="Help.",
                          tool_permissions=[], config={}))


async def run_count(database: Database) -> int:
    async with database.transaction() as session:
        return int(await session.scalar(select(func.count()).select_from(Run)) or 0)


async def run_statuses(database: Database) -> list[str]:
    async with database.transaction() as session:
        return list((await session.scalars(select(Run.status))).all())


async def test_get_and_delete_on_mcp_are_405_and_open_no_stream(
    tmp_path: Path, database: Database, test_keys: KeyMaterial,
) -> None:
    """docs/mcp.md: stateless, one JSON body per POST. A GET stream would stay open
    forever (pings only), outside ROOST_RATE_LIMIT_STREAMS: refused at once, twice."""
    settings = limit_settings(tmp_path, rate_limit_streams=1)
    app = create_app(settings, database=database, keys=test_keys, configure_logs=False)
    _, alice = await make_user(database, username="alice")
    async with (in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http,
                contextlib.AsyncExitStack() as streams):
        for method in ("GET", "GET", "DELETE"):
            reply = await streams.enter_async_context(
                http.stream(method, "/mcp", headers={**MCP_HEADERS, **alice}))
            assert reply.status_code == 405, (method, reply.status_code)
            assert reply.headers["allow"] == "POST"
            assert not reply.headers["content-type"].startswith("text/event-stream")


@pytest.mark.parametrize(("tool", "arguments"), [
    ("task_add", {"title": "milk\u0000eggs"}),
    ("current_time", {"timezone": "UTC\u0000"}),
    ("agent__helper", {"input": "hello\u0000there"}),
])
async def test_a_nul_in_tool_arguments_is_a_clear_error_not_an_unexpected_one(
    app: FastAPI, database: Database, tool: str, arguments: dict[str, Any],
) -> None:
    """A NUL in an argument is bad input: REST answers 400 "a value is out of range or
    malformed"; /mcp must say so too, not "an unexpected error occurred" (logged as one)."""
    alice_id, alice = await make_user(database, username="alice")
    await add_agent(database, alice_id, "helper")
    async with in_process(app) as base, mcp_session(f"{base}/mcp", alice) as session:
        result = await session.call_tool(tool, arguments)
    assert result.is_error
    message = result.content[0].text  # type: ignore[union-attr]
    assert "unexpected error" not in message, message


async def test_an_agent_tool_refuses_arguments_its_schema_forbids(
    app: FastAPI, database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """agent__<slug> advertises additionalProperties: false; an unknown argument (here an
    idempotency key a client expects honoured) is an error result naming it, and no run."""
    monkeypatch.setattr(agents_mcpserving, "WAIT_S", 0.5)  # no worker: do not wait 120 s
    alice_id, alice = await make_user(database, username="alice")
    await add_agent(database, alice_id, "helper")
    async with in_process(app) as base, mcp_session(f"{base}/mcp", alice) as session:
        tool = next(t for t in (await session.list_tools()).tools if t.name == "agent__helper")
        assert tool.input_schema.get("additionalProperties") is False
        result = await session.call_tool(
            "agent__helper", {"input": "hello", "idempotency_key": "once-only"})
    assert result.is_error, result.structured_content
    assert "idempotency_key" in result.content[0].text  # type: ignore[union-attr]
    assert await run_count(database) == 0


async def test_whoami_refuses_arguments_its_schema_forbids(
    app: FastAPI, database: Database,
) -> None:
    """whoami advertises no properties and additionalProperties: false, as knowledge_search
    does (which refuses unknown arguments): an unknown argument is an error result."""
    _, alice = await make_user(database, username="alice")
    async with in_process(app) as base, mcp_session(f"{base}/mcp", alice) as session:
        result = await session.call_tool("whoami", {"user_id": str(uuid.uuid4())})
    assert result.is_error, result.structured_content


@pytest.mark.parametrize("query", ["   ", "\u200b\u2060", "\u3000\n"])
async def test_a_blank_knowledge_search_is_refused_as_the_rest_api_refuses_it(
    app: FastAPI, client: httpx.AsyncClient, database: Database, query: str,
) -> None:
    """A query of white space or invisible characters has nothing to search for (a vector
    search would hand back whatever lies nearest to nothing): both ways of searching
    answer that the query is blank."""
    _, alice = await make_user(database, username="alice")
    reply = await client.post("/api/v1/knowledge/search", headers=alice,
                              json={"query": query, "mode": "text"})
    assert reply.status_code == 422, reply.text
    assert "blank" in reply.text and "query" in reply.text
    async with in_process(app) as base, mcp_session(f"{base}/mcp", alice) as session:
        result = await session.call_tool("knowledge_search", {"query": query})
    assert result.is_error, result.structured_content
    assert "query" in result.content[0].text  # type: ignore[union-attr]


@pytest.mark.parametrize(("tool", "arguments"), [
    ("web_fetch", {"url": "http://example.test/", "follow_links": True}),
    ("current_time", {"timezone": "UTC", "format": "iso"}),
    ("lsp_diagnostics", {"path": "main.py", "fix": True}),
])
async def test_an_unknown_argument_to_a_tools_domain_builtin_is_named(
    app: FastAPI, database: Database, tool: str, arguments: dict[str, object],
) -> None:
    """docs/mcp.md: every tool refuses arguments its schema does not declare with an error
    result naming them; the tools domain's built-ins (validated by roost.tools.calls) said
    only "at /: unexpected property", not which argument to drop."""
    _, alice = await make_user(database, username="alice")
    extra = next(k for k in arguments if k not in ("url", "timezone", "path"))
    async with in_process(app) as base, mcp_session(f"{base}/mcp", alice) as session:
        listed = {t.name: t for t in (await session.list_tools()).tools}
        assert listed[tool].input_schema.get("additionalProperties") is False
        result = await session.call_tool(tool, arguments)
    assert result.is_error, result.structured_content
    message = result.content[0].text  # type: ignore[union-attr]
    assert f"unexpected property (not allowed by the schema): {extra}" in message, message


async def test_an_unknown_time_zone_is_refused_without_echoing_it(
    app: FastAPI, database: Database,
) -> None:
    """docs/mcp.md: invalid arguments are named, never echoed (a value may be a secret)."""
    _, alice = await make_user(database, username="alice")
    async with in_process(app) as base, mcp_session(f"{base}/mcp", alice) as session:
        result = await session.call_tool("current_time", {"timezone": "SECRETVALUE-1234"})
    assert result.is_error, result.structured_content
    message = result.content[0].text  # type: ignore[union-attr]
    assert "unknown time zone" in message and "SECRETVALUE" not in message, message


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/x-www-form-urlencoded",
                                          "application/vnd.api+json"])
async def test_a_post_that_is_not_json_is_a_415_problem(
    app: FastAPI, database: Database, content_type: str | None,
) -> None:
    """The SDK answered a POST without 'Content-Type: application/json' with a text/plain
    400, neither a problem answer nor JSON-RPC: /mcp answers 415 problem+json first."""
    _, alice = await make_user(database, username="alice")
    headers = {**MCP_HEADERS, **alice}
    del headers["Content-Type"]
    if content_type is not None:
        headers["Content-Type"] = content_type
    body = b'{"jsonrpc": "2.0", "id": 1, "method": "tools/list"}'
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        reply = await http.post("/mcp", headers=headers, content=body)
        assert reply.status_code == 415, reply.text
        assert reply.headers["content-type"].startswith("application/problem+json"), reply.text
        assert "application/json" in reply.json()["detail"]
        with_charset = await http.post("/mcp", content=body, headers={
            **MCP_HEADERS, **alice, "Content-Type": "application/json; charset=utf-8"})
    assert with_charset.status_code == 200, with_charset.text


async def test_a_failing_tools_list_does_not_send_the_database_message(
    app: FastAPI, database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An unexpected error while listing (a statement that fails: timeout, lost connection,
    conflict) is answered as tools/call answers it, never with the SQL and its message."""
    _, alice = await make_user(database, username="alice")

    async def failing(session: AsyncSession, principal: Principal) -> Sequence[types.Tool]:
        await session.execute(text("SELECT id FROM tools WHERE 1 / 0 = 1"))
        return []

    monkeypatch.setattr(tools_mcpserving, "offered_tools", failing)
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        reply = await http.post("/mcp", headers={**MCP_HEADERS, **alice},
                                json={"jsonrpc": "2.0", "id": 1, "method": "tools/list"})
    assert reply.status_code < 500
    body = reply.text
    for leaked in ("SELECT", "FROM tools", "division by zero", "sqlalchemy", "asyncpg"):
        assert leaked not in body, body


async def test_a_client_that_goes_away_cancels_its_agent_run(
    app: FastAPI, database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """docs/agents.md ("At /mcp"): a caller that goes away while it waits for an
    agent__<slug> call takes its run with it (cancelled).  Before, nothing watched for the
    disconnect: the run stayed pending and the call waited its full WAIT_S."""
    monkeypatch.setattr(agents_mcpserving, "WAIT_S", 20.0)  # longer than the check below
    alice_id, alice = await make_user(database, username="alice")
    await add_agent(database, alice_id, "helper")

    async def all_cancelled() -> None:
        for _ in range(1_000):  # bounded by asyncio.wait_for below
            found = await run_statuses(database)
            if found and all(s == "cancelled" for s in found):
                return
            await asyncio.sleep(0.2)

    async with in_process(app) as base:
        # No worker here: the run stays pending, so the client's read times out and it leaves.
        async with httpx.AsyncClient(base_url=base, timeout=1) as http:
            with pytest.raises(httpx.ReadTimeout):
                await http.post("/mcp", json=tool_call("agent__helper", {"input": "hi"}),
                                headers={**MCP_HEADERS, **alice})
        try:
            await asyncio.wait_for(all_cancelled(), 12)
        except TimeoutError:
            pytest.fail(f"the client left, its run goes on: {await run_statuses(database)}")
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:  # /mcp still serves
            reply = await http.post("/mcp", json=tool_call("whoami", {}),
                                    headers={**MCP_HEADERS, **alice})
    assert reply.status_code == 200 and "result" in reply.json(), reply.text


SECRET_CALL = {"name": "current_time", "arguments": {"timezone": "hunter2-secret"}}


@pytest.mark.parametrize("id_", [None, {"a": 1}, True, 1.5], ids=["null", "object", "bool", "float"])
async def test_a_request_whose_id_is_not_a_string_or_an_integer_is_an_invalid_request(
    app: FastAPI, database: Database, id_: Any,
) -> None:
    """A tools/call whose id is not a string or an integer (MCP's ids) is answered as an
    invalid request (-32600).  Before, a null or object id was taken as a notification: a
    202 with no body, the call dropped and the client waiting for an answer forever."""
    _, alice = await make_user(database, username="alice")
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        reply = await http.post("/mcp", content=json.dumps(tool_call("whoami", {}, id_)),
                                headers={**MCP_HEADERS, **alice})
    assert reply.status_code == 400, (reply.status_code, reply.text)
    assert reply.json() == {"jsonrpc": "2.0", "id": None, "error": {
        "code": -32600, "message": "invalid request: id must be a string or an integer"}}


@pytest.mark.parametrize("body", [
    [{"jsonrpc": "2.0", "id": 1, "method": "tools/list"},
     tool_call("current_time", {"timezone": "hunter2-secret"}, 2)],
    None, 42, "hunter2-secret",
], ids=["batch", "null", "number", "string"])
async def test_a_batch_or_a_bare_value_is_refused_without_echoing_it(
    app: FastAPI, database: Database, body: Any,
) -> None:
    """docs/mcp.md: an argument's value is never echoed.  A JSON-RPC batch (which this MCP
    version does not take), or a body that is no object, is an invalid request (-32600)
    that quotes nothing back; before, it was -32602 with a pydantic dump of the body."""
    _, alice = await make_user(database, username="alice")
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        reply = await http.post("/mcp", content=json.dumps(body), headers={**MCP_HEADERS, **alice})
        malformed = await http.post("/mcp", content=b'{"jsonrpc": "2.0", "id": 1,',
                                    headers={**MCP_HEADERS, **alice})
    assert reply.status_code == 400, reply.text
    assert "hunter2" not in reply.text, reply.text
    assert reply.json()["error"] == {
        "code": -32600, "message": "a request is one JSON-RPC object; batches are not accepted"}
    assert malformed.status_code == 400 and malformed.json()["error"]["code"] == -32700


@pytest.mark.parametrize("body", [
    {"jsonrpc": "1.0", "id": 1, "method": "tools/call", "params": SECRET_CALL},
    {"id": 1, "method": "tools/call", "params": SECRET_CALL},
    {"jsonrpc": "2.0", "id": 1, "method": "tools/call", "params": "hunter2-secret"},
], ids=["jsonrpc-1.0", "no-jsonrpc", "params-not-an-object"])
async def test_an_object_that_is_no_json_rpc_message_is_refused_without_echoing_it(
    app: FastAPI, database: Database, body: dict[str, Any],
) -> None:
    """A JSON object that is no JSON-RPC 2.0 message (an old client's "jsonrpc": "1.0",
    none at all, params that are no object) is an invalid request (-32600) quoting nothing
    back; before, the SDK's -32602 dumped the body, the arguments' values included."""
    _, alice = await make_user(database, username="alice")
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=10) as http:
        reply = await http.post("/mcp", content=json.dumps(body), headers={**MCP_HEADERS, **alice})
    assert "hunter2" not in reply.text, reply.text
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["code"] == -32600, reply.text
    assert "not a JSON-RPC 2.0 message" in reply.json()["error"]["message"]
