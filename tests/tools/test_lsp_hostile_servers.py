"""Language servers that answer badly (a NUL in their answers, a severity that is an
object) and odd workspace entries (a directory named like a source file): their health
checks are recorded and ``lsp_diagnostics`` answers 200, 422 or 502, never a 400 or a 500.
The server is a small fake one (a Python script) whose answers its argument bends."""

from __future__ import annotations

import asyncio
import os
import sys
import textwrap
from pathlib import Path

import httpx
import pytest
from sqlalchemy import text

from roost.config import Settings
from roost.db.engine import Database
from roost.inputs import json_size
from roost.tools.builtins import BuiltinToolError
from roost.tools.lspservers import _read_text
from tests.support.cli import run_roost
from tests.support.identity import make_user
from tests.support.pg import PgTestServer
from tests.tools.conftest import MAX_OUTPUT_BYTES

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVERS = "/api/v1/lsp-servers"
DIAGNOSE = "/api/v1/tools/by-name/lsp_diagnostics/call"

# A minimal language server; its first argument says how to bend its answers.
FAKE = """
import json, sys
def read():
    headers = {}
    while True:
        line = sys.stdin.buffer.readline()
        if not line:
            sys.exit(0)
        if line in (b"\\r\\n", b"\\n"):
            break
        k, _, v = line.decode().partition(":")
        headers[k.strip().lower()] = v.strip()
    return json.loads(sys.stdin.buffer.read(int(headers["content-length"])))
def send(msg):
    body = json.dumps(msg).encode()
    sys.stdout.buffer.write(b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
    sys.stdout.buffer.flush()
MODE = sys.argv[1]
CODES = {"code_nul": "x\\u0000y", "code_sur": "\\ud800", "code_big": "c" * 200000}
while True:
    m = read()
    meth = m.get("method")
    if meth == "initialize":
        if MODE in CODES:  # an error code that is not LSP's integer
            send({"jsonrpc": "2.0", "id": m["id"], "error": {"code": CODES[MODE], "message": "no"}})
            continue
        if MODE == "init_error_nul":
            send({"jsonrpc": "2.0", "id": m["id"], "error": {"code": -1, "message": "bad\\u0000thing"}})
            continue
        if MODE == "deep":  # valid JSON, nested past what a recursive parser takes
            body = (b'{"jsonrpc":"2.0","id":%d,"result":{"capabilities":' % m["id"]
                    + b"[" * 100000 + b"]" * 100000 + b"}}")
            sys.stdout.buffer.write(b"Content-Length: %d\\r\\n\\r\\n" % len(body) + body)
            sys.stdout.buffer.flush()
            continue
        caps = {"textDocumentSync": 1}
        info = {"name": "fake", "version": "1"}
        if MODE == "caps_nul":
            caps = {"x\\u0000y": "a\\u0000b", "lone": "\\ud800"}
        if MODE == "info_nul":
            info = {"name": "fa\\u0000ke"}
        if MODE == "info_esc":
            info = {"name": "evil\\u001b[2J\\u001b]0;pwned\\u0007", "version": "\\u202e1"}
        send({"jsonrpc": "2.0", "id": m["id"], "result": {"capabilities": caps, "serverInfo": info}})
    elif meth == "shutdown":
        send({"jsonrpc": "2.0", "id": m["id"], "result": None})
    elif meth == "exit":
        sys.exit(0)
    elif meth == "textDocument/didOpen":
        uri = m["params"]["textDocument"]["uri"]
        d = {"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}},
             "message": "m", "severity": 1}
        if MODE == "sev_dict":
            d["severity"] = {"a": 1}
        if MODE == "sev_list":
            d["severity"] = [1]
        if MODE == "msg_nul":
            d.update(message="a\\u0000b", source="s\\u0000", code="c\\u0000")
        if MODE == "line_bool":
            d["range"]["start"] = {"line": True, "character": False}
        many = [dict(d, message="m" * 2000) for _ in range(300)] if MODE == "big" else [d]
        send({"jsonrpc": "2.0", "method": "textDocument/publishDiagnostics",
              "params": {"uri": uri, "diagnostics": many}})
"""


async def register(client: httpx.AsyncClient, admin: dict[str, str], tmp_path: Path,
                   mode: str) -> str:
    script = tmp_path / "fake_lsp.py"
    script.write_text(textwrap.dedent(FAKE))
    created = await client.post(SERVERS, headers=admin, json={
        "name": "fake", "language": "python", "command": sys.executable,
        "args": [str(script), mode], "file_patterns": ["*.py"], "is_global": True})
    assert created.status_code == 201, created.text
    return str(created.json()["id"])


async def check_audits(database: Database, server_id: str) -> list[tuple[bool, str | None]]:
    async with database.transaction() as session:
        rows = await session.execute(text(
            "SELECT success, error_message FROM audit_logs WHERE action = 'lsp_server.check' "
            "AND resource_id = :id ORDER BY seq"), {"id": server_id})
        return [(r.success, r.error_message) for r in rows]


@pytest.fixture
def workspace(test_settings: Settings) -> Path:
    root = test_settings.data_dir / "workspace"
    root.mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    return root


@pytest.mark.parametrize("mode", ["caps_nul", "info_nul"])
async def test_a_check_of_a_server_answering_with_a_nul_records_it_escaped(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    tmp_path: Path, mode: str,
) -> None:
    """A NUL (or a lone surrogate) in the server's capabilities or serverInfo is escaped
    as PostgreSQL can store it: the check is healthy and recorded, not a 400."""
    sid = await register(client, admin_headers, tmp_path, mode)
    checked = await client.post(f"{SERVERS}/{sid}/check", headers=admin_headers)
    assert checked.status_code == 200, checked.text
    row = (await client.get(f"{SERVERS}/{sid}", headers=admin_headers)).json()
    assert row["health_status"] == "healthy" and row["last_checked_at"] is not None
    if mode == "caps_nul":
        assert row["capabilities"] == {"x\\x00y": "a\\x00b", "lone": "\\ud800"}
    else:
        assert row["server_info"] == {"name": "fa\\x00ke"}
    assert await check_audits(database, sid) == [(True, None)]


async def test_a_check_failing_with_a_nul_in_the_error_is_recorded_then_a_502(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    tmp_path: Path,
) -> None:
    sid = await register(client, admin_headers, tmp_path, "init_error_nul")
    checked = await client.post(f"{SERVERS}/{sid}/check", headers=admin_headers)
    assert checked.status_code == 502, checked.text
    assert "bad\\x00thing" in checked.json()["detail"]
    row = (await client.get(f"{SERVERS}/{sid}", headers=admin_headers)).json()
    assert row["health_status"] == "unhealthy" and "bad\\x00thing" in row["health_error"]
    [(success, error)] = await check_audits(database, sid)
    assert not success and error is not None and "bad\\x00thing" in error


async def test_a_check_of_a_server_answering_json_nested_too_deep_is_a_502_at_once(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path,
) -> None:
    """An answer nested deeper than the JSON parser takes (a RecursionError, not a
    ValueError) breaks the protocol: 502 lsp-error, not the reader dying silently and the
    check waiting out its deadline for a 504."""
    sid = await register(client, admin_headers, tmp_path, "deep")
    checked = await client.post(f"{SERVERS}/{sid}/check", headers=admin_headers)
    assert checked.status_code == 502, checked.text
    assert checked.json()["type"].endswith("/lsp-error"), checked.text
    assert "broke the protocol" in checked.json()["detail"]


async def diagnose(client: httpx.AsyncClient, admin: dict[str, str], database: Database,
                   tmp_path: Path, mode: str, path: str) -> httpx.Response:
    """A user's ``lsp_diagnostics`` call of ``path`` through a fake server in ``mode``."""
    await register(client, admin, tmp_path, mode)
    _, alice = await make_user(database)
    return await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": path}})


@pytest.mark.parametrize("mode", ["sev_dict", "sev_list"])
async def test_lsp_diagnostics_with_a_severity_not_a_number_is_an_error(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    workspace: Path, tmp_path: Path, mode: str,
) -> None:
    """A severity that is an object or a list (unhashable) is shaped as "error", not a 500."""
    called = await diagnose(client, admin_headers, database, tmp_path, mode, "a.py")
    assert called.status_code == 200, called.text
    assert [d["severity"] for d in called.json()["output"]["diagnostics"]] == ["error"]


async def test_lsp_diagnostics_with_a_nul_in_a_diagnostic_is_recorded_escaped(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    workspace: Path, tmp_path: Path,
) -> None:
    called = await diagnose(client, admin_headers, database, tmp_path, "msg_nul", "a.py")
    assert called.status_code == 200, called.text
    [found] = called.json()["output"]["diagnostics"]
    assert (found["message"], found["source"], found["code"]) == ("a\\x00b", "s\\x00", "c\\x00")


async def test_lsp_diagnostics_failing_with_a_nul_in_the_error_is_a_502(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    workspace: Path, tmp_path: Path,
) -> None:
    called = await diagnose(client, admin_headers, database, tmp_path, "init_error_nul", "a.py")
    assert called.status_code == 502, called.text
    assert "bad\\x00thing" in called.json()["detail"]


async def test_lsp_diagnostics_keep_within_the_largest_tool_result(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    workspace: Path, tmp_path: Path,
) -> None:
    """300 diagnostics of 2,000 characters: the result keeps the first that fit in
    ROOST_TOOLS_MAX_OUTPUT_BYTES, ``truncated`` and the whole ``count`` (it was returned
    whole, ~450 KB, past the limit every tool's result keeps)."""
    called = await diagnose(client, admin_headers, database, tmp_path, "big", "a.py")
    assert called.status_code == 200, called.text
    output = called.json()["output"]
    assert json_size(output) <= MAX_OUTPUT_BYTES, json_size(output)
    assert 0 < len(output["diagnostics"]) < 300, len(output["diagnostics"])
    assert (output["count"], output["truncated"]) == (300, True)


async def test_lsp_check_prints_a_server_s_name_escaped(
    pg_server: PgTestServer, db_name: str, tmp_path: Path,
) -> None:
    """`roost lsp check` prints the server's serverInfo with its control and bidirectional
    characters escaped (they cleared the screen, retitled the terminal, reversed text)."""
    script = tmp_path / "fake_lsp.py"
    script.write_text(textwrap.dedent(FAKE))
    env = {"ROOST_DATABASE_URL": pg_server.libpq_url(db_name),
           "ROOST_DATA_DIR": str(tmp_path / "d"), "ROOST_TOOLS_CALL_TIMEOUT_S": "20"}
    added = await asyncio.to_thread(run_roost, "lsp", "add", "evil", "--command", sys.executable,
                                    "--language", "python", "--arg", str(script),
                                    "--arg", "info_esc", env=env)
    assert added.returncode == 0, added.stderr
    checked = await asyncio.to_thread(run_roost, "lsp", "check", "evil", env=env)
    assert checked.returncode == 0, checked.stderr
    assert "\x1b" not in checked.stdout and "\u202e" not in checked.stdout, checked.stdout
    assert "evil\\x1b[2J" in checked.stdout and "\\u202e1" in checked.stdout, checked.stdout


async def test_lsp_diagnostics_on_a_directory_is_a_422(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    workspace: Path, tmp_path: Path,
) -> None:
    """A workspace directory whose name matches ``*.py`` is a 422 "not a file", not a 500."""
    (workspace / "pkg.py").mkdir()
    called = await diagnose(client, admin_headers, database, tmp_path, "ok", "pkg.py")
    assert called.status_code == 422, called.text
    assert "is not a file" in called.json()["detail"]


async def test_reading_a_directory_leaves_no_descriptor_open(tmp_path: Path) -> None:
    directory = tmp_path / "pkg.py"
    directory.mkdir()

    def descriptors_on_the_directory() -> int:
        # Count only this directory's descriptors: the process's total moves with the
        # other tests' connections closing in the background on a loaded machine.
        count = 0
        for fd in os.listdir("/proc/self/fd"):
            try:
                if os.readlink(f"/proc/self/fd/{fd}") == str(directory):
                    count += 1
            except OSError:
                continue
        return count

    for _ in range(20):
        with pytest.raises(BuiltinToolError, match="is not a file"):
            _read_text(directory, "pkg.py")
    assert descriptors_on_the_directory() == 0
