"""The tools domain end to end, against real MCP servers (stdio subprocesses and a
streamable-HTTP server on loopback) built with the SDK."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import text

from roost.db.engine import Database
from tests.support.identity import make_user
from tests.tools.conftest import CALL_TIMEOUT_S, ECHO_SERVER, MAX_OUTPUT_BYTES

pytestmark = pytest.mark.asyncio(loop_scope="session")


def stdio_body(name: str, bonus: Path | None = None, **extra: Any) -> dict[str, Any]:
    env = {"ROOST_TEST_SECRET": "s3cret-value"}
    if bonus is not None:
        env["ECHO_BONUS_FILE"] = str(bonus)
    return {"name": name, "transport": "stdio", "command": sys.executable,
            "args": [str(ECHO_SERVER)], "env": env, **extra}


async def register_and_sync(
    client: httpx.AsyncClient, headers: dict[str, str], body: dict[str, Any]
) -> tuple[dict[str, Any], dict[str, Any]]:
    created = await client.post("/api/v1/mcp-servers", json=body, headers=headers)
    assert created.status_code == 201, created.text
    synced = await client.post(f"/api/v1/mcp-servers/{created.json()['id']}/sync", headers=headers)
    assert synced.status_code == 200, synced.text
    return created.json(), synced.json()


async def tool_id(client: httpx.AsyncClient, headers: dict[str, str], server_id: str, name: str) -> str:
    listed = await client.get("/api/v1/tools", params={"server_id": server_id, "name": name},
                              headers=headers)
    assert listed.status_code == 200, listed.text
    [tool] = listed.json()["items"]
    return str(tool["id"])


async def test_stdio_server_discovery_calls_and_failures(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database, tmp_path: Path
) -> None:
    bonus = tmp_path / "bonus"
    bonus.write_text("on")
    server, synced = await register_and_sync(client, admin_headers, stdio_body("echo", bonus, is_global=True))
    # The env value is encrypted at rest and never answered; only its name is.
    assert server["env_names"] == ["ECHO_BONUS_FILE", "ROOST_TEST_SECRET"]
    assert "s3cret-value" not in str(server)
    async with database.transaction() as session:
        stored = await session.scalar(text("SELECT env_encrypted FROM mcp_servers"))
    assert stored is not None and "s3cret-value" not in stored
    assert sorted(synced["added"]) == ["add", "big", "bonus", "crash", "echo", "env_sha256",
                                       "fail", "hang", "pid", "sleep"]
    assert synced["server"]["health_status"] == "healthy"
    assert synced["server"]["capabilities"].get("tools") is not None
    sid = server["id"]

    add_id = await tool_id(client, admin_headers, sid, "add")
    tool = (await client.get(f"/api/v1/tools/{add_id}", headers=admin_headers)).json()
    assert tool["input_schema"]["required"] == ["a", "b"]
    assert tool["output_schema"] is not None

    # A call: validated, run, recorded with its audit entry.
    called = await client.post(f"/api/v1/tools/{add_id}/call", headers=admin_headers,
                               json={"arguments": {"a": 2, "b": 3}, "trace_id": "run-test-1"})
    assert called.status_code == 200, called.text
    run = called.json()
    assert run["status"] == "success"
    assert run["output"]["structuredContent"] == {"result": 5}
    assert run["result_preview"] == "5" and run["trace_id"] == "run-test-1"
    assert run["duration_ms"] is not None
    async with database.transaction() as session:
        audited = await session.scalar(text(
            "SELECT count(*) FROM audit_logs WHERE action = 'tool.call' AND trace_id = 'run-test-1'"
        ))
    assert audited == 1

    # By name too.
    echoed = await client.post("/api/v1/tools/by-name/echo/call", headers=admin_headers,
                               json={"arguments": {"text": "hello"}})
    assert echoed.status_code == 200, echoed.text
    assert echoed.json()["result_preview"] == "hello"

    # Arguments that do not match the schema: 422 naming the path; nothing recorded.
    runs_before = (await client.get("/api/v1/tool-runs", headers=admin_headers)).json()["items"]
    bad = await client.post(f"/api/v1/tools/{add_id}/call", headers=admin_headers,
                            json={"arguments": {"a": "two", "b": 3}})
    assert bad.status_code == 422, bad.text
    assert "/a" in bad.json()["detail"]
    assert bad.json()["errors"][0]["loc"] == ["body", "arguments", "a"]
    assert "two" not in bad.text
    missing = await client.post(f"/api/v1/tools/{add_id}/call", headers=admin_headers,
                                json={"arguments": {"a": 1}})
    assert missing.status_code == 422 and "'b'" in missing.json()["detail"]
    runs_after = (await client.get("/api/v1/tool-runs", headers=admin_headers)).json()["items"]
    assert len(runs_after) == len(runs_before)

    # A tool that hangs: 504 and a run with status timeout.
    sleep_id = await tool_id(client, admin_headers, sid, "sleep")
    slow = await client.post(f"/api/v1/tools/{sleep_id}/call", headers=admin_headers,
                             json={"arguments": {"seconds": CALL_TIMEOUT_S * 5}})
    assert slow.status_code == 504, slow.text
    slow_run = (await client.get(f"/api/v1/tool-runs/{slow.json()['tool_run_id']}",
                                 headers=admin_headers)).json()
    assert slow_run["status"] == "timeout" and "did not finish" in slow_run["error"]

    # A result larger than the cap: 502, failed run.
    big_id = await tool_id(client, admin_headers, sid, "big")
    huge = await client.post(f"/api/v1/tools/{big_id}/call", headers=admin_headers,
                             json={"arguments": {"size": MAX_OUTPUT_BYTES * 4}})
    assert huge.status_code == 502, huge.text
    assert "limit" in huge.json()["detail"]

    # The tool's own error: 502, failed run with the message.
    fail_id = await tool_id(client, admin_headers, sid, "fail")
    failed = await client.post(f"/api/v1/tools/{fail_id}/call", headers=admin_headers, json={})
    assert failed.status_code == 502, failed.text
    assert "always fails" in failed.json()["detail"]
    errors = (await client.get("/api/v1/tool-runs", params={"status": "error"},
                               headers=admin_headers)).json()["items"]
    assert {r["tool_name"] for r in errors} == {"big", "fail"}

    # The server's tool list changes: the missing tool is marked unavailable, kept.
    bonus.unlink()
    resynced = await client.post(f"/api/v1/mcp-servers/{sid}/sync", headers=admin_headers)
    assert resynced.status_code == 200, resynced.text
    assert resynced.json()["unavailable"] == ["bonus"]
    bonus_id = await tool_id(client, admin_headers, sid, "bonus")
    gone = await client.post(f"/api/v1/tools/{bonus_id}/call", headers=admin_headers, json={})
    assert gone.status_code == 409, gone.text
    unavailable = (await client.get("/api/v1/tools", params={"available": "false"},
                                    headers=admin_headers)).json()["items"]
    assert [t["name"] for t in unavailable] == ["bonus"]

    # Deleting the server deletes its tools but keeps the run history, naming the tool as
    # it was (history ids carry no foreign keys: migration 1090).
    add_id = await tool_id(client, admin_headers, sid, "add")
    deleted = await client.delete(f"/api/v1/mcp-servers/{sid}", headers=admin_headers)
    assert deleted.status_code == 204
    kept = (await client.get("/api/v1/tool-runs", params={"tool_name": "add"},
                             headers=admin_headers)).json()["items"]
    assert len(kept) == 1 and kept[0]["tool_id"] == add_id
    assert (await client.get(f"/api/v1/tools/{add_id}", headers=admin_headers)).status_code == 404
    by_id = (await client.get("/api/v1/tool-runs", params={"tool_id": add_id},
                              headers=admin_headers)).json()["items"]
    assert [r["id"] for r in by_id] == [kept[0]["id"]]  # still found by the deleted tool's id


async def test_streamable_http_server_tenancy_and_ssrf(
    client: httpx.AsyncClient, database: Database, http_mcp_url: str
) -> None:
    _, alice = await make_user(database)
    _, bob = await make_user(database)
    server, synced = await register_and_sync(client, alice, {
        "name": "remote", "transport": "streamable_http", "url": http_mcp_url,
        "headers": {"X-Api-Key": "very-secret"},
    })
    assert server["user_id"] is not None and server["is_global"] is False
    assert server["header_names"] == ["X-Api-Key"] and "very-secret" not in str(server)
    assert "echo" in synced["added"]
    echo_id = await tool_id(client, alice, server["id"], "echo")
    called = await client.post(f"/api/v1/tools/{echo_id}/call", headers=alice,
                               json={"arguments": {"text": "over http"}})
    assert called.status_code == 200, called.text
    assert called.json()["result_preview"] == "over http"

    checked = await client.post(f"/api/v1/mcp-servers/{server['id']}/check", headers=alice)
    assert checked.status_code == 200
    assert checked.json()["health_status"] == "healthy"
    assert checked.json()["latency_ms"] is not None and checked.json()["last_seen"] is not None

    # Another tenant sees none of it.
    assert (await client.get(f"/api/v1/mcp-servers/{server['id']}", headers=bob)).status_code == 404
    assert (await client.get(f"/api/v1/tools/{echo_id}", headers=bob)).status_code == 404
    other = await client.post(f"/api/v1/tools/{echo_id}/call", headers=bob,
                              json={"arguments": {"text": "x"}})
    assert other.status_code == 404
    bob_tools = (await client.get("/api/v1/tools", headers=bob)).json()["items"]
    assert {t["kind"] for t in bob_tools} == {"builtin"}
    assert (await client.get(f"/api/v1/tool-runs/{called.json()['id']}",
                             headers=bob)).status_code == 404
    assert (await client.post(f"/api/v1/mcp-servers/{server['id']}/sync",
                              headers=bob)).status_code == 404

    # Private and loopback addresses are refused unless an admin allowlisted the host.
    for url in ("http://10.1.2.3/mcp", "http://localhost:9/mcp", "http://169.254.169.254/mcp"):
        refused = await client.post("/api/v1/mcp-servers", headers=alice, json={
            "name": "internal", "transport": "streamable_http", "url": url})
        assert refused.status_code in (403, 502), refused.text
        assert refused.status_code == 403 or "resolved" in refused.json()["detail"]

    # Users may not run commands on the host, nor register global servers.
    stdio = await client.post("/api/v1/mcp-servers", headers=alice, json=stdio_body("mine"))
    assert stdio.status_code == 403
    shared = await client.post("/api/v1/mcp-servers", headers=alice, json={
        "name": "shared", "transport": "streamable_http", "url": http_mcp_url, "is_global": True})
    assert shared.status_code == 403


async def test_headers_env_and_arguments_that_could_never_be_sent_are_refused(
    client: httpx.AsyncClient, admin_headers: dict[str, str],
) -> None:
    """A header value outside printable ASCII, a header name that is not an HTTP token,
    an environment variable name the shell could not hold and a NUL in a command line
    were stored, and failed deep in a sync later: now each is a 422 naming the field."""
    http = {"name": "bad-http", "transport": "streamable_http", "url": "https://example.org/mcp"}
    for headers in ({"X-Team": "日本"}, {"X-Team": "a\r\nX-Evil: 1"}, {"Bad Name": "x"},
                    {"X-Team": " padded "}):
        refused = await client.post("/api/v1/mcp-servers", headers=admin_headers,
                                    json={**http, "headers": headers})
        assert refused.status_code == 422, refused.text
        assert "headers" in str(refused.json()["errors"][0]["loc"]), refused.text
    for body in ({"env": {"1BAD": "x"}}, {"env": {"OK": "a\u0000b"}}, {"args": ["a\u0000"]},
                 {"command": "echo\u0000"}):
        refused = await client.post("/api/v1/mcp-servers", headers=admin_headers, json={
            **stdio_body("bad-stdio"), **body})
        assert refused.status_code == 422, refused.text
    listed = await client.get("/api/v1/mcp-servers", headers=admin_headers)
    assert not [s for s in listed.json()["items"] if s["name"].startswith("bad-")]


async def test_an_invalid_header_name_is_refused_without_echoing_it(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """A name that is not an HTTP token may be a mistyped "Authorization: Bearer <token>":
    the 422 says what is wrong with it, never what it is; a framing header is named."""
    _, alice = await make_user(database)
    http = {"name": "bad-header", "transport": "streamable_http", "url": "https://example.org/mcp"}
    refused = await client.post("/api/v1/mcp-servers", headers=alice, json={
        **http, "headers": {"Authorization: Bearer dG9rZW4tU0VDUkVU": "dmFsdWU="}})
    assert refused.status_code == 422, refused.text
    assert "not a valid HTTP token" in refused.text and "dG9r" not in refused.text
    framing = await client.post("/api/v1/mcp-servers", headers=alice, json={
        **http, "headers": {"Content-Length": "1"}})
    assert framing.status_code == 422, framing.text
    assert "'Content-Length' is a hop-by-hop or framing header" in framing.text


async def test_an_mcp_url_with_a_malformed_idna_host_is_a_400(
    client: httpx.AsyncClient, database: Database,
) -> None:
    """``http://xn--/mcp`` (an A-label with no punycode) parsed, then raised idna's error
    when its host was first read: a 500.  Now an invalid URL, as any URL that does not parse."""
    _, alice = await make_user(database)
    for url in ("http://xn--/mcp", "http://xn--a/mcp", f"http://{'a' * 70}.example/mcp"):
        got = await client.post("/api/v1/mcp-servers", headers=alice, json={
            "name": "idna", "transport": "streamable_http", "url": url})
        assert got.status_code == 400, (url, got.text)
        assert got.json()["title"] == "Invalid URL", got.text


async def test_a_nul_in_a_servers_text_is_a_422_naming_the_field(
    client: httpx.AsyncClient, database: Database, http_mcp_url: str,
) -> None:
    """A NUL in an MCP or language server's description or name reached the database,
    which answered an anonymous 400; now a 422 naming the field."""
    _, alice = await make_user(database)
    got = await client.post("/api/v1/mcp-servers", headers=alice, json={
        "name": "nul-desc", "transport": "streamable_http", "url": http_mcp_url,
        "description": "a\x00b"})
    assert got.status_code == 422, got.text
    assert got.json()["errors"][0]["loc"][-1] == "description", got.text
    got = await client.post("/api/v1/lsp-servers", headers=alice, json={
        "name": "nul", "language": "python", "command": "pylsp", "file_patterns": ["*.py"],
        "args": ["--x", "a\x00"]})
    assert got.status_code == 422, got.text
    assert "args" in got.json()["errors"][0]["loc"], got.text


async def test_dependency_cycle_refused(client: httpx.AsyncClient, database: Database) -> None:
    _, alice = await make_user(database)
    tools = {t["name"]: t["id"] for t in
             (await client.get("/api/v1/tools", params={"kind": "builtin"}, headers=alice)).json()["items"]}
    a, b = tools["knowledge_search"], tools["current_time"]
    first = await client.post(f"/api/v1/tools/{a}/dependencies", headers=alice,
                              json={"depends_on_tool_id": b})
    assert first.status_code == 201, first.text
    cycle = await client.post(f"/api/v1/tools/{b}/dependencies", headers=alice,
                              json={"depends_on_tool_id": a})
    assert cycle.status_code == 409
    assert "cycle" in cycle.json()["detail"]
    assert "current_time -> knowledge_search -> current_time" in cycle.json()["detail"]
    self_edge = await client.post(f"/api/v1/tools/{a}/dependencies", headers=alice,
                                  json={"depends_on_tool_id": a})
    assert self_edge.status_code == 409
    listed = (await client.get(f"/api/v1/tools/{a}/dependencies", headers=alice)).json()
    assert [d["depends_on_tool_id"] for d in listed] == [b]


async def test_builtin_tools(client: httpx.AsyncClient, database: Database) -> None:
    _, alice = await make_user(database)
    now = await client.post("/api/v1/tools/by-name/current_time/call", headers=alice,
                            json={"arguments": {"timezone": "Europe/Paris"}})
    assert now.status_code == 200, now.text
    assert now.json()["output"]["timezone"] == "Europe/Paris"
    bad_zone = await client.post("/api/v1/tools/by-name/current_time/call", headers=alice,
                                 json={"arguments": {"timezone": "Mars/Olympus"}})
    assert bad_zone.status_code == 422
    assert "Mars" not in bad_zone.text, bad_zone.text  # values are never echoed
    found = await client.post("/api/v1/tools/by-name/knowledge_search/call", headers=alice,
                              json={"arguments": {"query": "anything", "k": 3}})
    assert found.status_code == 200, found.text
    assert found.json()["output"]["results"] == []
    runs = (await client.get("/api/v1/tool-runs", headers=alice)).json()["items"]
    assert [r["status"] for r in runs] == ["success", "error", "success"]
    # An argument the schema does not declare (additionalProperties: false) is named, in
    # the detail and as its own path; nothing recorded.
    extra = await client.post("/api/v1/tools/by-name/current_time/call", headers=alice,
                              json={"arguments": {"timezone": "UTC", "zformat": 1, "a_b": 2}})
    assert extra.status_code == 422, extra.text
    assert extra.json()["detail"].endswith(
        "unexpected property (not allowed by the schema): a_b, zformat"), extra.text
    assert [e["loc"] for e in extra.json()["errors"]] == [
        ["body", "arguments", "a_b"], ["body", "arguments", "zformat"]]
    assert len((await client.get("/api/v1/tool-runs", headers=alice)).json()["items"]) == 3


async def test_missing_stdio_command_is_a_clear_failure(
    client: httpx.AsyncClient, admin_headers: dict[str, str]
) -> None:
    created = await client.post("/api/v1/mcp-servers", headers=admin_headers, json={
        "name": "ghost", "transport": "stdio", "command": "/nonexistent/roost-mcp-ghost",
        "is_global": True})
    assert created.status_code == 201, created.text
    sid = created.json()["id"]
    checked = await client.post(f"/api/v1/mcp-servers/{sid}/check", headers=admin_headers)
    assert checked.status_code == 200, checked.text
    assert checked.json()["health_status"] == "unhealthy"
    assert "was not found" in checked.json()["health_error"]
    synced = await client.post(f"/api/v1/mcp-servers/{sid}/sync", headers=admin_headers)
    assert synced.status_code == 502
    assert "/nonexistent/roost-mcp-ghost" in synced.json()["detail"]
    listed = (await client.get("/api/v1/mcp-servers", params={"health_status": "unhealthy"},
                               headers=admin_headers)).json()["items"]
    assert [s["name"] for s in listed] == ["ghost"]


async def test_each_user_has_their_own_dependency_graph(
    client: httpx.AsyncClient, database: Database,
) -> None:
    _, alice = await make_user(database)
    _, bob = await make_user(database)
    _, carol = await make_user(database)
    tools = {t["name"]: t["id"] for t in
             (await client.get("/api/v1/tools", params={"kind": "builtin"}, headers=alice)).json()["items"]}
    a, b = tools["knowledge_search"], tools["current_time"]

    async def depend(headers: dict[str, str], tool: str, needs: str) -> httpx.Response:
        return await client.post(f"/api/v1/tools/{tool}/dependencies", headers=headers,
                                 json={"depends_on_tool_id": needs})

    assert (await depend(alice, a, b)).status_code == 201
    # The same edge in another user's graph, and the reverse one in a third's: neither
    # sees alice's edge, as a duplicate or as a cycle.
    assert (await depend(carol, a, b)).status_code == 201
    assert (await depend(bob, b, a)).status_code == 201
    assert (await depend(bob, a, b)).status_code == 409  # a cycle in bob's own graph
    assert (await depend(carol, a, b)).status_code == 409  # carol's duplicate
    listed = {who: [d["depends_on_tool_id"] for d in (await client.get(
        f"/api/v1/tools/{tool}/dependencies", headers=headers)).json()]
        for who, headers, tool in (("alice", alice, a), ("bob", bob, b), ("bob_a", bob, a))}
    assert listed == {"alice": [b], "bob": [a], "bob_a": []}


async def test_a_url_on_port_zero_is_refused_at_registration(
    client: httpx.AsyncClient, admin_headers: dict[str, str],
) -> None:
    """``http://127.0.0.1:0/mcp`` parses, yet no server listens on port 0: it was stored,
    and every sync failed to connect.  Now a 422 naming the url."""
    refused = await client.post("/api/v1/mcp-servers", headers=admin_headers, json={
        "name": "port-zero", "transport": "streamable_http",
        "url": "http://127.0.0.1:0/mcp", "is_global": True})
    assert refused.status_code == 422, refused.text
    assert "url" in str(refused.json()["errors"][0]["loc"]), refused.text


@pytest.mark.parametrize(("name", "arguments"), [
    ("current_time", b'{"timezone": "Europe/Paris\\u0000"}'),
    ("knowledge_search", b'{"query": "vacation\\u0000days"}'),
], ids=["current_time", "knowledge_search"])
async def test_a_builtins_string_argument_refuses_a_nul_in_its_schema(
    client: httpx.AsyncClient, database: Database, name: str, arguments: bytes,
) -> None:
    """docs/tools.md: the built-ins' string arguments refuse NUL bytes in the input schema
    (migration 1170 for these two, as 0520 for web_fetch and lsp_diagnostics): a 422, no
    run; once a 400 for a run that could not be recorded (current_time) or a 500
    (knowledge_search)."""
    _, alice = await make_user(database)
    listed = (await client.get("/api/v1/tools", params={"kind": "builtin", "limit": 100},
                               headers=alice)).json()["items"]
    schema = next(t["input_schema"] for t in listed if t["name"] == name)
    strings = [p for p in schema["properties"].values() if p.get("type") == "string"]
    assert strings and all(p.get("pattern") == "^[^\\x00]*$" for p in strings), strings
    called = await client.post(f"/api/v1/tools/by-name/{name}/call",
                               content=b'{"arguments": ' + arguments + b"}",
                               headers={**alice, "Content-Type": "application/json"})
    assert called.status_code == 422, called.text[:300]
    assert called.json()["type"] == "https://roost.dev/problems/validation-error", called.text
    assert (await client.get("/api/v1/tool-runs", headers=alice)).json()["items"] == []


async def test_a_call_tied_to_a_chat_session_must_name_one_the_caller_sees(
        client: httpx.AsyncClient, database: Database) -> None:
    """A tool run names the chat session (and message) it was for: the caller's own session
    is recorded; another user's session, or a message id that names nothing, is a 404 and
    nothing runs or is recorded (the run would have counted in that session's usage)."""
    _, alice = await make_user(database)
    _, bob = await make_user(database)
    made = await client.post("/api/v1/chat/sessions", json={"title": "t"}, headers=alice)
    assert made.status_code == 201, made.text
    alices = made.json()["id"]
    call = "/api/v1/tools/by-name/current_time/call"
    ok = await client.post(call, headers=alice,
                           json={"arguments": {"timezone": "UTC"}, "session_id": alices})
    assert ok.status_code == 200 and ok.json()["session_id"] == alices, ok.text
    for body in ({"session_id": alices}, {"message_id": "0190a0a0-0000-7000-8000-000000000000"},
                 {"session_id": alices, "message_id": "0190a0a0-0000-7000-8000-000000000000"}):
        who = bob if "session_id" in body else alice
        r = await client.post(call, headers=who, json={"arguments": {"timezone": "UTC"}, **body})
        assert r.status_code == 404 and r.headers["content-type"].startswith(
            "application/problem+json"), (body, r.text)
    assert len((await client.get("/api/v1/tool-runs", headers=bob)).json()["items"]) == 0
    assert len((await client.get("/api/v1/tool-runs", headers=alice)).json()["items"]) == 1


async def test_a_server_url_s_token_is_not_kept_in_the_audit_log(
    client: httpx.AsyncClient, database: Database, admin_headers: dict[str, str],
) -> None:
    """An MCP server some users reach with a token in its URL (``?api_key=``): the
    ``mcp_server.create`` record keeps the URL without the token's value (it kept it)."""
    _, user = await make_user(database)
    token = "sk-live-0123456789abcdef"
    made = await client.post("/api/v1/mcp-servers", headers=user, json={
        "name": "q", "transport": "streamable_http",
        "url": f"http://127.0.0.1:9/mcp?api_key={token}&region=eu"})
    assert made.status_code == 201, made.text
    listed = await client.get("/api/v1/audit/logs", headers=admin_headers,
                              params={"action": "mcp_server.create"})
    [entry] = listed.json()["items"]
    assert entry["changes"]["url"] == "http://127.0.0.1:9/mcp?api_key=[redacted]&region=eu"
    async with database.transaction() as session:
        stored = await session.scalar(text(
            "SELECT string_agg(coalesce(changes::text, '') || coalesce(metadata::text, ''), '')"
            " FROM audit_logs"))
    assert token not in (stored or "")
