"""Hostile language servers: an error answer whose ``code`` is not LSP's integer (a NUL, a
lone surrogate, 200,000 characters) and a diagnostic whose position is a boolean."""

from __future__ import annotations

import sys
import textwrap
from pathlib import Path

import httpx
import pytest

from roost.config import Settings
from roost.db.engine import Database
from tests.support.identity import make_user

pytestmark = pytest.mark.asyncio(loop_scope="session")

SERVERS = "/api/v1/lsp-servers"
DIAGNOSE = "/api/v1/tools/by-name/lsp_diagnostics/call"

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
        if MODE in CODES:
            send({"jsonrpc": "2.0", "id": m["id"], "error": {"code": CODES[MODE], "message": "no"}})
            continue
        send({"jsonrpc": "2.0", "id": m["id"], "result": {"capabilities": {}}})
    elif meth == "shutdown":
        send({"jsonrpc": "2.0", "id": m["id"], "result": None})
    elif meth == "exit":
        sys.exit(0)
    elif meth == "textDocument/didOpen":
        uri = m["params"]["textDocument"]["uri"]
        d = {"range": {"start": {"line": 0, "character": 0}, "end": {"line": 0, "character": 1}},
             "message": "m", "severity": 1}
        if MODE == "line_bool":
            d["range"]["start"] = {"line": True, "character": False}
        send({"jsonrpc": "2.0", "method": "textDocument/publishDiagnostics",
              "params": {"uri": uri, "diagnostics": [d]}})
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


@pytest.fixture
def workspace(test_settings: Settings) -> Path:
    root = test_settings.data_dir / "workspace"
    root.mkdir(parents=True)
    (root / "a.py").write_text("x = 1\n")
    return root


@pytest.mark.parametrize("mode", ["code_nul", "code_sur", "code_big"])
async def test_check_of_server_whose_error_code_is_hostile(
    client: httpx.AsyncClient, admin_headers: dict[str, str], tmp_path: Path, mode: str,
) -> None:
    """A server answering ``initialize`` with such an error ``code``: the check records
    the failure (escaped, cut as the server's message is) and answers 502.  The code went
    into the detail raw: a NUL or a surrogate made the recording fail (400, nothing
    recorded), a long code was stored whole in health_error (200 KB)."""
    sid = await register(client, admin_headers, tmp_path, mode)
    checked = await client.post(f"{SERVERS}/{sid}/check", headers=admin_headers)
    assert checked.status_code == 502, checked.text[:500]
    row = (await client.get(f"{SERVERS}/{sid}", headers=admin_headers)).json()
    assert row["health_status"] == "unhealthy"
    assert len(row["health_error"]) < 5000, len(row["health_error"])


@pytest.mark.parametrize("mode", ["code_nul", "code_sur", "code_big"])
async def test_diagnostics_of_server_whose_error_code_is_hostile(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    workspace: Path, tmp_path: Path, mode: str,
) -> None:
    """The same error ``code`` during an ``lsp_diagnostics`` call: a 502 with an escaped,
    bounded detail (it was a 400, the tool run could not be recorded, or a 200 KB
    problem detail)."""
    await register(client, admin_headers, tmp_path, mode)
    _, alice = await make_user(database)
    called = await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": "a.py"}})
    assert called.status_code == 502, called.text[:500]
    assert len(called.json()["detail"]) < 5000


async def test_diagnostics_line_bool(
    client: httpx.AsyncClient, admin_headers: dict[str, str], database: Database,
    workspace: Path, tmp_path: Path,
) -> None:
    """A diagnostic whose start position is ``{"line": true, "character": false}`` (not
    LSP's uinteger) is dropped as malformed like any other non-integer position (it was
    answered with ``range.start.line`` ``true`` and ``line`` 2: a bool is an int)."""
    await register(client, admin_headers, tmp_path, "line_bool")
    _, alice = await make_user(database)
    called = await client.post(DIAGNOSE, headers=alice, json={"arguments": {"path": "a.py"}})
    assert called.status_code == 200, called.text[:500]
    diags = called.json()["output"]["diagnostics"]
    assert all(type(d["range"]["start"]["line"]) is int for d in diags), diags
