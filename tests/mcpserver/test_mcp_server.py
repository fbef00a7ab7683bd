"""Roost as an MCP server (issue 12, item 5): the official SDK's client against /mcp.

Two users, each with documents: each sees only their own search results (row-level
security, as through the REST API) and a tools list; a missing or invalid key is a 401
before any MCP transport exists; rejected requests and finished sessions leave nothing
behind (no session state, no tasks, bounded memory).
"""

from __future__ import annotations

import asyncio
import gc
import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from fastapi import FastAPI

from roost.app import create_app
from roost.config import Settings
from roost.db.engine import Database
from roost.keyfiles import KeyMaterial
from roost.knowledge.models import Document, DocumentChunk
from tests.agents.api import create_agent, create_persona
from tests.agents.conftest import make_agent
from tests.support.identity import join_persona, make_user
from tests.support.mcp_client import mcp_session
from tests.support.pg import PgTestServer
from tests.support.server import RunningServer, in_process, roost_server

INITIALIZE = {
    "jsonrpc": "2.0", "id": 1, "method": "initialize",
    "params": {"protocolVersion": "2025-06-18", "capabilities": {},
               "clientInfo": {"name": "probe", "version": "0"}},
}
MCP_HEADERS = {"Accept": "application/json, text/event-stream", "Content-Type": "application/json"}


async def add_document(database: Database, user_id: uuid.UUID, name: str, texts: list[str]) -> None:
    async with database.transaction() as s:
        doc = Document(user_id=user_id, name=name, source="file", path_hash=uuid.uuid4().hex,
                       status="ready", collection="notes")
        s.add(doc)
        await s.flush()
        for i, content in enumerate(texts):
            s.add(DocumentChunk(document_id=doc.id, user_id=user_id, chunk_index=i, content=content,
                                collection="notes", embedding=[1.0] + [0.0] * 383,
                                embedding_model="all-MiniLM-L6-v2", embedding_dim=384))


@contextmanager
def serve(pg_server: PgTestServer, db_name: str, tmp_path: Path,
          test_keys: KeyMaterial) -> Iterator[RunningServer]:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "data"), "ROOST_ADMIN_TOKEN": test_keys.admin_token,
           "ROOST_SECRET_KEY": test_keys.secret_key,
           "ROOST_MESSAGE_KEYS": ",".join(test_keys.message_keys),
           "ROOST_LLM_LOCAL_MODEL": "false", "ROOST_LOG_LEVEL": "warning"}
    with roost_server(env) as server:
        yield server


def structured(result: Any) -> dict[str, Any]:
    assert not result.is_error, result.content
    data = result.structured_content
    assert data == json.loads(result.content[0].text)
    return dict(data)


async def test_each_user_sees_only_their_own_documents_and_tools(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
    test_keys: KeyMaterial,
) -> None:
    alice_id, alice = await make_user(database, username="alice")
    bob_id, bob = await make_user(database, username="bob")
    await add_document(database, alice_id, "alice.md", ["the heron nests by the river",
                                                         "alice keeps a heron diary"])
    await add_document(database, bob_id, "bob.md", ["a heron stole bob's fish",
                                                     "bob counts heron feathers daily"])
    with serve(pg_server, db_name, tmp_path, test_keys) as server:
        url = f"{server.base_url}/mcp"
        for user_id, headers, own in ((alice_id, alice, "alice.md"), (bob_id, bob, "bob.md")):
            async with mcp_session(url, headers) as session:
                names = sorted(t.name for t in (await session.list_tools()).tools)
                assert {"knowledge_search", "whoami"} <= set(names)
                me = structured(await session.call_tool("whoami", {}))
                assert me["user_id"] == str(user_id) and me["credential"] == "api_key"
                found = structured(await session.call_tool(
                    "knowledge_search", {"query": "heron", "k": 10, "mode": "text",
                                         "collection": "notes"}))
                assert found["mode"] == "text"
                assert len(found["results"]) == 2
                assert {hit["document"]["name"] for hit in found["results"]} == {own}
                # Another collection: nothing, and bad arguments are an error result.
                none = structured(await session.call_tool(
                    "knowledge_search", {"query": "heron", "mode": "text", "collection": "other"}))
                assert none["results"] == []
                bad = await session.call_tool("knowledge_search", {"query": "", "mode": "text"})
                assert bad.is_error and "query" in bad.content[0].text
                unknown = await session.call_tool("no_such_tool", {})
                assert unknown.is_error
        # The REST API agrees: same resolver, same scope.
        async with httpx.AsyncClient(timeout=10) as http:
            rest = await http.post(f"{server.base_url}/api/v1/knowledge/search", headers=alice,
                                   json={"query": "heron", "mode": "text"})
        assert {h["document"]["name"] for h in rest.json()["results"]} == {"alice.md"}
    assert "Traceback" not in server.output, server.output[-4000:]


async def test_missing_or_invalid_keys_are_refused_before_mcp(
    database: Database, pg_server: PgTestServer, db_name: str, tmp_path: Path,
    test_keys: KeyMaterial,
) -> None:
    _, alice = await make_user(database, username="alice")
    with serve(pg_server, db_name, tmp_path, test_keys) as server:
        url = f"{server.base_url}/mcp"
        refused = [
            {},
            {"Authorization": "Bearer rst_not_a_real_key_0123456789abcdef"},
            {"Authorization": "Basic YWxpY2U6cGFzc3dvcmQ="},
            {"Authorization": "Bearer not.a.jwt"},
        ]
        async with httpx.AsyncClient(timeout=10) as http:
            for headers in refused:
                reply = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **headers})
                assert reply.status_code == 401, (headers, reply.text)
                assert reply.headers["content-type"] == "application/problem+json"
                assert reply.headers["www-authenticate"] == "Bearer"
                assert "mcp-session-id" not in reply.headers
            # The operator token is no user: no documents of its own to offer.
            operator = {"Authorization": f"Bearer {test_keys.admin_token}"}
            reply = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **operator})
            assert reply.status_code == 403
            # A valid key gets an answer; stateless, so no session id to keep.
            ok = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **alice})
            assert ok.status_code == 200, ok.text
            assert ok.json()["result"]["serverInfo"]["name"] == "roost"
            assert "mcp-session-id" not in ok.headers
            # Not in the OpenAPI document: MCP is JSON-RPC, not Roost's REST surface.
            assert "/mcp" not in (await http.get(f"{server.base_url}/openapi.json")).json()["paths"]
        with pytest.raises(Exception):  # noqa: B017 (the SDK's error type varies by era)
            async with mcp_session(url, {"Authorization": "Bearer rst_wrong_key_000000000000"}):
                pass
    assert "Traceback" not in server.output, server.output[-4000:]


async def test_rejected_requests_and_closed_sessions_leave_nothing_behind(
    database: Database, test_settings: Settings, test_keys: KeyMaterial,
) -> None:
    _, alice = await make_user(database, username="alice")
    app = create_app(test_settings, database=database, keys=test_keys, configure_logs=False)
    process = psutil.Process()

    async def sessions(url: str, n: int) -> None:
        for _ in range(n):
            async with mcp_session(url, alice) as session:
                await session.call_tool("whoami", {})
                await session.call_tool("knowledge_search", {"query": "x", "mode": "text"})

    async def rejected(url: str, n: int) -> None:
        async with httpx.AsyncClient(timeout=10) as http:
            for i in range(n):
                bad = {} if i % 2 else {"Authorization": f"Bearer rst_bogus_{i:032d}"}
                reply = await http.post(url, json=INITIALIZE, headers={**MCP_HEADERS, **bad})
                assert reply.status_code == 401

    async with in_process(app) as base:
        url = f"{base}/mcp"
        manager = app.state.mcp.manager
        await sessions(url, 10)  # warm up: imports, pools, caches
        await rejected(url, 20)
        await asyncio.sleep(0.1)
        gc.collect()
        tasks_before = asyncio.all_tasks()
        rss_before = process.memory_info().rss

        await rejected(url, 200)
        await sessions(url, 50)
        # A DELETE of a session the server never made is answered, and changes nothing.
        async with httpx.AsyncClient(timeout=10) as http:
            gone = await http.delete(url, headers={**alice, "mcp-session-id": uuid.uuid4().hex})
            assert gone.status_code < 500

        # A leak stays; a connection's task that is still winding down (a loaded machine)
        # goes within moments.
        for _ in range(100):
            await asyncio.sleep(0.05)
            if len(asyncio.all_tasks()) <= len(tasks_before):
                break
        gc.collect()
        assert manager.stateless
        assert manager._server_instances == {}  # the SDK's session map
        assert manager._session_owners == {}
        new_tasks = asyncio.all_tasks() - tasks_before
        assert len(asyncio.all_tasks()) <= len(tasks_before), [
            f"{task.get_name()}: {task.get_coro()!r}" for task in new_tasks]
        grown = process.memory_info().rss - rss_before
        # 250 leaked sessions at the SDK issue's ~22 KiB each would be ~5.5 MiB.
        assert grown < 4 * 1024 * 1024, f"RSS grew by {grown / 1024:.0f} KiB"


async def test_listed_tools_are_callable_at_mcp(app: FastAPI, database: Database) -> None:
    """Every tool tools/list offers can be called at /mcp: none answers "not available here"."""
    _, alice = await make_user(database, username="alice")
    calls_to_try = {
        "tasks_list": {}, "task_add": {"title": "buy milk"},
        "memory_search": {"query": "herons"}, "memory_add": {"content": "I like herons"},
        "calendar_list_events": {"start": "2027-03-01T00:00:00Z", "end": "2027-03-02T00:00:00Z"},
    }
    refused: dict[str, str] = {}
    async with in_process(app) as base, mcp_session(f"{base}/mcp", alice) as session:
        listed = {t.name for t in (await session.list_tools()).tools}
        for name, arguments in calls_to_try.items():
            if name not in listed:
                continue
            result = await session.call_tool(name, arguments)
            text = result.content[0].text if result.content else ""  # type: ignore[union-attr]
            if result.is_error and "not available here" in text:
                refused[name] = text
    assert refused == {}, refused
    assert "current_time" in listed  # the built-ins the tools domain runs are still offered


async def test_mcp_requests_counted_under_their_route(app: FastAPI, database: Database) -> None:
    """/metrics counts /mcp requests under route "/mcp", not "unmatched" (meant for no route)."""
    alice_id, alice = await make_user(database, username="alice")
    async with in_process(app) as base, httpx.AsyncClient(base_url=base, timeout=30) as http:
        for path in ("/mcp", "/mcp/"):  # with a slash: served the same, not a 307
            reply = await http.post(path, headers={**MCP_HEADERS, **alice}, json={
                "jsonrpc": "2.0", "id": 1, "method": "tools/call",
                "params": {"name": "whoami", "arguments": {}}})
            assert reply.status_code == 200, (path, reply.status_code, reply.text)
            assert str(alice_id) in reply.text, reply.text
        metrics = (await http.get("/metrics")).text
    lines = [ln for ln in metrics.splitlines()
             if ln.startswith("roost_http_requests_total{") and 'method="POST"' in ln]
    assert any('route="/mcp"' in ln for ln in lines), lines
    assert not any('route="/mcp/"' in ln for ln in lines), lines


async def test_an_agent_tool_names_the_persona_s_agent_before_a_stranger_s_public_one(
    app: FastAPI, client: httpx.AsyncClient, database: Database,
) -> None:
    """agent__<slug> resolves a slug as /v1 does: your own agent, then your personas' (public
    too or not), then a public one, however old the stranger's public agent is."""
    stranger, _ = await make_user(database, username="stranger")
    _, owner = await make_user(database, username="owner")
    member_id, member = await make_user(database, username="member")
    await make_agent(database, stranger, name="Squatter", slug="team-bot", is_public=True)
    persona = await create_persona(client, owner)
    await create_agent(client, owner, name="Ours", slug="team-bot", persona_id=persona["id"],
                       is_public=True)
    await join_persona(client, owner, persona["id"], str(member_id), member, role="viewer")
    async with in_process(app) as base, mcp_session(f"{base}/mcp", member) as session:
        titles = {t.name: t.title for t in (await session.list_tools()).tools}
    assert titles.get("agent__team-bot") == "Ours", titles
