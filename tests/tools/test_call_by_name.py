"""``POST /api/v1/tools/by-name/{name}/call``: which tool a name (and ``?server=``) picks
when several share it, and an unknown name not echoed in full."""

from __future__ import annotations

import unicodedata
import uuid

import httpx
import pytest

from roost.db.engine import Database
from roost.tools.models import McpServer, Tool
from tests.support.identity import make_user


async def add_server_tool(database: Database, owner: uuid.UUID | None, server: str,
                          tool: str) -> uuid.UUID:
    """A streamable-HTTP server row and one discovered tool (its id), as a sync stores them."""
    async with database.transaction() as s:
        srv = McpServer(user_id=owner, name=server, transport="streamable_http",
                        url="http://127.0.0.1:9/mcp")
        s.add(srv)
        await s.flush()
        row = Tool(user_id=owner, mcp_server_id=srv.id, kind="mcp", name=tool,
                   input_schema={"type": "object"})
        s.add(row)
        await s.flush()
        return row.id


async def test_server_picks_the_callers_own_server_over_a_global_one_of_its_name(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """Server names are unique per owner only: with ?server=, the caller's own server's
    tool is called, not a 409 telling to pass ?server= (nothing listens on port 9: the
    call itself fails, on the own tool)."""
    alice_id, alice = await make_user(database, username="alice")
    await add_server_tool(database, None, "files", "read")
    own = await add_server_tool(database, alice_id, "files", "read")
    reply = await client.post("/api/v1/tools/by-name/read/call", params={"server": "files"},
                              headers=alice, json={"arguments": {}})
    assert reply.status_code == 502 and reply.json()["tool_run_id"], reply.text
    runs = await client.get("/api/v1/tool-runs", headers=alice)
    assert [r["tool_id"] for r in runs.json()["items"]] == [str(own)], runs.text


async def test_several_servers_offering_a_name_need_server(
    client: httpx.AsyncClient, database: Database,
) -> None:
    alice_id, alice = await make_user(database, username="alice")
    await add_server_tool(database, None, "files", "read")
    await add_server_tool(database, alice_id, "disk", "read")
    reply = await client.post("/api/v1/tools/by-name/read/call", headers=alice,
                              json={"arguments": {}})
    assert reply.status_code == 409 and "?server=" in reply.text, reply.text


@pytest.mark.parametrize("server", ["", "   ", "\u200b"], ids=["empty", "spaces", "zero-width"])
async def test_an_empty_server_is_a_422_not_an_unknown_tool(
    client: httpx.AsyncClient, database: Database, server: str,
) -> None:
    """``?server=`` empty, blank or a pasted zero-width space names no server (no server's
    name can be so): a 422 naming the parameter.  It answered 404 "no tool named 'read'
    on server '   '" for a tool the caller has."""
    alice_id, alice = await make_user(database, username="alice")
    await add_server_tool(database, alice_id, "files", "read")
    reply = await client.post("/api/v1/tools/by-name/read/call", params={"server": server},
                              headers=alice, json={"arguments": {}})
    assert reply.status_code == 422 and "server" in reply.text, reply.text


async def test_a_builtin_stays_callable_by_name_when_a_server_offers_its_name(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """?server= cannot name a built-in, so without it the built-in wins."""
    alice_id, alice = await make_user(database, username="alice")
    await add_server_tool(database, alice_id, "clock", "current_time")
    await add_server_tool(database, None, "time", "current_time")
    reply = await client.post("/api/v1/tools/by-name/current_time/call", headers=alice,
                              json={"arguments": {"timezone": "UTC"}})
    assert reply.status_code == 200, reply.text
    assert reply.json()["tool_name"] == "current_time" and reply.json()["status"] == "success"


async def test_an_unknown_name_is_not_echoed_in_full(
    client: httpx.AsyncClient, database: Database,
) -> None:
    _, alice = await make_user(database, username="alice")
    reply = await client.post(f"/api/v1/tools/by-name/{'y' * 5000}/call", headers=alice,
                              json={"arguments": {}})
    assert reply.status_code == 404, reply.text
    assert reply.json()["detail"] == f"no tool named '{'y' * 100}...'", reply.text[:300]


async def test_a_name_typed_decomposed_finds_the_composed_tool(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A tool listed as ``café`` called (and filtered) by its name typed decomposed (``e`` +
    U+0301, as macOS keyboards send it) is that tool: the call reaches it (its server is
    down here: a 502 with a run recorded), where it was a 404 "no tool named 'café'"
    reading exactly like the name listed; its runs are found by that name too."""
    alice_id, alice = await make_user(database, username="alice")
    tool_id = await add_server_tool(database, alice_id, "files",
                                    unicodedata.normalize("NFC", "café"))
    reply = await client.post(
        "/api/v1/tools/by-name/" + unicodedata.normalize("NFD", "café") + "/call",
        headers=alice, json={"arguments": {}})
    assert reply.status_code == 502 and reply.json().get("tool_run_id"), reply.text
    runs = await client.get("/api/v1/tool-runs", headers=alice)
    assert [r["tool_id"] for r in runs.json()["items"]] == [str(tool_id)], runs.text
    listed = await client.get("/api/v1/tools", headers=alice,
                              params={"name": unicodedata.normalize("NFD", "café")})
    assert [i["id"] for i in listed.json()["items"]] == [str(tool_id)], listed.text
    # Its runs are listed by the name typed so too (an empty page before).
    runs = await client.get("/api/v1/tool-runs", headers=alice,
                            params={"tool_name": unicodedata.normalize("NFD", "café")})
    assert [r["tool_id"] for r in runs.json()["items"]] == [str(tool_id)], runs.text
