"""Persona secrets referenced by MCP servers' headers and args (roost.tools.secretrefs),
against a real loopback streamable-HTTP MCP server that records every request's headers:
a discovery or health check never sends a literal ``${secret:..}``, a resolved value that
cannot be sent fails the call naming the secret (never quoting it), and a reference where
none is resolved, or one that does not parse, is refused at registration."""

from __future__ import annotations

import json
import socket
import sys
import threading
import traceback
import uuid
from collections.abc import AsyncIterator, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import httpx
import httpx2
import pytest
from fastapi import FastAPI

from roost.config import Settings
from roost.db.engine import Database
from roost.errors import RoostError
from roost.tasks.worker import Worker
from roost.tools import mcpclient, secretrefs
from tests.agents.api import (
    columns_holding,
    create_agent,
    create_persona,
    persona_with_secret_server,
)
from tests.agents.conftest import running_worker, wait_for_run
from tests.chat.conftest import add_provider
from tests.support.identity import make_user
from tests.support.openai_stub import StubServer
from tests.support.openai_stub.script import Call, Reply, ToolCalls

pytestmark = pytest.mark.asyncio(loop_scope="session")

Headers = dict[str, str]
ECHO_SERVER = Path(__file__).with_name("mcp_echo_server.py")
TOOL = {"name": "whoami", "description": "Says hello.",
        "inputSchema": {"type": "object", "properties": {}}}


class Recorder(ThreadingHTTPServer):
    seen: list[dict[str, str]]


class _Handler(BaseHTTPRequestHandler):
    server: Recorder

    def log_message(self, *args: Any) -> None:
        pass

    def _reply(self, code: int, body: dict[str, Any] | None = None) -> None:
        data = json.dumps(body).encode() if body is not None else b""
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        self.send_header("Mcp-Session-Id", "s1")
        self.end_headers()
        self.wfile.write(data)

    def do_GET(self) -> None:
        self.server.seen.append(dict(self.headers))
        self._reply(405)

    def do_DELETE(self) -> None:
        self._reply(200)

    def do_POST(self) -> None:
        self.server.seen.append(dict(self.headers))
        length = int(self.headers.get("Content-Length", "0"))
        message = json.loads(self.rfile.read(length))
        method = message.get("method")
        if "id" not in message:
            self._reply(202)
            return
        if method == "initialize":
            result: dict[str, Any] = {
                "protocolVersion": message["params"]["protocolVersion"],
                "capabilities": {"tools": {}},
                "serverInfo": {"name": "recorder", "version": "1"}}
        elif method == "tools/list":
            result = {"tools": [TOOL]}
        elif method == "tools/call":
            result = {"content": [{"type": "text", "text": "hello"}], "isError": False}
        else:
            result = {}
        self._reply(200, {"jsonrpc": "2.0", "id": message["id"], "result": result})


@pytest.fixture
def recorder() -> Iterator[Recorder]:
    server = Recorder(("127.0.0.1", 0), _Handler)
    server.seen = []
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()


@pytest.fixture
async def worker(app: FastAPI, client: Any, database: Database,
                 test_settings: Settings) -> AsyncIterator[Worker]:
    async with running_worker(app, database, test_settings) as w:
        yield w


async def _setup(client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer,
                 database: Database, recorder: Recorder, header: str, value: str | None,
                 ) -> tuple[Headers, dict[str, Any], dict[str, Any], str]:
    """A user, their streamable-HTTP server with ``X-Token: header``, synced; their persona
    holding ``tok`` = value; an agent allowed the tool."""
    await add_provider(client, admin_headers, stub, name=f"stub-{uuid.uuid4().hex[:6]}")
    _, headers = await make_user(database)
    port = recorder.server_address[1]
    server = await client.post("/api/v1/mcp-servers", headers=headers, json={
        "name": f"rec-{uuid.uuid4().hex[:6]}", "transport": "streamable_http",
        "url": f"http://127.0.0.1:{port}/mcp", "headers": {"X-Token": header}})
    assert server.status_code == 201, server.text
    persona = await create_persona(client, headers)
    if value is not None:
        stored = await client.put(f"/api/v1/personas/{persona['id']}/secrets", headers=headers,
                                  json={"secret_type": "mcp_header", "key_name": "tok",
                                        "value": value})
        assert stored.status_code == 200, stored.text
    return headers, server.json(), persona, f"http://127.0.0.1:{port}/mcp"


async def _run_tool(client: httpx.AsyncClient, headers: Headers, stub: StubServer,
                    persona: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    agent = await create_agent(client, headers, persona_id=persona["id"],
                               tool_permissions=["whoami"])
    stub.script(ToolCalls(Call("whoami", {})), Reply("done"))
    run = (await client.post(f"/api/v1/agents/{agent['id']}/runs", json={"input": "go"},
                             headers=headers)).json()
    done = await wait_for_run(client, headers, run["id"])
    steps = (await client.get(f"/api/v1/runs/{run['id']}/steps", headers=headers)).json()
    return done, steps


def _sent_tokens(recorder: Recorder) -> list[str | None]:
    return [h.get("X-Token") or h.get("x-token") for h in recorder.seen]


@pytest.mark.parametrize(("action", "value", "expected"), [
    ("sync", "Bearer ${secret:tok}", {"added": ["whoami"]}),
    ("check", "${secret:tok}", {"health_status": "healthy"}),
])
async def test_discovery_and_checks_go_without_the_headers_that_reference_secrets(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    recorder: Recorder, action: str, value: str, expected: dict[str, object],
) -> None:
    """Discovery and health checks have no persona: the header is left out, never sent
    as `${secret:..}`."""
    headers, server, _, _ = await _setup(client, admin_headers, stub, database, recorder,
                                         value, "v-123")
    answer = await client.post(f"/api/v1/mcp-servers/{server['id']}/{action}", headers=headers)
    assert answer.status_code == 200, answer.text
    assert {key: answer.json()[key] for key in expected} == expected
    assert recorder.seen and _sent_tokens(recorder) == [None] * len(recorder.seen)


async def test_a_failed_sync_names_the_headers_left_out(
    client: httpx.AsyncClient, database: Database,
) -> None:
    with socket.socket() as s:  # a port nothing listens on
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    _, headers = await make_user(database)
    server = (await client.post("/api/v1/mcp-servers", headers=headers, json={
        "name": "gone", "transport": "streamable_http", "url": f"http://127.0.0.1:{port}/mcp",
        "headers": {"X-Token": "Bearer ${secret:tok}", "X-Plain": "p"}})).json()
    synced = await client.post(f"/api/v1/mcp-servers/{server['id']}/sync", headers=headers)
    assert synced.status_code >= 500, synced.text
    assert "header 'X-Token'" in synced.json()["detail"], synced.text
    assert "X-Plain" not in synced.json()["detail"]


@pytest.mark.parametrize("value", [
    "line1\r\nX-Evil: injected-5ecret-zz91",
    "trailing-5ecret-zz91 ",
    "nul\x00-5ecret-zz91",
])
async def test_an_unsendable_secret_fails_the_call_naming_it_never_quoting_it(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    recorder: Recorder, worker: Worker, value: str,
) -> None:
    """A secret unfit for a header fails the call with an error that names, not holds, it."""
    headers, server, persona, _ = await _setup(client, admin_headers, stub, database,
                                               recorder, "Bearer ${secret:tok}", None)
    assert (await client.post(f"/api/v1/mcp-servers/{server['id']}/sync",
                              headers=headers)).status_code == 200
    stored = await client.put(f"/api/v1/personas/{persona['id']}/secrets", headers=headers,
                              json={"secret_type": "mcp_header", "key_name": "tok",
                                    "value": value})
    assert stored.status_code == 200, stored.text
    recorder.seen.clear()
    stub.reset()
    _, steps = await _run_tool(client, headers, stub, persona)
    assert not any("X-Evil" in h for h in recorder.seen)  # no header was smuggled
    tool_step = next(s for s in steps if s["step_type"] == "tool_call")
    assert tool_step["status"] == "failed"
    assert "tok" in tool_step["error"] and "X-Token" in tool_step["error"], tool_step["error"]
    leaks = {
        "the run step's error": "5ecret-zz91" in (tool_step["error"] or ""),
        "a database column": await columns_holding(database, "5ecret-zz91"),
        "the model's next prompt": any("5ecret-zz91" in json.dumps(r.body)
                                       for r in stub.requests()),
    }
    assert not any(leaks.values()), (leaks, tool_step["error"])


async def test_an_unsendable_header_error_is_never_quoted() -> None:
    """Second guard: the HTTP library's refusal quotes the header value; never passed on."""
    spec = mcpclient.ServerSpec(name="s", transport="streamable_http", url="http://x/mcp")
    for exc in (httpx2.LocalProtocolError("Illegal header value b'Bearer 5ecret-zz91 '"),
                UnicodeEncodeError("ascii", "5ecret-zz91\u00e9", 11, 12, "not ascii")):
        detail = mcpclient.failure_of(spec, exc).detail
        assert "5ecret" not in detail and "could not be sent" in detail, detail


async def test_a_reference_in_a_url_is_refused(
    client: httpx.AsyncClient, database: Database, recorder: Recorder,
) -> None:
    """Only env values and headers are resolved: a URL's reference would go out as-is."""
    _, headers = await make_user(database)
    port = recorder.server_address[1]
    for url in (f"http://127.0.0.1:{port}/mcp?key=${{secret:tok}}",
                f"http://127.0.0.1:{port}/mcp?key=$%7Bsecret:tok%7D"):
        server = await client.post("/api/v1/mcp-servers", headers=headers, json={
            "name": "urlref", "transport": "streamable_http", "url": url})
        assert server.status_code == 422, server.text
        assert "URL" in server.text


async def test_a_reference_in_stdio_args_is_refused(
    client: httpx.AsyncClient, admin_headers: Headers,
) -> None:
    server = await client.post("/api/v1/mcp-servers", headers=admin_headers, json={
        "name": f"argref-{uuid.uuid4().hex[:6]}", "transport": "stdio",
        "command": sys.executable, "args": [str(ECHO_SERVER), "--token=${secret:tok}"],
        "is_global": True})
    assert server.status_code == 422, server.text


@pytest.mark.parametrize("value", ["Bearer ${secret:Api_Token/tok}", "${secret:my tok}",
                                   "${secret:" + "k" * 300 + "}", "${secret:${secret:tok}}"])
async def test_a_malformed_reference_is_refused_naming_the_field(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers, recorder: Recorder,
    value: str,
) -> None:
    """Looks like a reference, does not parse: 422 naming the header or env (no echo)."""
    _, headers = await make_user(database)
    port = recorder.server_address[1]
    server = await client.post("/api/v1/mcp-servers", headers=headers, json={
        "name": f"bad-{uuid.uuid4().hex[:6]}", "transport": "streamable_http",
        "url": f"http://127.0.0.1:{port}/mcp", "headers": {"X-Token": value}})
    assert server.status_code == 422, server.text
    assert "X-Token" in server.text and "my tok" not in server.text
    stdio = await client.post("/api/v1/mcp-servers", headers=admin_headers, json={
        "name": f"bad-{uuid.uuid4().hex[:6]}", "transport": "stdio", "is_global": True,
        "command": sys.executable, "args": [str(ECHO_SERVER)], "env": {"TOKEN": value}})
    assert stdio.status_code == 422, stdio.text
    assert "TOKEN" in stdio.text


class _QuotingHandler(_Handler):
    """An MCP server that, like many APIs, quotes the credential it was sent in an error."""

    def do_POST(self) -> None:
        length = int(self.headers.get("Content-Length", "0"))
        message = json.loads(self.rfile.read(length))
        if "id" not in message:
            self._reply(202)
            return
        method = message.get("method")
        result: dict[str, Any] = {}
        if method == "initialize":
            result = {"protocolVersion": message["params"]["protocolVersion"],
                      "capabilities": {"tools": {}}, "serverInfo": {"name": "q", "version": "1"}}
        elif method == "tools/list":
            result = {"tools": [TOOL]}
        elif method == "tools/call":
            token = self.headers.get("X-Token", "")
            result = {"content": [{"type": "text", "text": f"401 invalid credentials: {token}"},
                                  {"type": "text", "text": json.dumps({"sent": token})}],
                      "isError": True}
        self._reply(200, {"jsonrpc": "2.0", "id": message["id"], "result": result})


async def test_a_secret_the_server_quotes_back_is_hidden_before_it_is_recorded(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker,
) -> None:
    """The server answers "401 invalid credentials: Bearer <value>": the value is replaced
    by [secret tok] in the run's steps, every column and the model's next prompt."""
    quoting = Recorder(("127.0.0.1", 0), _QuotingHandler)
    quoting.seen = []
    threading.Thread(target=quoting.serve_forever, daemon=True).start()
    value = 'pv-8c1f2a77-"quoted"-value-nobody-sees'
    try:
        headers, server, persona, _ = await _setup(client, admin_headers, stub, database,
                                                   quoting, "Bearer ${secret:tok}", value)
        assert (await client.post(f"/api/v1/mcp-servers/{server['id']}/sync",
                                  headers=headers)).status_code == 200
        stub.reset()
        _, steps = await _run_tool(client, headers, stub, persona)
    finally:
        quoting.shutdown()
        quoting.server_close()
    tool_step = next(s for s in steps if s["step_type"] == "tool_call")
    assert "[secret tok]" in (tool_step["error"] or ""), tool_step
    escaped = json.dumps(value)[1:-1]  # as quoted inside the JSON text
    leaks = {form: {"run steps": form in json.dumps(steps),
                    "columns": await columns_holding(database, form),
                    "the model's prompt": any(form in json.dumps(r.body)
                                              for r in stub.requests())}
             for form in (value, escaped)}
    assert not any(any(where.values()) for where in leaks.values()), leaks


# A stdio MCP server speaking raw JSON-RPC: its one tool answers a JSON-RPC error that
# quotes, after PAD characters, the TOK environment variable it was started with (as an
# API saying "invalid credentials: <what you sent>" does).
QUOTING_STDIO_SERVER = r'''
import json, os, sys
for line in sys.stdin:
    msg = json.loads(line)
    if "id" not in msg:
        continue
    method = msg.get("method")
    if method == "initialize":
        out = {"result": {"protocolVersion": msg["params"]["protocolVersion"],
                          "capabilities": {"tools": {}},
                          "serverInfo": {"name": "q", "version": "1"}}}
    elif method == "tools/list":
        out = {"result": {"tools": [{"name": "whoami", "description": "Says hello.",
                                     "inputSchema": {"type": "object", "properties": {}}}]}}
    elif method == "tools/call":
        pad = "p" * int(os.environ.get("PAD", "0"))
        out = {"error": {"code": -32000,
                         "message": pad + "invalid credentials: " + os.environ.get("TOK", "")}}
    else:
        out = {"result": {}}
    sys.stdout.write(json.dumps({"jsonrpc": "2.0", "id": msg["id"], **out}) + "\n")
    sys.stdout.flush()
'''
QUOTED = "sk-probe-7d3e9b1f-the-plaintext-nobody-may-see"


@pytest.mark.parametrize(("value", "pad", "shown"), [
    # straddling the 300th character of the message, where its text is cut
    (QUOTED, 300 - len("invalid credentials: ") - 30, QUOTED[:30]),
    # a value of two lines (a PEM key, say), of which the message kept the first
    ("-----pem-8a2c4e6f-first-line-of-the-key\nsecond-line-0f1e2d", 0,
     "-----pem-8a2c4e6f-first-line-of-the-key"),
    # a value ending in spaces, which the message's strip took off
    ("trailing-5ecret-c3d9a1  ", 0, "trailing-5ecret-c3d9a1"),
], ids=["cut-at-300", "two-lines", "trailing-spaces"])
async def test_a_secret_quoted_in_a_json_rpc_error_is_hidden_before_the_error_is_cut(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    worker: Worker, tmp_path: Path, value: str, pad: int, shown: str,
) -> None:
    """A global stdio server started with TOK=${secret:tok} fails the call with a
    JSON-RPC error quoting TOK: the value is hidden whole before the message is shortened
    (its first line, 300 characters), so no part of it reaches the run's steps, a column or
    the model's next prompt."""
    await add_provider(client, admin_headers, stub, name=f"stub-{uuid.uuid4().hex[:6]}")
    _, headers = await make_user(database)
    script = tmp_path / "quoting_server.py"
    script.write_text(QUOTING_STDIO_SERVER)
    persona = await persona_with_secret_server(
        client, admin_headers, headers, name=f"quoting-{uuid.uuid4().hex[:6]}", script=script,
        env={"TOK": "${secret:tok}", "PAD": str(pad)}, secret=value)
    stub.reset()
    _, steps = await _run_tool(client, headers, stub, persona)
    tool_step = next(s for s in steps if s["step_type"] == "tool_call")
    assert tool_step["status"] == "failed", tool_step
    assert "invalid credentials: [secret tok]" in tool_step["error"], tool_step["error"]
    leaks = {"run steps": shown in json.dumps(steps),
             "columns": await columns_holding(database, shown),
             "the model's prompt": any(shown in json.dumps(r.body) for r in stub.requests())}
    assert not any(leaks.values()), leaks


async def test_hide_error_drops_the_unhidden_exceptions_behind_a_failure() -> None:
    """What a failure was raised from (the SDK's error, quoting the server's words) is
    not hidden: it is dropped, so no traceback of the failure shows it."""
    revealed = secretrefs._revealed({(None, "tok"): QUOTED})
    try:
        try:
            raise ValueError(f"invalid credentials: {QUOTED}")
        except ValueError:
            raise mcpclient.McpError(f"failed: {QUOTED}")  # noqa: B904
    except mcpclient.McpError as exc:
        secretrefs.hide_error(exc, revealed)
        failure = exc
    shown = "".join(traceback.format_exception(failure))
    assert "failed: [secret tok]" in shown
    assert QUOTED not in shown, shown


async def test_hide_replaces_every_form_of_a_long_enough_value() -> None:
    revealed = secretrefs._revealed({(None, "tok"): "a b/c\"d-long", (None, "pin"): "1234"})
    hidden = secretrefs.hide({"t": ["x a b/c\"d-long", 'j "a b/c\\\"d-long"',
                                    "u a%20b%2Fc%22d-long", "pin 1234"]}, revealed)
    assert hidden == {"t": ["x [secret tok]", 'j "[secret tok]"', "u [secret tok]",
                            "pin 1234"]}  # too short to hide: shown as it is


@pytest.mark.parametrize(("encoder", "quoted"), [
    # Go's encoding/json: < > & escaped (lower-case hex), non-ASCII kept
    ("go", "p\\u0026w\\u003cd\\u003e-cl\u00e9+'1"),
    # .NET's System.Text.Json: those and ' + and every non-ASCII character, upper-case hex
    ("dotnet", "p\\u0026w\\u003Cd\\u003E-cl\\u00E9\\u002B\\u00271"),
    # an encoder escaping non-ASCII only, upper-case hex (Jackson's ESCAPE_NON_ASCII)
    ("upper", "p&w<d>-cl\\u00E9+'1"),
])
async def test_a_value_quoted_back_by_another_languages_json_encoder_is_hidden(
        encoder: str, quoted: str) -> None:
    """A secret with characters Go's or .NET's JSON encoders escape (& < > ' + and accented
    letters), quoted back by a server written in those languages, is hidden as well."""
    revealed = secretrefs._revealed({(None, "tok"): "p&w<d>-cl\u00e9+'1"})
    answer = f'{{"error": "bad token \\"{quoted}\\""}}'
    assert secretrefs.hide(answer, revealed) == '{"error": "bad token \\"[secret tok]\\""}', encoder


@pytest.mark.parametrize(("value", "says"), [
    ("${secret:t}" * 5, "at most 4"),
    ("x" * 8193, "at most 8192 characters"),
    ("${secret:nosuchtype/tok}", "'nosuchtype'"),
])
async def test_a_value_too_large_or_naming_an_unknown_type_is_refused_at_registration(
    client: httpx.AsyncClient, database: Database, admin_headers: Headers, recorder: Recorder,
    value: str, says: str,
) -> None:
    """More than 4 references, more than 8 KiB, or a type no secret has: 422 naming the
    header or env variable."""
    _, headers = await make_user(database)
    port = recorder.server_address[1]
    server = await client.post("/api/v1/mcp-servers", headers=headers, json={
        "name": f"big-{uuid.uuid4().hex[:6]}", "transport": "streamable_http",
        "url": f"http://127.0.0.1:{port}/mcp", "headers": {"X-Token": value}})
    assert server.status_code == 422, server.text
    assert "X-Token" in server.text and says in server.text, server.text
    stdio = await client.post("/api/v1/mcp-servers", headers=admin_headers, json={
        "name": f"big-{uuid.uuid4().hex[:6]}", "transport": "stdio", "is_global": True,
        "command": sys.executable, "args": [str(ECHO_SERVER)], "env": {"TOKEN": value}})
    assert stdio.status_code == 422, stdio.text
    assert "TOKEN" in stdio.text and says in stdio.text, stdio.text


async def test_a_stored_value_is_not_substituted_beyond_the_cap() -> None:
    """A value stored before the caps (1000 references to a 64 KiB secret) is refused at
    call time, before a 62 MiB header is built."""
    value = "${secret:t}" * 1000
    spec = mcpclient.ServerSpec(name="amp", transport="streamable_http",
                                url="http://127.0.0.1:9/mcp", headers={"X-Token": value})

    async def resolve(owner: uuid.UUID | None, kind: str | None, key: str) -> str:
        return "a" * 65536

    with pytest.raises(secretrefs.SecretsUnavailable, match="X-Token") as caught:
        await secretrefs.resolve_spec(spec, resolve)
    assert "aaaa" not in caught.value.detail
    assert isinstance(caught.value, RoostError)


async def test_an_ambiguous_reference_is_refused_at_configuration(
    client: httpx.AsyncClient, admin_headers: Headers, stub: StubServer, database: Database,
    recorder: Recorder,
) -> None:
    """An untyped ${secret:tok} the persona holds under two types could never resolve:
    422 at agent creation, asking for ${secret:TYPE/tok}."""
    headers, server, persona, _ = await _setup(client, admin_headers, stub, database,
                                               recorder, "Bearer ${secret:tok}", "v-1234567")
    assert (await client.post(f"/api/v1/mcp-servers/{server['id']}/sync",
                              headers=headers)).status_code == 200
    other = await client.put(f"/api/v1/personas/{persona['id']}/secrets", headers=headers,
                             json={"secret_type": "api_token", "key_name": "tok",
                                   "value": "v-7654321"})
    assert other.status_code == 200, other.text
    resp = await client.post("/api/v1/agents", headers=headers, json={
        "name": "A", "slug": f"a-{uuid.uuid4().hex[:6]}", "persona_id": persona["id"],
        "tool_permissions": ["whoami"]})
    assert resp.status_code == 422, resp.text
    assert "${secret:TYPE/tok}" in resp.text and "api_token, mcp_header" in resp.text
