"""Roost's MCP client against hostile streamable-HTTP MCP servers on loopback (a user's
servers: the tools tests allow 127.0.0.1) that speak JSON-RPC but list or answer what
Roost must not take as it is: what such a server lists or answers ends in a clear answer
with the sync's or check's health recorded, within Roost's caps on what one server may
store; calls reach the tool that was listed; a result's check against its output schema
has one bounded time budget."""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from roost.inputs import json_size
from roost.knowledge.config import KnowledgeConfig
from roost.tools import schemaregex
from roost.tools.mcpclient import MAX_TOOLS
from roost.tools.models import MAX_DESCRIPTION_CHARS, MAX_SCHEMA_BYTES
from roost.tools.search import embed_descriptions
from tests.support.identity import make_user
from tests.tools.test_tools_api import tool_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

INIT: dict[str, Any] = {"protocolVersion": "2025-06-18", "capabilities": {"tools": {}},
                        "serverInfo": {"name": "hostile", "version": "1"}}


class Plans:
    """What each path answers: a dict with keys init, tools (or pages), result, error."""

    def __init__(self) -> None:
        self.plans: dict[str, dict[str, Any]] = {}
        self.calls: dict[str, int] = {}
        self.names: list[str] = []
        self.port = 0
        # Set once a tools/call came in; the answer waits for ``release`` (if the plan holds).
        self.called = threading.Event()
        self.release = threading.Event()

    def url(self, path: str, plan: dict[str, Any]) -> str:
        self.plans[path] = plan
        return f"http://127.0.0.1:{self.port}{path}"


def _handler(plans: Plans) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        protocol_version = "HTTP/1.1"

        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, status: int, body: bytes = b"",
                  ctype: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_GET(self) -> None:
            self._send(405)

        def do_DELETE(self) -> None:
            self._send(200)

        def do_POST(self) -> None:
            plan = plans.plans.get(self.path, {})
            raw = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            msg = json.loads(raw)
            mid, method = msg.get("id"), msg.get("method")
            if mid is None:
                self._send(202)
                return
            result: Any
            if method == "initialize":
                result = plan.get("init", INIT)
            elif method == "tools/list":
                pages = plan.get("pages")
                if pages is not None:
                    cursor = (msg.get("params") or {}).get("cursor")
                    i = int(cursor) if cursor else 0
                    result = {"tools": pages[i]}
                    if i + 1 < len(pages):
                        result["nextCursor"] = str(i + 1)
                else:
                    result = {"tools": plan.get("tools", [])}
            elif method == "tools/call":
                plans.calls[self.path] = plans.calls.get(self.path, 0) + 1
                plans.names.append(str((msg.get("params") or {}).get("name")))
                plans.called.set()
                if plan.get("hold"):
                    plans.release.wait(timeout=60)
                if "error" in plan:
                    body = {"jsonrpc": "2.0", "id": mid, "error": plan["error"]}
                    self._send(200, json.dumps(body).encode())
                    return
                result = plan.get("result", {"content": [{"type": "text", "text": "ok"}]})
            else:
                result = {}
            raw_body = plan.get("raw", {}).get(method)
            if raw_body is not None:
                self._send(200, raw_body.replace(b"$ID", json.dumps(mid).encode()))
                return
            self._send(200, json.dumps({"jsonrpc": "2.0", "id": mid, "result": result},
                                       ensure_ascii=plan.get("ascii", True)).encode())

    return Handler


@pytest.fixture
def plans() -> Iterator[Plans]:
    p = Plans()
    server = ThreadingHTTPServer(("127.0.0.1", 0), _handler(p))
    p.port = server.server_address[1]
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield p
    finally:
        p.release.set()
        server.shutdown()
        server.server_close()


def tool(name: str, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": "d", "inputSchema": {"type": "object"}, **extra}


async def _server(client: httpx.AsyncClient, headers: dict[str, str], url: str,
                  name: str = "h") -> str:
    created = await client.post("/api/v1/mcp-servers", headers=headers, json={
        "name": name, "transport": "streamable_http", "url": url})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _sync(client: httpx.AsyncClient, headers: dict[str, str], sid: str) -> httpx.Response:
    return await client.post(f"/api/v1/mcp-servers/{sid}/sync", headers=headers)


async def _server_row(client: httpx.AsyncClient, headers: dict[str, str],
                      sid: str) -> dict[str, Any]:
    answer = await client.get(f"/api/v1/mcp-servers/{sid}", headers=headers)
    assert answer.status_code == 200, answer.text
    server: dict[str, Any] = answer.json()
    return server


async def _tools(client: httpx.AsyncClient, headers: dict[str, str],
                 sid: str) -> dict[str, dict[str, Any]]:
    listed = await client.get("/api/v1/tools", params={"server_id": sid}, headers=headers)
    assert listed.status_code == 200, listed.text
    return {item["name"]: item for item in listed.json()["items"]}


@pytest.mark.parametrize("init", [
    {**INIT, "serverInfo": {"name": "a\u0000b", "version": "1"}},
    {**INIT, "capabilities": {"tools": {}, "experimental": {"k\u0000": {}}}},
], ids=["nul-in-server-info", "nul-in-capabilities"])
async def test_an_initialize_answer_that_cannot_be_stored_makes_the_server_unhealthy(
    client: httpx.AsyncClient, database: Database, plans: Plans, init: dict[str, Any],
) -> None:
    """serverInfo or capabilities holding a NUL (no jsonb holds one): the check answers 200
    and the sync 502, both recording the server unhealthy, saying why; not a 400 blaming a
    request that sent nothing, with the health lost."""
    _, alice = await make_user(database)
    sid = await _server(client, alice, plans.url("/a", {"init": init, "tools": [tool("a")]}))
    checked = await client.post(f"/api/v1/mcp-servers/{sid}/check", headers=alice)
    assert checked.status_code == 200, checked.text[:300]
    assert checked.json()["health_status"] == "unhealthy"
    assert "initialize answer cannot be stored" in checked.json()["health_error"]
    synced = await _sync(client, alice, sid)
    assert synced.status_code == 502, synced.text[:300]
    assert "initialize answer cannot be stored" in synced.json()["detail"]
    server = await _server_row(client, alice, sid)
    assert server["health_status"] == "unhealthy" and server["last_health_check_at"], server
    assert await _tools(client, alice, sid) == {}


MB = 1024 * 1024


async def test_a_huge_server_info_is_stored_cut_to_its_known_strings(
    client: httpx.AsyncClient, database: Database, plans: Plans,
) -> None:
    """``serverInfo`` with a 4 MB name and keys of the server's own: the check is healthy,
    and what is stored (and returned by every GET and list of servers) is its name, title
    and version cut at 256 characters, as a tool's title is; not the 4 MB."""
    _, alice = await make_user(database)
    info = {"name": "n" * (4 * MB), "version": "1", "title": "t" * 300,
            "icons": [{"src": "https://x.example/i.png"}] * 1000, "extra": "e" * MB}
    sid = await _server(client, alice, plans.url("/a", {"init": {**INIT, "serverInfo": info},
                                                        "tools": [tool("a")]}))
    checked = await client.post(f"/api/v1/mcp-servers/{sid}/check", headers=alice)
    assert checked.status_code == 200, checked.text[:300]
    assert checked.json()["health_status"] == "healthy", checked.json()["health_error"]
    assert checked.json()["server_info"] == {"name": "n" * 256, "title": "t" * 256,
                                             "version": "1"}
    listed = await client.get("/api/v1/mcp-servers", headers=alice)
    assert listed.status_code == 200 and len(listed.content) < 64 * 1024, len(listed.content)


async def test_initialize_capabilities_over_10_kb_make_the_server_unhealthy_not_stored(
    client: httpx.AsyncClient, database: Database, plans: Plans,
) -> None:
    """Capabilities of 1 MB (``experimental`` holds anything): the check answers 200
    recording the server unhealthy ("its initialize answer is too large"), the sync 502;
    nothing of them is stored or returned with the list of servers."""
    _, alice = await make_user(database)
    init = {**INIT, "capabilities": {"tools": {}, "experimental": {"x": {"blob": "b" * MB}}}}
    sid = await _server(client, alice, plans.url("/a", {"init": init, "tools": [tool("a")]}))
    checked = await client.post(f"/api/v1/mcp-servers/{sid}/check", headers=alice)
    assert checked.status_code == 200, checked.text[:300]
    assert checked.json()["health_status"] == "unhealthy"
    assert "initialize answer is too large" in checked.json()["health_error"]
    assert f"over {MAX_SCHEMA_BYTES}" in checked.json()["health_error"]
    synced = await _sync(client, alice, sid)
    assert synced.status_code == 502, synced.text[:300]
    assert "initialize answer is too large" in synced.json()["detail"]
    listed = await client.get("/api/v1/mcp-servers", headers=alice)
    assert listed.status_code == 200 and len(listed.content) < 64 * 1024, len(listed.content)
    assert await _tools(client, alice, sid) == {}


@pytest.mark.parametrize("url", [" http://127.0.0.1:{port}/a", "http://127.0.0.1:{port}/a ",
                                 "\thttp://127.0.0.1:{port}/a", "\x01http://127.0.0.1:{port}/a"],
                         ids=["leading-space", "trailing-space", "leading-tab", "leading-control"])
async def test_a_server_url_with_spaces_around_it_is_a_422_saying_so(
    client: httpx.AsyncClient, database: Database, plans: Plans, url: str,
) -> None:
    """A URL with a space (or control character) before or after it: a 422 naming that,
    as other URL fields of Roost answer; not the SSRF guard's 403 "URL scheme 'no scheme'
    is not allowed" (the field's parser dropped the space, the guard's did not)."""
    _, alice = await make_user(database)
    created = await client.post("/api/v1/mcp-servers", headers=alice, json={
        "name": "spaced", "transport": "streamable_http", "url": url.format(port=plans.port)})
    assert created.status_code == 422, created.text
    answer = created.json()
    # A space: the service's message; a tab or another control character: every URL
    # field's own (roost.inputs.parsed_url), naming the field.
    assert "leading or trailing spaces" in answer["detail"] or any(
        e["loc"][-1] == "url" and "control character" in e["msg"]
        for e in answer.get("errors", [])), created.text
    listed = await client.get("/api/v1/mcp-servers", headers=alice)
    assert listed.json()["items"] == [], listed.text


async def test_a_tool_title_over_256_characters_is_cut_and_the_tool_synced(
    client: httpx.AsyncClient, database: Database, plans: Plans,
) -> None:
    """A listed title longer than the 256-character column is cut there; the tool and the
    others sync (it used to fail the whole sync with a 400, nothing stored)."""
    _, alice = await make_user(database)
    tools = [tool("a", title="t" * 300), tool("b")]
    sid = await _server(client, alice, plans.url("/a", {"tools": tools}))
    synced = await _sync(client, alice, sid)
    assert synced.status_code == 200, synced.text[:300]
    assert sorted(synced.json()["added"]) == ["a", "b"], synced.json()
    assert (await _tools(client, alice, sid))["a"]["title"] == "t" * 256


async def test_a_tool_name_over_256_characters_is_skipped_so_calls_reach_the_listed_tool(
    client: httpx.AsyncClient, database: Database, plans: Plans,
) -> None:
    """A name longer than 256 characters is skipped (named in ``skipped``), never stored cut:
    the cut name is not the server's (an "unknown tool"), or worse another tool's, which a
    call of the cut one reached.  The tool whose name is that cut is synced and called."""
    _, alice = await make_user(database)
    long_name, cut = "n" * 300, "n" * 256
    sid = await _server(client, alice, plans.url("/a", {"tools": [tool(long_name), tool(cut)]}))
    synced = await _sync(client, alice, sid)
    assert synced.status_code == 200, synced.text[:300]
    assert synced.json()["added"] == [cut], synced.json()
    assert list(synced.json()["skipped"].values()) == ["name longer than 256 characters"]
    tools = await _tools(client, alice, sid)
    assert list(tools) == [cut]
    called = await client.post(f"/api/v1/tools/{tools[cut]['id']}/call", headers=alice,
                               json={"arguments": {}})
    assert called.status_code == 200, called.text[:300]
    assert plans.names == [cut]


async def test_a_failed_call_names_the_server_once(
    client: httpx.AsyncClient, database: Database, plans: Plans,
) -> None:
    """A streamable-HTTP tool whose server answers the call with a JSON-RPC error: the detail
    says "MCP server 'h' failed: ..." once, not wrapped in a second copy of itself."""
    _, alice = await make_user(database)
    url = plans.url("/a", {"tools": [tool("a")],
                           "error": {"code": -32602, "message": "Unknown tool: a"}})
    sid = await _server(client, alice, url)
    assert (await _sync(client, alice, sid)).status_code == 200
    tid = await tool_id(client, alice, sid, "a")
    called = await client.post(f"/api/v1/tools/{tid}/call", headers=alice,
                               json={"arguments": {}})
    assert called.status_code == 502, called.text[:300]
    detail = called.json()["detail"]
    assert detail.count("MCP server 'h' failed") == 1, detail
    assert "Unknown tool: a" in detail


async def test_a_results_check_against_its_output_schema_has_one_time_budget(
    client: httpx.AsyncClient, database: Database, plans: Plans,
) -> None:
    """An output schema with a pattern that backtracks (``^(a|a)*$``) and a result of 100
    strings each matched under the per-match limit: the check of the result (run by the SDK
    on the API's event loop) gets one budget for all its matches, as an arguments' check
    does, and past it the call is a 502 naming the output schema's pattern (each match had
    its own 0.5 s: the loop stood still for seconds, every request waiting).  While the call
    waits for its server, the same app answers other requests."""
    _, alice = await make_user(database)
    schema = {"type": "object", "properties": {"v": {"type": "array", "items": {
        "type": "string", "pattern": "^(a|a)*$"}}}}
    result = {"content": [], "structuredContent": {"v": ["a" * 19 + "!"] * 100}}
    sid = await _server(client, alice, plans.url("/a", {
        "tools": [tool("a", outputSchema=schema)], "result": result, "hold": True}))
    assert (await _sync(client, alice, sid)).status_code == 200
    tid = await tool_id(client, alice, sid, "a")
    call = asyncio.create_task(client.post(f"/api/v1/tools/{tid}/call", headers=alice,
                                           json={"arguments": {}}))
    assert await asyncio.to_thread(plans.called.wait, 60)
    assert (await client.get(f"/api/v1/mcp-servers/{sid}", headers=alice)).status_code == 200
    assert not call.done()
    plans.release.set()
    called = await call
    assert called.status_code == 502, called.text[:300]
    detail = called.json()["detail"]
    assert f"longer than {schemaregex.BUDGET_S} s to check against the tool's output schema" \
        in detail, detail
    assert "^(a|a)*$" in detail and called.json()["tool_run_id"]


async def test_a_server_listing_more_tools_than_the_cap_fails_its_sync_keeping_its_tools(
    client: httpx.AsyncClient, database: Database, plans: Plans,
) -> None:
    """More than ``MAX_TOOLS`` tools (over several pages): the sync is a 502 saying so, the
    server recorded unhealthy, the tools synced before kept as they were; nothing of the
    oversized listing stored."""
    _, alice = await make_user(database)
    url = plans.url("/a", {"tools": [tool("a")]})
    sid = await _server(client, alice, url)
    assert (await _sync(client, alice, sid)).status_code == 200
    many = [tool(f"t{i}") for i in range(MAX_TOOLS + 1)]
    plans.plans["/a"] = {"pages": [many[:400], many[400:800], many[800:]]}
    synced = await _sync(client, alice, sid)
    assert synced.status_code == 502, synced.text[:300]
    assert f"listed more than {MAX_TOOLS} tools" in synced.json()["detail"]
    assert synced.json()["detail"].count("MCP server 'h'") == 1
    server = await _server_row(client, alice, sid)
    assert server["health_status"] == "unhealthy", server
    tools = await _tools(client, alice, sid)
    assert list(tools) == ["a"] and tools["a"]["available"]


async def test_oversized_descriptions_are_cut_and_oversized_schemas_or_annotations_skipped(
    client: httpx.AsyncClient, database: Database, plans: Plans,
) -> None:
    """A description over ``MAX_DESCRIPTION_CHARS`` is cut there; a tool whose output schema
    or annotations are over ``MAX_SCHEMA_BYTES`` (as an input schema) is skipped, named in
    ``skipped``: none of them stored whole (they were, 2 MB each)."""
    _, alice = await make_user(database)
    big = "x" * (MAX_SCHEMA_BYTES + 1)
    tools = [
        tool("long", description="d" * (MAX_DESCRIPTION_CHARS + 5000)),
        tool("out", outputSchema={"type": "object", "description": big}),
        tool("notes", annotations={"title": big}),
        tool("fine", outputSchema={"type": "object"}, annotations={"readOnlyHint": True}),
    ]
    sid = await _server(client, alice, plans.url("/a", {"tools": tools}))
    synced = await _sync(client, alice, sid)
    assert synced.status_code == 200, synced.text[:300]
    assert sorted(synced.json()["added"]) == ["fine", "long"], synced.json()
    assert synced.json()["skipped"] == {
        "out": f"output schema larger than {MAX_SCHEMA_BYTES} bytes",
        "notes": f"annotations larger than {MAX_SCHEMA_BYTES} bytes",
    }
    stored = await _tools(client, alice, sid)
    assert stored["long"]["description"] == "d" * MAX_DESCRIPTION_CHARS
    assert stored["fine"]["annotations"] == {"readOnlyHint": True}


def _schema_of_size(target: int, char: str) -> dict[str, Any]:
    """An object schema whose compact UTF-8 JSON is about ``target`` bytes."""
    schema: dict[str, Any] = {"type": "object", "description": ""}
    schema["description"] = char * ((target - json_size(schema)) // len(char.encode()))
    return schema


@pytest.mark.parametrize(("char", "size"), [("\u00e9", 6000), ("\u65e5", 6000),
                                           ("x", MAX_SCHEMA_BYTES)],
                         ids=["latin-6kb", "cjk-6kb", "ascii-at-the-limit"])
async def test_a_schema_is_measured_as_compact_utf8_json(
    client: httpx.AsyncClient, database: Database, plans: Plans, char: str, size: int,
) -> None:
    """A 6 KB input schema in French or Japanese, or one of exactly ``MAX_SCHEMA_BYTES``,
    is synced: the limit counts compact UTF-8 JSON, as every "N bytes of JSON" in Roost
    (json.dumps' escapes made six bytes of each accented or CJK character)."""
    _, alice = await make_user(database)
    schema = _schema_of_size(size, char)
    assert json_size(schema) <= size <= MAX_SCHEMA_BYTES
    sid = await _server(client, alice, plans.url("/s", {"tools": [tool("a", inputSchema=schema)]}))
    synced = await asyncio.wait_for(_sync(client, alice, sid), 60)
    assert synced.status_code == 200, synced.text[:300]
    assert synced.json()["skipped"] == {}
    assert "a" in await _tools(client, alice, sid)


async def test_a_name_listed_twice_is_its_first_listing_even_when_that_one_is_skipped(
    client: httpx.AsyncClient, database: Database, plans: Plans,
) -> None:
    """``a`` listed first with a schema over the limit, then again with a small one: the
    first listing counts (the server sends a call of ``a`` to it), so ``a`` is skipped,
    for the first listing's reason, and not stored with the second's schema."""
    _, alice = await make_user(database)
    big = {"type": "object", "description": "x" * (MAX_SCHEMA_BYTES + 10)}
    second = {"type": "object", "properties": {"second": {"type": "string"}}}
    sid = await _server(client, alice, plans.url("/d", {"tools": [
        tool("a", inputSchema=big), tool("a", inputSchema=second), tool("b"), tool("b")]}))
    synced = await asyncio.wait_for(_sync(client, alice, sid), 60)
    assert synced.status_code == 200, synced.text[:300]
    assert synced.json()["skipped"] == {
        "a": f"input schema larger than {MAX_SCHEMA_BYTES} bytes", "b": "listed more than once"}
    assert list(await _tools(client, alice, sid)) == ["b"]


async def test_a_tool_listed_without_a_name_is_named_in_skipped(
    client: httpx.AsyncClient, database: Database, plans: Plans,
) -> None:
    """A tool named "" (no call could reach it) is reported in ``skipped`` with the reason,
    as every other listed tool that is not stored is, not dropped without a word."""
    _, alice = await make_user(database)
    sid = await _server(client, alice, plans.url("/e", {"tools": [tool(""), tool("a")]}))
    synced = await asyncio.wait_for(_sync(client, alice, sid), 60)
    assert synced.status_code == 200, synced.text[:300]
    assert list(await _tools(client, alice, sid)) == ["a"]
    assert synced.json()["skipped"] == {"": "no name: no call could reach it"}


async def test_a_tool_whose_name_holds_a_slash_can_be_called_by_name(
    client: httpx.AsyncClient, database: Database, plans: Plans,
) -> None:
    """A tool named ``github/issues`` (MCP does not forbid '/', namespaced names are
    common) is called by name with its slash sent as %2F: the path is decoded before
    routing, and a plain segment made it a 404 "no route"."""
    _, alice = await make_user(database)
    sid = await _server(client, alice, plans.url("/a", {"tools": [tool("github/issues")]}))
    assert (await _sync(client, alice, sid)).status_code == 200
    assert "github/issues" in await _tools(client, alice, sid)
    reply = await client.post("/api/v1/tools/by-name/github%2Fissues/call", headers=alice,
                              json={"arguments": {}})
    assert reply.status_code == 200, reply.text[:300]
    assert plans.names == ["github/issues"]


async def test_search_offers_no_tool_of_a_disabled_server(
    client: httpx.AsyncClient, database: Database, plans: Plans, test_settings: Settings,
) -> None:
    """The search ranks "tools you may call": a disabled server's tools cannot be called
    (409) and /mcp does not list them, so the search does not offer them either (it
    ranked one first: an agent choosing tools by search picked a tool that always fails)."""
    _, alice = await make_user(database)
    created = await client.post("/api/v1/mcp-servers", headers=alice, json={
        "name": "off", "transport": "streamable_http", "enabled": False,
        "url": plans.url("/a", {"tools": [tool("weather_forecast_zeta")]})})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    assert (await _sync(client, alice, sid)).status_code == 200
    tid = (await _tools(client, alice, sid))["weather_forecast_zeta"]["id"]
    called = await client.post(f"/api/v1/tools/{tid}/call", headers=alice, json={"arguments": {}})
    assert called.status_code == 409, called.text[:300]
    await embed_descriptions(database, KnowledgeConfig.from_settings(test_settings).embedder)
    found = await client.get("/api/v1/tools/search", params={"q": "weather_forecast_zeta", "k": 50},
                             headers=alice)
    assert found.status_code == 200, found.text[:300]
    names = [h["tool"]["name"] for h in found.json()["items"]]
    assert "weather_forecast_zeta" not in names, names
