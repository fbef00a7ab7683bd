"""``roost mcp`` and ``roost tools`` as an operator runs them (real console script)."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from roost.db.engine import Database
from tests.agents.test_agents_cli import cli_env
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer
from tests.tools.conftest import ECHO_SERVER
from tests.tools.test_hostile_mcp_listings import INIT, Plans, _server, _sync, _tools, plans, tool

pytestmark = pytest.mark.asyncio(loop_scope="session")
__all__ = ["plans"]  # the fixture, imported for the tests against scripted MCP servers


async def test_roost_mcp_and_tools_commands(pg_server: PgTestServer, db_name: str, tmp_path: Path) -> None:
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name), "ROOST_DATA_DIR": str(tmp_path / "d")}
    added = run_roost("mcp", "add", "echo", "--command", sys.executable, "--arg", str(ECHO_SERVER),
                      "--env", "TOKEN=hidden-value", env=env)
    assert added.returncode == 0, added.stderr
    assert "Registered MCP server echo" in added.stdout
    synced = run_roost("mcp", "sync", "echo", env=env)
    assert synced.returncode == 0, synced.stderr
    assert "10 added" not in synced.stdout and "9 added" in synced.stdout  # no bonus file
    checked = run_roost("mcp", "check", "echo", env=env)
    assert checked.returncode == 0 and "healthy" in checked.stdout
    listed = run_roost("mcp", "ls", env=env)
    assert "echo" in listed.stdout and "hidden-value" not in listed.stdout
    tools = run_roost("tools", "ls", "--server", "echo", env=env)
    assert tools.returncode == 0 and "sleep" in tools.stdout
    called = run_roost("tools", "call", "add", "--args", '{"a": 20, "b": 22}', env=env)
    assert called.returncode == 0, called.stderr
    assert json.loads(called.stdout)["structuredContent"] == {"result": 42}
    invalid = run_roost("tools", "call", "add", "--args", '{"a": "x", "b": 1}', env=env)
    assert invalid.returncode == 1 and "/a" in invalid.stderr
    removed = run_roost("mcp", "rm", "echo", env=env)
    assert removed.returncode == 0
    missing = run_roost("mcp", "sync", "echo", env=env)
    assert missing.returncode == 1 and "no MCP server" in missing.stderr


async def test_roost_mcp_and_lsp_name_a_server_literally_not_by_a_like_pattern(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """``roost mcp rm %`` (or ``_``) names no server: '%' and '_' are no id prefix, yet the
    id prefix was matched with LIKE unescaped, so it deleted whatever single server there
    was (roost.db.lookup.id_starts_with now); the same for ``roost lsp rm``."""
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "d")}
    added = run_roost("mcp", "add", "echo", "--command", sys.executable, "--arg",
                      str(ECHO_SERVER), env=env)
    assert added.returncode == 0, added.stderr
    added = run_roost("lsp", "add", "pyls", "--command", sys.executable,
                      "--language", "python", env=env)
    assert added.returncode == 0, added.stderr
    for ref in ("%", "_"):
        removed = run_roost("mcp", "rm", ref, env=env)
        assert removed.returncode == 1 and "no MCP server" in removed.stderr, removed.stdout
        removed = run_roost("lsp", "rm", ref, env=env)
        assert removed.returncode == 1 and "no language server" in removed.stderr, removed.stdout
    assert "echo" in run_roost("mcp", "ls", env=env).stdout
    assert "pyls" in run_roost("lsp", "ls", env=env).stdout


async def test_roost_tools_call_with_a_nul_in_its_arguments_is_no_traceback(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """``roost tools call current_time --args '{"timezone": "a\\u0000"}'``: a one-line
    error and exit 1, not a traceback ending in UntranslatableCharacterError."""
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "d")}
    called = run_roost("tools", "call", "current_time", "--args",
                       '{"timezone": "a\\u0000"}', env=env)
    assert called.returncode == 1
    assert "CharacterError" not in called.stderr, called.stderr[-800:]
    assert "/timezone" in called.stderr, called.stderr[-800:]
    assert len(called.stderr.strip().splitlines()) <= 3, called.stderr[-800:]


async def test_roost_tools_call_with_deeply_nested_args_is_no_traceback(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """``--args '{"a": {"a": ...'`` 5000 deep ran json.loads out of stack: a RecursionError
    traceback; now one red line and exit 1."""
    called = run_roost("tools", "call", "current_time", "--args", '{"a": ' * 5000,
                       env=cli_env(pg_server, db_name, tmp_path))
    assert called.returncode == 1, called.stderr[-600:]
    assert "nested too deeply" in called.stderr, called.stderr[-600:]
    assert "Traceback" not in called.stderr and "─╯" not in called.stderr, called.stderr[-600:]


async def test_roost_mcp_add_with_a_malformed_idna_url_is_no_traceback(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """``http://xn--/mcp`` (an A-label with no punycode) raised idna's error unhandled."""
    added = run_roost("mcp", "add", "x", "--url", "http://xn--/mcp",
                      env=cli_env(pg_server, db_name, tmp_path))
    assert added.returncode == 1, added.stderr[-600:]
    assert "not a valid URL" in added.stderr, added.stderr[-600:]
    assert "Traceback" not in added.stderr and "─╯" not in added.stderr, added.stderr[-600:]


TOKEN = "dG9rZW4tU0VDUkVUdmFsdWU="  # base64: ends with '=' padding


async def test_roost_mcp_add_header_with_a_base64_token_never_prints_it(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """``--header "Authorization: Bearer <token>="`` was split at the token's padding and
    the error echoed the "name" (most of the token); now it names the option and the fix."""
    added = run_roost("mcp", "add", "x", "--url", "https://example.com/mcp",
                      "--header", f"Authorization: Bearer {TOKEN}",
                      env=cli_env(pg_server, db_name, tmp_path))
    assert added.returncode == 1, added.stdout
    assert TOKEN[:8] not in added.stderr + added.stdout, added.stderr
    assert "write Authorization=VALUE" in added.stderr, added.stderr


# --- stored and remote text with brackets prints as it is (not rich markup) -----------

MARKUP = "[/]"

HOSTILE_MCP = '''
from mcp.server.mcpserver import MCPServer

server = MCPServer("hostile", version="1.0")


@server.tool(description="[/] closes nothing; [bold]loud[/bold]")
def echo(text: str) -> str:
    return text


@server.tool(name="bad[/]name", description="A name the registry skips.")
def bad(text: str) -> str:
    return text


server.run()
'''


def _clean(out: subprocess.CompletedProcess[str], code: int = 0) -> None:
    """Exit ``code`` and no traceback."""
    assert "Traceback" not in out.stderr, out.stderr[-2000:]
    assert out.returncode == code, (out.returncode, out.stderr[-2000:])


async def test_mcp_ls_prints_a_stdio_argument_with_brackets(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """`roost mcp ls` lists a server whose stdio argument is "[/]" as it is, no traceback."""
    env = cli_env(pg_server, db_name, tmp_path)
    added = await asyncio.to_thread(run_roost, "mcp", "add", "brackets", "--command",
                                    sys.executable, "--arg", str(ECHO_SERVER), "--arg",
                                    MARKUP, env=env)
    _clean(added)
    listed = await asyncio.to_thread(run_roost, "mcp", "ls", env=env)
    _clean(listed)
    assert MARKUP in listed.stdout


async def test_tools_ls_prints_a_hostile_servers_description_as_it_is(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """A tool description "[/] ..." from an MCP server is listed by `roost tools ls`
    literally, never a MarkupError traceback."""
    env = cli_env(pg_server, db_name, tmp_path)
    script = tmp_path / "hostile_mcp.py"
    script.write_text(HOSTILE_MCP)
    added = await asyncio.to_thread(run_roost, "mcp", "add", "hostile", "--command",
                                    sys.executable, "--arg", str(script), env=env)
    _clean(added)
    synced = await asyncio.to_thread(run_roost, "mcp", "sync", "hostile", env=env)
    _clean(synced)
    listed = await asyncio.to_thread(run_roost, "tools", "ls", "--server", "hostile", env=env)
    _clean(listed)
    assert "[/] closes nothing; [bold]loud[/bold]" in listed.stdout
    assert "bad[/]name" in listed.stdout
    found = await asyncio.to_thread(run_roost, "tools", "search", "closes nothing", env=env)
    assert "Traceback" not in found.stderr, found.stderr[-2000:]


async def test_tools_stats_prints_a_tool_name_with_brackets(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """After a call of the MCP tool "bad[/]name", `roost tools stats` lists it literally."""
    env = cli_env(pg_server, db_name, tmp_path)
    script = tmp_path / "hostile_mcp.py"
    script.write_text(HOSTILE_MCP)
    _clean(await asyncio.to_thread(run_roost, "mcp", "add", "hostile", "--command",
                                   sys.executable, "--arg", str(script), env=env))
    _clean(await asyncio.to_thread(run_roost, "mcp", "sync", "hostile", env=env))
    _clean(await asyncio.to_thread(run_roost, "tools", "call", "bad[/]name", "--args",
                                   '{"text": "hi"}', env=env))
    stats = await asyncio.to_thread(run_roost, "tools", "stats", env=env)
    _clean(stats)
    assert "bad[/]name" in stats.stdout


LSP = r'''
import json, sys
inp, out = sys.stdin.buffer, sys.stdout.buffer
def read():
    length = 0
    while True:
        line = inp.readline()
        if not line:
            sys.exit(0)
        if line in (b"\r\n", b"\n"):
            break
        if line.lower().startswith(b"content-length:"):
            length = int(line.split(b":")[1])
    return json.loads(inp.read(length))
def send(msg):
    body = json.dumps(msg).encode()
    out.write(b"Content-Length: %d\r\n\r\n" % len(body) + body)
    out.flush()
while True:
    m = read()
    if m.get("method") == "initialize":
        send({"jsonrpc": "2.0", "id": m["id"], "result": {"capabilities": {},
              "serverInfo": {"name": "[/]evil", "version": "[bold]1"}}})
    elif m.get("method") == "shutdown":
        send({"jsonrpc": "2.0", "id": m["id"], "result": None})
    elif m.get("method") == "exit":
        sys.exit(0)
'''


async def test_lsp_check_prints_server_info_with_brackets(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """`roost lsp check` prints a language server's serverInfo "[/]evil" literally."""
    env = cli_env(pg_server, db_name, tmp_path)
    script = tmp_path / "lsp.py"
    script.write_text(LSP)
    added = await asyncio.to_thread(run_roost, "lsp", "add", "evil", "--command",
                                    sys.executable, "--arg", str(script), "--language",
                                    "python", env=env)
    _clean(added)
    checked = await asyncio.to_thread(run_roost, "lsp", "check", "evil", env=env)
    _clean(checked)
    assert "[/]evil" in checked.stdout


# --- against scripted MCP servers registered through the API (tests.tools.test_hostile_mcp_listings)

# An OSC (set the terminal's title) and a CSI (clear the screen) a hostile server may send.
EVIL = "\x1b]0;owned\x1b\\\x1b[2J"
# A tools/list answered by a JSON-RPC error whose message holds EVIL.
EVIL_LIST_ERROR = {"tools/list": b'{"jsonrpc": "2.0", "id": $ID, "error": {"code": -32000, '
                                 b'"message": "\\u001b]0;owned\\u001b\\\\\\u001b[2Jboom"}}'}


def _scripted_env(pg_server: PgTestServer, db_name: str, tmp_path: Path) -> dict[str, str]:
    """The CLI's environment, the scripted servers' loopback host allowed."""
    return {**cli_env(pg_server, db_name, tmp_path), "ROOST_TOOLS_ALLOWED_HOSTS": "127.0.0.1"}


async def test_tools_ls_lists_every_tool_of_a_server(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    client: httpx.AsyncClient, plans: Plans,
) -> None:
    """`roost tools ls --server S` lists all of a server's tools (a server may hold up to
    1,000): with 600 it printed the first page of 500 and stopped, saying nothing of the
    rest (no paging; `roost mcp ls` the same)."""
    _, alice = await make_user(database)
    sid = await _server(client, alice, plans.url(
        "/many", {"tools": [tool(f"tool{i:04d}") for i in range(600)]}))
    synced = await _sync(client, alice, sid)
    assert synced.status_code == 200 and len(synced.json()["added"]) == 600, synced.text[:300]
    listed = await asyncio.to_thread(run_roost, "tools", "ls", "--server", sid,
                                     env=_scripted_env(pg_server, db_name, tmp_path))
    _clean(listed)
    assert "tool0000" in listed.stdout and "tool0599" in listed.stdout


async def test_tools_call_takes_the_id_its_ambiguity_error_asks_for(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    client: httpx.AsyncClient, plans: Plans,
) -> None:
    """Two users' servers named `same` both offer `ping`: `roost tools call ping --server
    same` answers "...; call it by id", and `roost tools call <id>` does (it took only a
    name: "no tool named '<id>'", so neither tool could be called from the CLI)."""
    _, alice = await make_user(database)
    _, bob = await make_user(database)
    sids = []
    for who in (alice, bob):
        sids.append(await _server(client, who, plans.url("/amb", {"tools": [tool("ping")]}),
                                  name="same"))
        assert (await _sync(client, who, sids[-1])).status_code == 200
    ping_id = (await _tools(client, alice, sids[0]))["ping"]["id"]
    env = _scripted_env(pg_server, db_name, tmp_path)
    ambiguous = await asyncio.to_thread(run_roost, "tools", "call", "ping", "--server", "same",
                                        env=env)
    _clean(ambiguous, 1)
    assert "call it by id" in ambiguous.stderr, ambiguous.stderr
    by_id = await asyncio.to_thread(run_roost, "tools", "call", ping_id, env=env)
    _clean(by_id)
    both = await asyncio.to_thread(run_roost, "tools", "call", ping_id, "--server", "same",
                                   env=env)
    _clean(both, 1)
    assert "without --server" in both.stderr, both.stderr
    # Without --server the error names the command's option, not the API's ?server=; an
    # empty --server names no server (it said "no tool named 'ping'").
    unnamed = await asyncio.to_thread(run_roost, "tools", "call", "ping", env=env)
    _clean(unnamed, 1)
    assert "--server on the command line" in unnamed.stderr, unnamed.stderr
    for blank in ("", "  "):
        empty = await asyncio.to_thread(run_roost, "tools", "call", "ping", "--server", blank,
                                        env=env)
        _clean(empty, 1)
        assert "--server" in empty.stderr and "no tool named" not in empty.stderr, empty.stderr


async def test_mcp_sync_prints_a_skipped_tool_name_without_escape_sequences(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    client: httpx.AsyncClient, plans: Plans,
) -> None:
    """A hostile server lists a tool named with terminal escape sequences twice: `roost mcp
    sync` printed each `skipped` name raw (retitling the window, clearing the screen); it
    is shown escaped, as the tables show stored text (`printable`)."""
    _, alice = await make_user(database)
    sid = await _server(client, alice, plans.url("/esc", {"tools": [tool(EVIL), tool(EVIL)]}))
    synced = await asyncio.to_thread(run_roost, "mcp", "sync", sid,
                                     env=_scripted_env(pg_server, db_name, tmp_path))
    _clean(synced)
    assert "1 skipped" in synced.stdout and "\x1b" not in synced.stdout, repr(synced.stdout)
    assert "skipped \\x1b]0;owned" in synced.stdout, repr(synced.stdout)


@pytest.mark.parametrize(("command", "stream"), [("check", "stdout"), ("sync", "stderr")])
async def test_a_servers_error_is_printed_without_escape_sequences(
    pg_server: PgTestServer, db_name: str, database: Database, tmp_path: Path,
    client: httpx.AsyncClient, plans: Plans, command: str, stream: str,
) -> None:
    """A hostile server answers tools/list with an error message holding escape sequences:
    `roost mcp check` printed the recorded health error raw, and `roost mcp sync` (a 502
    whose detail quotes the server's message) raw on stderr through `fail`, which every
    command's failure goes through."""
    _, alice = await make_user(database)
    sid = await _server(client, alice, plans.url(f"/esc-{command}",
                                                 {"init": INIT, "raw": EVIL_LIST_ERROR}))
    out = await asyncio.to_thread(run_roost, "mcp", command, sid,
                                  env=_scripted_env(pg_server, db_name, tmp_path))
    _clean(out, 1)
    printed = getattr(out, stream)
    assert "boom" in printed and "\x1b" not in printed, repr(printed)
