"""What a stdio MCP server lists or answers, and what a caller sends it, that PostgreSQL
cannot store (a NUL: text and jsonb cannot hold U+0000) or that clashes: a call is refused
before the tool runs, a result is a recorded failed run, a listed tool is skipped and
named in ``skipped``; never a 400 blaming the request, with nothing recorded.  An answer
(one line) past ``MAX_MESSAGE_BYTES`` is cut off there, in calls, discovery and checks.
A server that ignores SIGTERM, and what it started, end with its session."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp.client.session import ClientSession
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.tools.mcpclient import MAX_MESSAGE_BYTES, ServerSpec, stdio_transport
from tests.support.identity import make_user
from tests.tools.test_hostile_schemas import deep_schema
from tests.tools.test_stdio_pool import alive
from tests.tools.test_tools_api import tool_id

pytestmark = pytest.mark.asyncio(loop_scope="session")

# A raw JSON-RPC MCP server over stdio.  Its plan (a JSON file named by argv[1]) says what
# it lists and how it answers calls; every tools/call is appended to plan["marker"] first,
# so a test knows whether the tool ran.
HOSTILE = r'''
import json, sys
plan = json.load(open(sys.argv[1]))
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    try:
        msg = json.loads(line)
    except ValueError:
        continue
    method, mid = msg.get("method"), msg.get("id")
    if mid is None:
        continue
    if method == "initialize":
        send({"jsonrpc": "2.0", "id": mid, "result": {"protocolVersion": "2025-06-18",
              "capabilities": {"tools": {}}, "serverInfo": {"name": "hostile", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": mid, "result": {"tools": plan["tools"]}})
    elif method == "tools/call":
        with open(plan["marker"], "a") as marker:
            marker.write("called\n")
        if plan.get("garble"):  # the answer as a line that is not JSON-RPC
            sys.stdout.write("{'id': %d, oops\n" % mid); sys.stdout.flush()
        else:
            send({"jsonrpc": "2.0", "id": mid, "result": plan["result"]})
    else:
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
'''

TEXT_OK: dict[str, Any] = {"content": [{"type": "text", "text": "ok"}]}


def hostile_body(tmp_path: Path, name: str, tools: list[dict[str, Any]],
                 result: dict[str, Any] | None = None, *,
                 garble: bool = False) -> tuple[dict[str, Any], Path]:
    """A global stdio server running :data:`HOSTILE`, and the file its calls are marked in;
    ``garble``: it answers calls with a line that is not JSON-RPC."""
    script = tmp_path / "hostile_mcp.py"
    script.write_text(HOSTILE)
    marker = tmp_path / f"{name}.calls"
    plan_file = tmp_path / f"{name}.json"
    plan_file.write_text(json.dumps({"tools": tools, "result": result or TEXT_OK,
                                     "marker": str(marker), "garble": garble}))
    return {"name": name, "transport": "stdio", "command": sys.executable,
            "args": [str(script), str(plan_file)], "is_global": True}, marker


def tool(name: str, schema: dict[str, Any] | None = None, **extra: Any) -> dict[str, Any]:
    return {"name": name, "description": "d", "inputSchema": schema or {"type": "object"},
            **extra}


async def _register(client: httpx.AsyncClient, headers: dict[str, str],
                    body: dict[str, Any]) -> str:
    created = await client.post("/api/v1/mcp-servers", json=body, headers=headers)
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def _synced_tool(client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any],
                       name: str = "a") -> str:
    sid = await _register(client, headers, body)
    synced = await client.post(f"/api/v1/mcp-servers/{sid}/sync", headers=headers)
    assert synced.status_code == 200, synced.text
    return await tool_id(client, headers, sid, name)


def _calls(marker: Path) -> int:
    return len(marker.read_text().splitlines()) if marker.exists() else 0


@pytest.mark.parametrize("payload", [
    b'{"arguments": {"text": "a\\u0000b"}}',
    b'{"arguments": {"text": "ok", "k\\u0000": 1}}',
    b'{"arguments": {"text": "ok"}, "trace_id": "run-\\u0000"}',
], ids=["nul-in-value", "nul-in-key", "nul-in-trace-id"])
async def test_a_call_that_could_never_be_recorded_is_refused_before_the_tool_runs(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    tmp_path: Path, payload: bytes,
) -> None:
    """A NUL (PostgreSQL cannot store it) in an MCP tool's arguments or the trace id: a 422
    before the tool runs, as for the built-ins, never a tool that ran (side effects done)
    with no ``tool_runs`` row, no audit record and a 400."""
    body, marker = hostile_body(tmp_path, "nulargs", [tool(
        "a", {"type": "object", "properties": {"text": {"type": "string"}}})])
    tid = await _synced_tool(client, admin_headers, body)
    _, alice = await make_user(database)
    called = await client.post(f"/api/v1/tools/{tid}/call", content=payload,
                               headers={**alice, "Content-Type": "application/json"})
    assert (called.status_code, _calls(marker)) == (422, 0), called.text[:300]
    assert called.json()["type"] == "https://roost.dev/problems/validation-error"
    assert (await client.get("/api/v1/tool-runs", headers=alice)).json()["items"] == []


@pytest.mark.parametrize("result", [
    {"content": [{"type": "text", "text": "a\u0000b"}]},
    {"content": [{"type": "text", "text": "ok"}], "structuredContent": {"k\u0000": 1}},
    {"content": [{"type": "text", "text": "bad\u0000thing"}], "isError": True},
], ids=["nul-text", "nul-key", "nul-error"])
async def test_a_result_holding_a_nul_is_a_recorded_failed_run(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    tmp_path: Path, result: dict[str, Any],
) -> None:
    """A server answering a NUL: a 502 carrying ``tool_run_id``, the run recorded with status
    ``error`` and audited (docs: a malformed result is a failed run), not a 400 'bad
    request' with no trace that the tool ran."""
    body, marker = hostile_body(tmp_path, "nulresult", [tool("a")], result)
    tid = await _synced_tool(client, admin_headers, body)
    _, alice = await make_user(database)
    called = await client.post(f"/api/v1/tools/{tid}/call", headers=alice,
                               json={"arguments": {}})
    assert _calls(marker) == 1
    assert called.status_code == 502 and "tool_run_id" in called.json(), called.text[:300]
    assert "cannot be recorded" in called.json()["detail"]
    runs = (await client.get("/api/v1/tool-runs", headers=alice)).json()["items"]
    assert [r["status"] for r in runs] == ["error"], runs
    async with database.transaction() as session:
        audited = await session.scalar(text(
            "SELECT count(*) FROM audit_logs WHERE action = 'tool.call' AND resource_id = :t"
        ), {"t": tid})
    assert audited == 1


# ----------------------------------------------------------- discovery


@pytest.mark.parametrize(("tools", "named"), [
    ([tool("a", description="x\u0000y"), tool("b")], "a"),
    ([tool("a\u0000z"), tool("b")], "a\\x00z"),
    ([tool("a", {"type": "object", "description": "\u0000"}), tool("b")], "a"),
    ([tool("a", title="t\u0000"), tool("b")], "a"),
    ([tool("a", {"type": "object", "not": deep_schema(80)}), tool("b")], "a"),
], ids=["description", "name", "schema", "title", "schema-nested-deeper-than-64"])
async def test_a_listed_tool_that_cannot_be_stored_is_the_servers_fault_not_a_400(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path,
    tools: list[dict[str, Any]], named: str,
) -> None:
    """A server listing a tool with a NUL somewhere (or a schema nested deeper than 64
    levels, which checking would recurse through): that tool skipped and named in
    ``skipped`` (a NUL in its name written \\x00), like an oversized schema, the others
    registered; once a 400 'a value is out of range or malformed for its field', which
    blamed a request that sent nothing, and lost the health check the sync made."""
    body, _ = hostile_body(tmp_path, "nulsync", tools)
    sid = await _register(client, admin_headers, body)
    synced = await client.post(f"/api/v1/mcp-servers/{sid}/sync", headers=admin_headers)
    assert synced.status_code == 200, synced.text[:300]
    assert synced.json()["added"] == ["b"], synced.json()
    assert "cannot be stored" in synced.json()["skipped"][named], synced.json()
    server = (await client.get(f"/api/v1/mcp-servers/{sid}", headers=admin_headers)).json()
    assert server["last_health_check_at"] is not None, server


async def test_a_listing_with_a_name_twice_syncs_once_each(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path,
) -> None:
    """A server listing the same tool name twice: the first registered, the repeat skipped
    and named; once a 409 'the change conflicts with data already stored' for a sync of a
    fresh server.  (Names over 256 characters are skipped, never cut: two of them can no
    longer become one; tests/tools/test_hostile_mcp_listings.py.)"""
    body, _ = hostile_body(tmp_path, "dupsync", [tool("a"), tool("a"), tool("b")])
    sid = await _register(client, admin_headers, body)
    synced = await client.post(f"/api/v1/mcp-servers/{sid}/sync", headers=admin_headers)
    assert synced.status_code == 200, synced.text[:300]
    assert synced.json()["added"] == ["a", "b"], synced.json()
    assert "more than once" in synced.json()["skipped"]["a"], synced.json()


async def test_an_answer_that_is_not_json_rpc_is_a_bad_gateway_naming_it(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    tmp_path: Path, test_settings: Settings,
) -> None:
    """The server answers a call with a line that is not JSON-RPC (the SDK skips it): when
    the call's time runs out the answer is a 502 saying so, not a bare 504 timeout; the
    failed run is recorded."""
    body, marker = hostile_body(tmp_path, "garbled", [tool("a")], garble=True)
    tid = await _synced_tool(client, admin_headers, body)
    _, alice = await make_user(database)
    test_settings.tools_call_timeout_s = 1.0  # read on every call
    called = await client.post(f"/api/v1/tools/{tid}/call", json={"arguments": {}},
                               headers=alice)
    assert (called.status_code, _calls(marker)) == (502, 1), called.text[:300]
    assert "not JSON-RPC" in called.json()["detail"]
    [run] = (await client.get("/api/v1/tool-runs", headers=alice)).json()["items"]
    assert run["status"] == "error" and "not JSON-RPC" in run["error"]


# A stdio MCP server answering ``argv[1]`` (tools/list or tools/call) with one endless line
# (no newline): it writes at most ``argv[2]`` MiB and records in ``argv[3]`` how many MiB
# it managed to write.
ENDLESS_LINE = r'''
import json, os, sys
endless, cap, count = sys.argv[1], int(sys.argv[2]), sys.argv[3]
def send(obj):
    sys.stdout.write(json.dumps(obj) + "\n"); sys.stdout.flush()
for line in sys.stdin:
    msg = json.loads(line)
    method, mid = msg.get("method"), msg.get("id")
    if mid is None:
        continue
    if method == endless:
        sys.stdout.write('{"jsonrpc": "2.0", "id": %d, "result": {"content": '
                         '[{"type": "text", "text": "' % mid)
        chunk = "q" * (1 << 20)
        try:
            for written in range(1, cap + 1):
                sys.stdout.write(chunk); sys.stdout.flush()
                # Replaced whole: the test may read it while this process is writing.
                with open(count + ".tmp", "w") as out:
                    out.write(str(written))
                os.replace(count + ".tmp", count)
        except BrokenPipeError:
            break
    elif method == "initialize":
        send({"jsonrpc": "2.0", "id": mid, "result": {"protocolVersion": "2025-06-18",
              "capabilities": {"tools": {}}, "serverInfo": {"name": "e", "version": "1"}}})
    elif method == "tools/list":
        send({"jsonrpc": "2.0", "id": mid, "result": {"tools": [
            {"name": "a", "inputSchema": {"type": "object"}}]}})
    else:
        send({"jsonrpc": "2.0", "id": mid, "result": {}})
'''


def _endless_body(tmp_path: Path, name: str, endless: str) -> tuple[dict[str, Any], Path]:
    """A global stdio server running :data:`ENDLESS_LINE`, and its count of MiB written."""
    script, count = tmp_path / "endless.py", tmp_path / f"{name}.written"
    script.write_text(ENDLESS_LINE)
    return {"name": name, "transport": "stdio", "command": sys.executable,
            "args": [str(script), endless, "400", str(count)], "is_global": True}, count


async def test_a_stdio_answer_larger_than_the_message_cap_is_cut_off_in_a_call(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path,
) -> None:
    """A (long-lived) stdio server answering a call with one endless line: a 502 once the
    line passes ``MAX_MESSAGE_BYTES`` (as a streamable-HTTP answer is cut off), never a
    504 after reading (and, in the SDK's reader, re-copying) all it wrote until the
    deadline; the next call starts a new process (after the crash backoff)."""
    body, count = _endless_body(tmp_path, "endless", "tools/call")
    tid = await _synced_tool(client, admin_headers, body)
    called = await asyncio.wait_for(client.post(
        f"/api/v1/tools/{tid}/call", headers=admin_headers, json={"arguments": {}}), 120)
    written = int(count.read_text()) if count.exists() else 0
    assert called.status_code == 502, (written, called.text[:300])
    detail = called.json()["detail"]
    assert f"wrote an answer larger than {MAX_MESSAGE_BYTES} bytes" in detail, detail
    assert written < 400, written  # cut off, not read to the end


async def test_a_stdio_listing_larger_than_the_message_cap_makes_the_server_unhealthy(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path,
) -> None:
    """Discovery and health checks (a fresh process each) read through the same transport:
    a tools/list answer of one endless line is a 502 sync and an unhealthy check naming
    the cap, not a timeout."""
    body, _ = _endless_body(tmp_path, "endless-list", "tools/list")
    sid = await _register(client, admin_headers, body)
    synced = await asyncio.wait_for(client.post(
        f"/api/v1/mcp-servers/{sid}/sync", headers=admin_headers), 120)
    assert synced.status_code == 502, synced.text[:300]
    assert f"larger than {MAX_MESSAGE_BYTES} bytes" in synced.json()["detail"], synced.text
    checked = await client.post(f"/api/v1/mcp-servers/{sid}/check", headers=admin_headers)
    assert checked.status_code == 200, checked.text[:300]
    assert checked.json()["health_status"] == "unhealthy"
    assert f"larger than {MAX_MESSAGE_BYTES} bytes" in checked.json()["health_error"]


# ----------------------------------------------------------- stopping


# A stdio MCP server that ignores SIGTERM and starts a child that does too (SIG_IGN is
# inherited) and holds its stdout; it writes "<its pid> <the child's pid>" to argv[2].
# argv[1] "stays": it lives on after its stdin is closed; "leaves-a-child": it exits then,
# its child running on.
STUBBORN = r'''
import json, os, signal, subprocess, sys, time
signal.signal(signal.SIGTERM, signal.SIG_IGN)
mode, pids = sys.argv[1], sys.argv[2]
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(600)"],
                         stdin=subprocess.DEVNULL)
with open(pids + ".tmp", "w") as out:
    out.write(f"{os.getpid()} {child.pid}")
os.replace(pids + ".tmp", pids)
for line in sys.stdin:
    msg = json.loads(line)
    if msg.get("id") is None:
        continue
    result = {"protocolVersion": "2025-06-18", "capabilities": {},
              "serverInfo": {"name": "stubborn", "version": "1"}} \
        if msg.get("method") == "initialize" else {}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], "result": result}) + "\n")
    sys.stdout.flush()
while mode == "stays":
    time.sleep(1)
'''


async def _gone(pid: int, timeout_s: float = 10.0) -> bool:
    """Whether ``pid`` ends (or is a zombie: dead, its parent gone) within ``timeout_s``."""
    deadline = asyncio.get_running_loop().time() + timeout_s
    while alive(pid):
        if asyncio.get_running_loop().time() > deadline:
            return False
        await asyncio.sleep(0.05)
    return True


@pytest.mark.parametrize("mode", ["stays", "leaves-a-child"])
async def test_a_stdio_server_and_its_child_are_gone_when_the_session_ends(
    tmp_path: Path, mode: str,
) -> None:
    """The stdio transport runs a server in a process group of its own and stops it as
    the SDK did (stdin closed, 2 s, SIGTERM to the group, SIGKILL 2 s later): a server that
    ignores SIGTERM and its child that does too are gone when the session ends, and so is
    a child left running by a server that exited on its own; the child holding the
    server's stdout does not hold the session's end up."""
    script, pids = tmp_path / "stubborn.py", tmp_path / f"{mode}.pids"
    script.write_text(STUBBORN)
    spec = ServerSpec(name="stubborn", transport="stdio", command=sys.executable,
                      args=(str(script), mode, str(pids)))
    async with asyncio.timeout(60):
        async with stdio_transport(spec) as (read, write), ClientSession(read, write) as session:
            await session.initialize()
            server, child = map(int, pids.read_text().split())
            assert alive(server) and alive(child)
        assert await _gone(server) and await _gone(child), (mode, alive(server), alive(child))
