"""What /mcp's tools/list offers: only tools a direct call can run (no server needing a
persona's secret), agents never shadowed by an MCP server's tool, pages of
``PAGE_SIZE`` with MCP's cursor, an unknown tool's name not echoed in full, and schemas as
the protocol lists them (one server's odd schema never fails the whole list)."""

from __future__ import annotations

import uuid
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from mcp import types
from mcp.shared.exceptions import MCPError
from sqlalchemy import func, select, update

from roost.config import Settings
from roost.db.engine import Database
from roost.mcpserver import routes as mcp_routes
from roost.tools.models import McpServer, Tool, ToolRun
from tests.agents.api import create_agent
from tests.support.identity import make_user
from tests.support.mcp_client import mcp_session
from tests.support.server import in_process


@pytest.fixture
def test_settings(tmp_path: Path) -> Settings:
    """Loopback MCP servers allowed (registration only: no test here reaches one)."""
    return Settings(data_dir=tmp_path / "data", log_json=True, max_request_bytes=64 * 1024,
                    tools_allowed_hosts="127.0.0.1", tools_call_timeout_s=5,
                    knowledge_embedding_provider="hash")


async def add_server_tools(database: Database, owner: uuid.UUID | None, server: str,
                           *tools: str) -> uuid.UUID:
    """A streamable-HTTP server row and its discovered tools, as a sync would store them."""
    async with database.transaction() as s:
        srv = McpServer(user_id=owner, name=server, transport="streamable_http",
                        url="http://127.0.0.1:9/mcp")
        s.add(srv)
        await s.flush()
        s.add_all(Tool(user_id=owner, mcp_server_id=srv.id, kind="mcp", name=tool,
                       input_schema={"type": "object"}) for tool in tools)
        return srv.id


async def test_tools_of_a_server_referencing_a_secret_are_not_listed(
    app: FastAPI, database: Database,
) -> None:
    """Such a server's tools run only inside an agent run of the persona holding the
    secret; a direct call always fails, so /mcp does not list them (every tool listed can
    be called), and a call by their name is an unknown tool that records no run."""
    alice_id, alice = await make_user(database, username="alice")
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        created = await http.post("/api/v1/mcp-servers", headers=alice, json={
            "name": "gh", "transport": "streamable_http", "url": "http://127.0.0.1:9/mcp",
            "headers": {"Authorization": "Bearer ${secret:tok}"}})
        assert created.status_code == 201, created.text
        async with database.transaction() as s:  # what a sync of the server would add
            s.add(Tool(user_id=alice_id, mcp_server_id=uuid.UUID(created.json()["id"]),
                       kind="mcp", name="issues", input_schema={"type": "object"}))
        await add_server_tools(database, alice_id, "plain", "issues")
        async with mcp_session(f"{base}/mcp", alice) as session:
            names = {t.name for t in (await session.list_tools()).tools}
            result = await session.call_tool("gh__issues", {})
    assert "plain__issues" in names and "gh__issues" not in names, names
    assert result.is_error and "unknown tool" in result.content[0].text  # type: ignore[union-attr]
    async with database.transaction() as s:
        assert await s.scalar(select(func.count()).select_from(ToolRun)) == 0


async def test_an_agent_tool_is_not_shadowed_by_a_global_mcp_server_named_agent(
    app: FastAPI, client: httpx.AsyncClient, database: Database,
) -> None:
    """A user's agent stays offered as agent__<slug>, even when an administrator registers
    a global MCP server called 'agent': its tool takes mcp_ before its name."""
    _, alice = await make_user(database, username="alice")
    await create_agent(client, alice, name="Helper", slug="helper")
    await add_server_tools(database, None, "agent", "helper")
    async with in_process(app) as base, mcp_session(f"{base}/mcp", alice) as session:
        listed = [(t.name, t.title) for t in (await session.list_tools()).tools]
    assert ("agent__helper", "Helper") in listed, listed
    assert ("mcp_agent__helper", None) in listed, listed


async def test_tools_list_comes_in_pages_with_a_cursor(
    app: FastAPI, database: Database, monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Every tool once over the pages; a malformed cursor is invalid params."""
    monkeypatch.setattr(mcp_routes, "PAGE_SIZE", 3)
    alice_id, alice = await make_user(database, username="alice")
    await add_server_tools(database, alice_id, "many", *(f"t{i}" for i in range(7)))
    async with in_process(app) as base, mcp_session(f"{base}/mcp", alice) as session:
        names: list[str] = []
        cursor: str | None = None
        pages = 0
        while True:
            page = await session.list_tools(params=types.PaginatedRequestParams(cursor=cursor))
            assert len(page.tools) <= 3
            names += [t.name for t in page.tools]
            pages += 1
            cursor = page.next_cursor
            if cursor is None:
                break
        for bad in ("-1", "abc", "9" * 40):
            with pytest.raises(MCPError) as refused:
                await session.list_tools(params=types.PaginatedRequestParams(cursor=bad))
            assert refused.value.error.code == types.INVALID_PARAMS
    assert len(names) == len(set(names)) and pages == -(-len(names) // 3)
    assert {f"many__t{i}" for i in range(7)} <= set(names) and "whoami" in names


async def test_an_unknown_tool_name_is_not_echoed_in_full(
    app: FastAPI, database: Database,
) -> None:
    _, alice = await make_user(database, username="alice")
    async with in_process(app) as base, mcp_session(f"{base}/mcp", alice) as session:
        result = await session.call_tool("x" * 20_000, {})
    text = result.content[0].text  # type: ignore[union-attr]
    assert result.is_error and text == f"unknown tool: {'x' * 100}...", text[:300]


async def test_an_administrators_slugs_are_not_every_users_private_agents(
    app: FastAPI, client: httpx.AsyncClient, database: Database,
) -> None:
    """An administrator may see and manage any agent by id, but /mcp's tool list and the
    slugs of ``agent:<slug>`` are what a slug names for anyone: their own agents, their
    personas', public ones. It listed every user's private agents as agent__<slug> and
    ran a stranger's private agent by its slug."""
    _, bob = await make_user(database, username="bob")
    private = await create_agent(client, bob, name="Diary", slug="diary")
    await create_agent(client, bob, name="Guide", slug="guide", is_public=True)
    _, root = await make_user(database, admin=True, username="root2")
    async with in_process(app) as base:
        async with mcp_session(f"{base}/mcp", root) as session:
            names = {t.name for t in (await session.list_tools()).tools}
        async with httpx.AsyncClient(base_url=base, timeout=30) as http:
            by_slug = await http.post("/v1/chat/completions", headers=root, json={
                "model": "agent:diary", "messages": [{"role": "user", "content": "hi"}]})
            by_id = await http.get(f"/api/v1/agents/{private['id']}", headers=root)
    assert "agent__guide" in names and "agent__diary" not in names, names
    assert by_slug.status_code == 404, by_slug.text
    assert by_slug.json()["error"]["code"] == "model_not_found", by_slug.text
    assert by_id.status_code == 200, by_id.text  # still the administrator's to manage


async def test_a_tool_gone_from_its_server_keeps_its_name_from_another_servers_tool(
    app: FastAPI, database: Database,
) -> None:
    """Alice's server ``gh`` offers ``issues`` as ``gh__issues``; a global server ``gh``
    added later has ``gh__issues_2``.  When alice's tool goes (her server stopped listing
    it) the global one keeps ``_2``: her client still calling ``gh__issues`` gets an
    unknown tool, not her arguments sent to the other server."""
    alice_id, alice = await make_user(database, username="alice")
    await add_server_tools(database, alice_id, "gh", "issues")
    await add_server_tools(database, None, "gh", "issues")
    async with in_process(app) as base:
        async with mcp_session(f"{base}/mcp", alice) as session:
            before = {t.name: t.description for t in (await session.list_tools()).tools}
        assert "gh__issues" in before and "gh__issues_2" in before, before
        async with database.transaction() as s:  # what a sync that no longer finds it does
            await s.execute(update(Tool).where(Tool.user_id == alice_id, Tool.name == "issues")
                            .values(available=False))
        async with mcp_session(f"{base}/mcp", alice) as session:
            after = {t.name for t in (await session.list_tools()).tools}
            called = await session.call_tool("gh__issues", {"title": "secret plans"})
    assert "gh__issues" not in after and "gh__issues_2" in after, after
    assert called.is_error and "unknown tool" in called.content[0].text  # type: ignore[union-attr]
    async with database.transaction() as s:
        assert await s.scalar(select(func.count()).select_from(ToolRun)) == 0


async def test_a_tool_s_schema_that_is_not_an_object_s_never_fails_the_whole_list(
    app: FastAPI, database: Database,
) -> None:
    """A global server's tools advertise schemas MCP 2026-07-28 allows and the protocol /mcp
    speaks does not list (an array output, an input without a type, an array input): the
    SDK refused the whole tools/list answer, every user's, whoami included.  Now the
    untyped input is listed as an object's, the array output left out, and the tool
    whose arguments are an array not listed."""
    server = await add_server_tools(database, None, "lists")
    async with database.transaction() as s:
        s.add_all([
            Tool(user_id=None, mcp_server_id=server, kind="mcp", name="tags",
                 input_schema={"type": "object"},
                 output_schema={"type": "array", "items": {"type": "string"}}),
            Tool(user_id=None, mcp_server_id=server, kind="mcp", name="find",
                 input_schema={"properties": {"q": {"type": "string"}}}),
            Tool(user_id=None, mcp_server_id=server, kind="mcp", name="many",
                 input_schema={"type": "array"})])
    _, alice = await make_user(database, username="alice")
    async with in_process(app) as base, mcp_session(f"{base}/mcp", alice) as session:
        listed = {t.name: t for t in (await session.list_tools()).tools}
    assert "whoami" in listed and "lists__many" not in listed, sorted(listed)
    assert listed["lists__tags"].output_schema is None
    assert listed["lists__find"].input_schema == {
        "type": "object", "properties": {"q": {"type": "string"}}}
